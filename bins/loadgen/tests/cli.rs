//! The `loadgen` command end to end: bad input fails before any load with a
//! clear message; a run against an emulated engine writes its outputs; and
//! Ctrl-C (SIGINT) still writes what was measured.

use kvroute_emulator::{spawn, EmulatorConfig, Running};
use kvroute_sim::Profile;
use kvroute_workload::{embedded_qwen3_template, embedded_qwen3_tokenizer};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn loadgen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    c.env("RUST_LOG", "info").arg("--no-progress");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn engine(speedup: f64) -> Running {
    let mut c = EmulatorConfig::new(
        Profile::load("vllm-cpu-tiny").unwrap(),
        Arc::new(embedded_qwen3_tokenizer().unwrap()),
    );
    c.speedup = speedup;
    c.chat_template = Some(Arc::new(embedded_qwen3_template().unwrap()));
    spawn(c).await.unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvroute-loadgen-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn bad_input_fails_before_any_load_with_a_clear_message() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--url", "http://127.0.0.1:9", "--sessions", "1"],
            "target http://127.0.0.1:9/v1/models is unreachable",
        ),
        (
            &["--workload", "sharegpt:max_session=3"],
            "unknown field `max_session`",
        ),
        (
            &["--workload", "sharegpt:path=/no/such/conversations.jsonl"],
            "/no/such/conversations.jsonl",
        ),
        (
            &["--url", "https://127.0.0.1:9", "--sessions", "1"],
            "https is not supported",
        ),
    ];
    for (args, want) in cases {
        let o = loadgen().args(args).output().unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_csv_json_and_a_table() {
    let e = engine(40.0).await;
    let dir = out_dir("run");
    let mut cmd = loadgen();
    cmd.args(["--url", &e.url(), "--engine", &e.url()])
        .args([
            "--workload",
            "sharegpt:max_turns=2,max_output_tokens=8,max_prompt_tokens=1024",
        ])
        .args(["--sessions", "3", "--concurrency", "2", "--out"])
        .arg(&dir);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("closed loop × 2"), "{out}");
    assert!(out.contains("ttft"), "{out}");
    let csv = std::fs::read_to_string(dir.join("requests.csv")).unwrap();
    let rows = csv.lines().count() - 1;
    assert!((3..=6).contains(&rows), "{csv}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], false);
    assert_eq!(summary["client"]["ok"], rows);
    assert_eq!(summary["run"]["model"], "tiny");
    assert_eq!(summary["run"]["meta"]["workload"]["kind"], "sharegpt");
    assert_eq!(
        summary["engine_total"]["ttft_seconds"]["count"].as_f64(),
        Some(rows as f64)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_still_writes_what_was_measured() {
    // Real time and long outputs: requests are in flight when SIGINT comes.
    let e = engine(1.0).await;
    let dir = out_dir("sigint");
    let mut cmd = loadgen();
    cmd.args(["--url", &e.url(), "--engine", &e.url()])
        .args([
            "--workload",
            "sharegpt:max_output_tokens=400",
            "--sessions",
            "4",
        ])
        .args(["--concurrency", "4", "--drain", "0.2", "--out"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("starting load") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        for line in lines {
            seen.push_str(&line.unwrap());
            seen.push('\n');
        }
        let status = child.wait().unwrap();
        (status, seen)
    })
    .await
    .unwrap();
    let (status, err) = o;
    assert_eq!(status.code(), Some(130), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(
        summary["client"]["errors"]["aborted"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
    let csv = std::fs::read_to_string(dir.join("requests.csv")).unwrap();
    assert!(csv.contains("aborted"), "{csv}");
    std::fs::remove_dir_all(&dir).unwrap();
}
