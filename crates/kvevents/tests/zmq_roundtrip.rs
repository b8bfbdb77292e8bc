//! A publisher and a subscriber over real ZMQ TCP sockets on 127.0.0.1, in
//! both directions of who binds.

use kvroute_core::{BlockHash, KvEvent};
use kvroute_kvevents::{Endpoint, Publisher, SeqStatus, SeqTracker, Subscriber};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn exchange(sub_ep: Endpoint, pub_ep: Endpoint) {
    let mut sub = Subscriber::open(sub_ep, "").await.unwrap();
    let mut publ = Publisher::open(pub_ep, "kv-events").await.unwrap();
    let ev = KvEvent::BlockRemoved {
        block_hashes: vec![BlockHash(1), BlockHash(u64::MAX)],
    };
    // PUB/SUB drops messages until the subscription has propagated: keep
    // sending until one arrives, then check the sequence continues in order.
    let first = loop {
        publ.send(1.5, vec![ev.clone()]).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            break r.unwrap();
        }
    };
    assert_eq!(first.topic, b"kv-events");
    assert_eq!(first.batch.events, vec![ev.clone()]);
    let mut seq = SeqTracker::new();
    assert_eq!(seq.observe(first.seq), SeqStatus::First);
    for _ in 0..5 {
        publ.send(2.0, vec![KvEvent::AllBlocksCleared])
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap();
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
    let a2 = addr.clone();
    // The publisher must exist before the subscriber connects.
    let mut publ = Publisher::open(Endpoint::Bind(addr), "t").await.unwrap();
    let mut sub = Subscriber::open(Endpoint::Connect(a2), "").await.unwrap();
    let got = loop {
        publ.send(0.0, vec![KvEvent::AllBlocksCleared])
            .await
            .unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            break r.unwrap();
        }
    };
    assert_eq!(got.batch.events, vec![KvEvent::AllBlocksCleared]);
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
