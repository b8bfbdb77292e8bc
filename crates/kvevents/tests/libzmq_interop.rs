//! The ZMTP implementation against real libzmq (pyzmq, the library vLLM
//! publishes with): PUB→SUB and SUB←PUB in both bind directions, vLLM's
//! replay ROUTER answering our DEALER, and a libzmq DEALER asking our replay
//! socket.
//!
//! Needs a Python with pyzmq: `$KVROUTE_PYZMQ_PYTHON`, else `python3`.
//! `scripts/test.sh` installs one; with `CI` set a missing pyzmq fails the
//! test instead of skipping it.

use kvroute_core::{BlockHash, KvEvent};
use kvroute_kvevents::{
    decode_payload, encode_payload, replay, Endpoint, EventBatch, Publisher, SubscribeOptions,
    Subscriber,
};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/zmq_peer.py");

fn python() -> Option<String> {
    let candidates: Vec<String> = std::env::var("KVROUTE_PYZMQ_PYTHON")
        .into_iter()
        .chain(["python3".to_string()])
        .collect();
    for p in candidates {
        let ok = std::process::Command::new(&p)
            .args(["-c", "import zmq"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs a Python with pyzmq (set KVROUTE_PYZMQ_PYTHON; scripts/test.sh installs one)"
    );
    eprintln!("skipped: no Python with pyzmq (set KVROUTE_PYZMQ_PYTHON)");
    None
}

struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    async fn start(py: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(py)
            .arg(SCRIPT)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        if !matches!(args[0], "dealer") {
            assert_eq!(Peer::line_of(&mut lines).await.as_deref(), Some("ready"));
        }
        Peer { child, lines }
    }

    async fn line_of(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the python peer answers within 20 s")
            .unwrap()
    }

    async fn line(&mut self) -> Option<String> {
        Peer::line_of(&mut self.lines).await
    }

    /// A printed message: its frames.
    async fn frames(&mut self) -> Vec<Vec<u8>> {
        let l = self.line().await.expect("a message line");
        let hex: Vec<String> = serde_json::from_str(&l).unwrap();
        hex.iter().map(|h| unhex(h)).collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("tcp://127.0.0.1:{port}")
}

fn batch() -> EventBatch {
    EventBatch {
        ts: 1.25,
        events: vec![
            KvEvent::BlockStored {
                block_hashes: vec![BlockHash(11), BlockHash(u64::MAX)],
                parent_block_hash: None,
                token_ids: (0..64).collect(),
                block_size: 32,
            },
            KvEvent::BlockRemoved {
                block_hashes: vec![BlockHash(11)],
            },
        ],
        dp_rank: Some(0),
        skipped: 0,
    }
}

async fn libzmq_publisher_to_our_subscriber(py: &str, py_how: &str) {
    let addr = free_addr();
    let (sub_ep, wait_for_py) = if py_how == "connect" {
        (Endpoint::Bind(addr.clone()), false)
    } else {
        (Endpoint::Connect(addr.clone()), true)
    };
    let payload = hex(&encode_payload(&batch()));
    let mut sub;
    let _py;
    if wait_for_py {
        _py = Peer::start(py, &["pub", py_how, &addr, "kv-events", &payload, "400"]).await;
        sub = Subscriber::open(sub_ep, SubscribeOptions::default())
            .await
            .unwrap();
    } else {
        sub = Subscriber::open(sub_ep, SubscribeOptions::default())
            .await
            .unwrap();
        _py = Peer::start(py, &["pub", py_how, &addr, "kv-events", &payload, "400"]).await;
    }
    let mut last = None;
    for _ in 0..5 {
        let r = tokio::time::timeout(Duration::from_secs(10), sub.recv_batch())
            .await
            .expect("batches from libzmq")
            .unwrap();
        assert_eq!(r.topic, b"kv-events");
        assert_eq!(r.batch, batch());
        if let Some(l) = last {
            assert_eq!(r.seq, l + 1, "in order");
        }
        last = Some(r.seq);
    }
}

#[tokio::test]
async fn libzmq_pub_connects_to_our_bound_sub() {
    let Some(py) = python() else { return };
    libzmq_publisher_to_our_subscriber(&py, "connect").await;
}

#[tokio::test]
async fn our_sub_connects_to_a_bound_libzmq_pub() {
    let Some(py) = python() else { return };
    libzmq_publisher_to_our_subscriber(&py, "bind").await;
}

async fn our_publisher_to_libzmq_subscriber(py: &str, py_how: &str) {
    let addr = free_addr();
    let our_ep = if py_how == "bind" {
        Endpoint::Connect(addr.clone())
    } else {
        Endpoint::Bind(addr.clone())
    };
    let (mut publ, mut peer) = if py_how == "bind" {
        let peer = Peer::start(py, &["sub", py_how, &addr, "kv", "3"]).await;
        (Publisher::open(our_ep, "kv-events").await.unwrap(), peer)
    } else {
        let publ = Publisher::open(our_ep, "kv-events").await.unwrap();
        (
            publ,
            Peer::start(py, &["sub", py_how, &addr, "kv", "3"]).await,
        )
    };
    // Send until the subscription arrives, then three more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !publ.has_subscriber() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "libzmq never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = batch();
    for _ in 0..3 {
        publ.send(b.ts, b.events.clone());
    }
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let frames = peer.frames().await;
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], b"kv-events");
        seqs.push(i64::from_be_bytes(frames[1].clone().try_into().unwrap()));
        let got = decode_payload(&frames[2]).unwrap();
        assert_eq!(got.events, b.events);
    }
    assert_eq!(seqs, vec![0, 1, 2]);
}

#[tokio::test]
async fn our_pub_connects_to_a_bound_libzmq_sub() {
    let Some(py) = python() else { return };
    our_publisher_to_libzmq_subscriber(&py, "bind").await;
}

#[tokio::test]
async fn libzmq_sub_connects_to_our_bound_pub() {
    let Some(py) = python() else { return };
    our_publisher_to_libzmq_subscriber(&py, "connect").await;
}

#[tokio::test]
async fn vllms_replay_router_answers_our_dealer() {
    let Some(py) = python() else { return };
    let addr = free_addr();
    let payload = hex(&encode_payload(&batch()));
    let _peer = Peer::start(&py, &["router", &addr, "kv-events", &payload, "10"]).await;
    let got = replay(&addr, 4, 7, Duration::from_secs(10)).await.unwrap();
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![4, 5, 6]);
    assert!(got.iter().all(|(_, b)| *b == batch()));
}

#[tokio::test]
async fn a_libzmq_dealer_replays_from_our_publisher() {
    let Some(py) = python() else { return };
    let mut publ = Publisher::open(Endpoint::Bind("tcp://127.0.0.1:0".into()), "kv-events")
        .await
        .unwrap()
        .with_replay("tcp://127.0.0.1:0", 100)
        .await
        .unwrap();
    let b = batch();
    for _ in 0..5 {
        publ.send(b.ts, b.events.clone());
    }
    let addr = format!("tcp://{}", publ.replay_addr().unwrap());
    let mut peer = Peer::start(&py, &["dealer", &addr, "2"]).await;
    for seq in 2..5i64 {
        let f = peer.frames().await;
        assert_eq!(f.len(), 4, "delimiter, topic, seq, payload");
        assert!(f[0].is_empty());
        assert_eq!(f[1], b"kv-events");
        assert_eq!(f[2], seq.to_be_bytes());
        assert_eq!(decode_payload(&f[3]).unwrap().events, b.events);
    }
    let end = peer.frames().await;
    assert_eq!(end[2], (-1i64).to_be_bytes());
}
