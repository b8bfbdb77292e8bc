//! A publisher and a subscriber over real TCP sockets on 127.0.0.1, in both
//! directions of who binds; hostile peers (oversized frames, too many
//! frames, silence, refused addresses) end their own connection and nothing
//! else; a second publisher is told apart; the replay socket answers.

use kvroute_core::{BlockHash, KvEvent};
use kvroute_kvevents::{
    replay, AddrRange, Endpoint, EventBatch, Incoming, Limits, Publisher, Refusal, SeqStatus,
    SeqTracker, SubscribeOptions, Subscriber,
};
use std::io::Write;
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn next(sub: &mut Subscriber) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("the subscriber hears something within 5 s")
        .expect("the subscriber's task runs")
}

/// Send until the subscription has propagated and a batch arrives.
async fn first_batch(publ: &mut Publisher, sub: &mut Subscriber, ev: &KvEvent) -> i64 {
    loop {
        publ.send(1.5, vec![ev.clone()]);
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(100), sub.recv_batch()).await
        {
            assert_eq!(r.batch.events, vec![ev.clone()]);
            return r.seq;
        }
    }
}

async fn exchange(sub_ep: Endpoint, pub_ep: Endpoint) {
    let mut sub = Subscriber::open(sub_ep, SubscribeOptions::default())
        .await
        .unwrap();
    let mut publ = Publisher::open(pub_ep, "kv-events").await.unwrap();
    let ev = KvEvent::BlockRemoved {
        block_hashes: vec![BlockHash(1), BlockHash(u64::MAX)],
    };
    let first = first_batch(&mut publ, &mut sub, &ev).await;
    let mut seq = SeqTracker::new();
    assert_eq!(seq.observe(first), SeqStatus::First);
    for _ in 0..5 {
        publ.send(2.0, vec![KvEvent::AllBlocksCleared]);
        let r = tokio::time::timeout(Duration::from_secs(5), sub.recv_batch())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.topic, b"kv-events");
        assert_eq!(seq.observe(r.seq), SeqStatus::InOrder);
    }
}

#[tokio::test]
async fn subscriber_binds_publisher_connects() {
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    exchange(Endpoint::Bind(addr.clone()), Endpoint::Connect(addr)).await;
}

#[tokio::test]
async fn publisher_binds_subscriber_connects() {
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    exchange(Endpoint::Connect(addr.clone()), Endpoint::Bind(addr)).await;
}

#[tokio::test]
async fn a_connecting_publisher_waits_for_and_survives_subscriber_restarts() {
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    // The publisher starts first: nobody listens yet.
    let mut publ = Publisher::open(Endpoint::Connect(addr.clone()), "t")
        .await
        .unwrap();
    publ.send(0.0, vec![]);
    let ev = KvEvent::AllBlocksCleared;
    for round in 0..2 {
        let mut sub = Subscriber::open(Endpoint::Bind(addr.clone()), SubscribeOptions::default())
            .await
            .unwrap();
        let seq = first_batch(&mut publ, &mut sub, &ev).await;
        assert!(seq > round, "sequence numbers carry on: {seq}");
        sub.close().await; // the subscriber goes away; the publisher redials
    }
}

/// A peer speaking raw bytes.
fn raw(port: u16, bytes: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    s
}

fn greeting() -> Vec<u8> {
    let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    let mut mech = b"NULL".to_vec();
    mech.resize(20, 0);
    g.extend(mech);
    g.extend([0u8; 32]);
    g
}

fn ready_pub() -> Vec<u8> {
    let mut body = vec![5];
    body.extend(b"READY");
    body.push(11);
    body.extend(b"Socket-Type");
    body.extend(3u32.to_be_bytes());
    body.extend(b"PUB");
    let mut f = vec![0x04, body.len() as u8];
    f.extend(body);
    f
}

#[tokio::test]
async fn hostile_peers_lose_their_connection_and_nothing_else() {
    let port = free_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let opts = SubscribeOptions {
        limits: Limits {
            max_frame_bytes: 1 << 20,
            max_frames: 4,
            handshake_timeout: Duration::from_millis(300),
            max_connections: 8,
        },
        ..SubscribeOptions::default()
    };
    let mut sub = Subscriber::open(Endpoint::Bind(addr.clone()), opts)
        .await
        .unwrap();

    // The reported crash: a greeting, then a frame announcing 2^45 bytes.
    let mut crash = greeting();
    crash.push(0x06);
    crash.extend((1u64 << 45).to_be_bytes());
    let _a = raw(port, &crash);
    // A full handshake, then a data frame announcing 2^40 bytes.
    let mut big = greeting();
    big.extend(ready_pub());
    big.push(0x02);
    big.extend((1u64 << 40).to_be_bytes());
    let _b = raw(port, &big);
    // A message of more frames than allowed.
    let mut many = greeting();
    many.extend(ready_pub());
    for _ in 0..10 {
        many.extend([0x01, 1, b'x']);
    }
    let _c = raw(port, &many);
    // A peer that never finishes its greeting.
    let _d = raw(port, &[0xff]);
    // Not ZMTP at all.
    let _e = raw(port, b"GET / HTTP/1.1\r\n\r\n");

    let mut reasons = Vec::new();
    while reasons.len() < 5 {
        if let Incoming::Disconnected(_, why) = next(&mut sub).await {
            reasons.push(why);
        }
    }
    let all = reasons.join(" | ");
    assert!(all.contains("exceeds the limit"), "{all}");
    assert!(all.contains("more than 4 frames"), "{all}");
    assert!(all.contains("no handshake within"), "{all}");
    assert!(all.contains("not a ZMTP 3 greeting"), "{all}");
    assert!(
        sub.stats()
            .violations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5
    );

    // A real publisher still gets through.
    let mut publ = Publisher::open(Endpoint::Connect(addr), "t").await.unwrap();
    first_batch(&mut publ, &mut sub, &KvEvent::AllBlocksCleared).await;
}

#[tokio::test]
async fn connections_are_numbered_refused_and_reported_closed() {
    let port = free_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    // Only 10.0.0.0/8 may connect: 127.0.0.1 is refused at accept.
    let opts = SubscribeOptions {
        allow: vec!["10.0.0.0/8".parse::<AddrRange>().unwrap()],
        ..SubscribeOptions::default()
    };
    let mut sub = Subscriber::open(Endpoint::Bind(addr.clone()), opts)
        .await
        .unwrap();
    let _p = Publisher::open(Endpoint::Connect(addr), "t").await.unwrap();
    match next(&mut sub).await {
        Incoming::Refused(a, Refusal::NotAllowed) => assert!(a.ip().is_loopback()),
        other => panic!("{other:?}"),
    }

    // Two publishers on one endpoint: each batch says whose it is.
    let port = free_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let mut sub = Subscriber::open(Endpoint::Bind(addr.clone()), SubscribeOptions::default())
        .await
        .unwrap();
    let mut p1 = Publisher::open(Endpoint::Connect(addr.clone()), "t")
        .await
        .unwrap();
    let mut p2 = Publisher::open(Endpoint::Connect(addr), "t").await.unwrap();
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "seen {seen:?}");
        p1.send(1.0, vec![]);
        p2.send(2.0, vec![]);
        while let Ok(Some(i)) = tokio::time::timeout(Duration::from_millis(20), sub.recv()).await {
            if let Incoming::Batch(peer, r) = i {
                seen.insert(peer.connection, r.batch.ts);
            }
        }
    }
    // Two connections, two numbers, each with its own publisher's batches.
    let mut ts: Vec<f64> = seen.values().copied().collect();
    ts.sort_by(f64::total_cmp);
    assert_eq!(ts, vec![1.0, 2.0]);
    let second = *seen.iter().find(|(_, t)| **t == 2.0).unwrap().0;
    drop(p2);
    loop {
        if let Incoming::Disconnected(peer, _) = next(&mut sub).await {
            assert_eq!(peer.connection, second);
            break;
        }
    }
}

#[tokio::test]
async fn the_replay_socket_answers_from_a_sequence_number() {
    let mut publ = Publisher::open(Endpoint::Bind("tcp://127.0.0.1:0".into()), "kv-events")
        .await
        .unwrap()
        .with_replay("tcp://127.0.0.1:0", 4)
        .await
        .unwrap();
    for i in 0..6u64 {
        publ.send(
            i as f64,
            vec![KvEvent::BlockRemoved {
                block_hashes: vec![BlockHash(i)],
            }],
        );
    }
    let addr = format!("tcp://{}", publ.replay_addr().unwrap());
    // The buffer keeps the last 4 (2..6); ask from 3, keep 3..5.
    let got = replay(&addr, 3, 5, Duration::from_secs(5)).await.unwrap();
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(
        got[0].1,
        EventBatch {
            ts: 3.0,
            events: vec![KvEvent::BlockRemoved {
                block_hashes: vec![BlockHash(3)]
            }],
            dp_rank: None,
            skipped: 0,
        }
    );
    // Nobody listening: a clear error within the timeout.
    let dead = format!("tcp://127.0.0.1:{}", free_port());
    assert!(replay(&dead, 0, 1, Duration::from_millis(500))
        .await
        .is_err());
}

#[test]
fn endpoint_syntax() {
    assert_eq!(
        "bind:tcp://127.0.0.1:1".parse::<Endpoint>().unwrap(),
        Endpoint::Bind("tcp://127.0.0.1:1".into())
    );
    assert!("tcp://127.0.0.1:1".parse::<Endpoint>().is_err());
    assert!("bind:ipc:///x".parse::<Endpoint>().is_err());
}
