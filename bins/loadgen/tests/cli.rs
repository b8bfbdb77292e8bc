//! The `loadgen` command end to end: bad input fails before any load with a
//! clear message; a run against an emulated engine writes its outputs; an
//! https engine with the bench-tool flags writes a `vllm bench serve`
//! result; and Ctrl-C (SIGINT) still writes what was measured.

use kvroute_emulator::{spawn, EmulatorConfig, Running};
use kvroute_sim::Profile;
use kvroute_workload::{embedded_qwen3_template, embedded_qwen3_tokenizer};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn loadgen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    c.env("RUST_LOG", "info").arg("--no-progress");
    c
}

/// Run `cmd` to completion off the test's runtime (the engine it talks to
/// runs on that runtime).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn engine(speedup: f64) -> Running {
    engine_with(speedup, None).await
}

async fn engine_with(speedup: f64, tls: Option<kvroute_http::ServerTls>) -> Running {
    let mut c = EmulatorConfig::new(
        Profile::load("vllm-cpu-tiny").unwrap(),
        Arc::new(embedded_qwen3_tokenizer().unwrap()),
    );
    c.speedup = speedup;
    c.chat_template = Some(Arc::new(embedded_qwen3_template().unwrap()));
    c.tls = tls;
    spawn(c).await.unwrap()
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/http/testdata")
        .join(name)
}

/// `vllm:num_requests_running` of a plain-http engine, read with a blocking
/// GET /metrics.
fn running_requests(addr: std::net::SocketAddr) -> f64 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find(|l| l.starts_with("vllm:num_requests_running"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvroute-loadgen-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn bad_input_fails_before_any_load_with_a_clear_message() {
    let cases: [(&[&str], &str); 9] = [
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
            &["--url", "ftp://127.0.0.1:9", "--sessions", "1"],
            "only http:// and https://",
        ),
        (&["--goodput", "ttft=5"], "is not KEY:MS"),
        (&["--goodput", "queue:5"], "unknown metric"),
        (&["--extra-body", "[1]"], "must be a JSON object"),
        (&["--metric-percentiles", "50,101"], "not between 0 and 100"),
        (
            &["--normalize-arrivals", "--sessions", "2"],
            "--normalize-arrivals needs --rate",
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
    let o = output(cmd).await;
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
async fn https_engine_and_a_vllm_bench_serve_result() {
    let tls = kvroute_http::server_tls(&testdata("server.pem"), &testdata("server.key")).unwrap();
    let e = engine_with(40.0, Some(tls)).await;
    assert!(e.url().starts_with("https://"), "{}", e.url());
    let url = e.url();
    // Without the CA the certificate is refused before any load.
    let mut cmd = loadgen();
    cmd.args(["--url", &url, "--num-requests", "1"]);
    let o = output(cmd).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate"), "{err}");

    let dir = out_dir("vllm");
    let mut cmd = loadgen();
    cmd.args(["--url", &url, "--engine", &url, "--api", "completions"])
        .arg("--ca-cert")
        .arg(testdata("ca.pem"))
        .args([
            "--workload",
            "random:num_requests=6,input_tokens=64,output_tokens=4",
            "--max-concurrency",
            "2",
            "--extra-body",
            r#"{"temperature": 0}"#,
            "--goodput",
            "ttft:60000",
            "e2el:60000",
            "--percentile-metrics",
            "ttft,tpot,itl,e2el",
            "--metric-percentiles",
            "50,90,99.9",
            "--save-result",
            "--save-detailed",
            "--result-filename",
            "r.json",
            "--metadata",
            "run=ci",
            "--out",
        ])
        .arg(&dir);
    let o = output(cmd).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("ms (interp.)") && out.contains("p99.9"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(v["backend"], "openai");
    assert_eq!(v["model_id"], "tiny");
    assert_eq!(v["run"], "ci");
    assert_eq!(v["request_rate"], "inf");
    assert_eq!(v["max_concurrency"], 2);
    assert_eq!(
        (
            v["num_prompts"].as_u64(),
            v["completed"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(6), Some(6), Some(0))
    );
    assert_eq!(v["total_input_tokens"], 6 * 64);
    assert_eq!(v["total_output_tokens"], 6 * 4);
    assert_eq!(
        v["request_goodput"], v["request_throughput"],
        "60 s objectives: all good"
    );
    assert!(v["max_concurrent_requests"].as_u64().unwrap() >= 1);
    for m in ["ttft", "tpot", "itl", "e2el"] {
        let f = |k: String| v[&k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
        let (p50, p90, p999) = (
            f(format!("p50_{m}_ms")),
            f(format!("p90_{m}_ms")),
            f(format!("p99.9_{m}_ms")),
        );
        assert!(
            0.0 < p50 && p50 <= p90 && p90 <= p999,
            "{m}: {p50} {p90} {p999}"
        );
        assert_eq!(f(format!("median_{m}_ms")), p50);
        assert!(f(format!("std_{m}_ms")) >= 0.0);
    }
    assert_eq!(v["itls"].as_array().unwrap().len(), 6);
    assert!(v["itls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l.as_array().unwrap().len() == 3));
    assert_eq!(v["input_lens"][0], 64);
    // The engine saw the run over https too (its /metrics scraped).
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["engine_total"]["ttft_seconds"]["count"].as_f64(),
        Some(6.0)
    );
    assert_eq!(summary["run"]["extra_body"]["temperature"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_still_writes_what_was_measured() {
    // Real time and long outputs: requests are in flight when SIGINT comes.
    let e = engine(1.0).await;
    let addr = e.addr;
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
        // Interrupt once the engine is working on requests.
        let t = std::time::Instant::now();
        while running_requests(addr) < 1.0 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no request reached the engine"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
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
