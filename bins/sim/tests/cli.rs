//! `sim run` and `sim sweep` as a user calls them: refused requests fail the
//! command unless accepted and head every summary; a sweep drives the
//! `--arrival` process it is given; a run and the sweep's row at the same
//! rate and seed simulate the same requests.

use std::path::Path;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .expect("running sim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 40 requests, a third of them longer than the default profile's
/// max_model_len of 4,096 tokens.
const TOO_LONG: &str = "random:num_requests=40,input_tokens=3500,range_ratio=0.6,output_tokens=4";

#[test]
fn run_fails_on_requests_longer_than_max_model_len_and_says_so_first() {
    let out = sim(&["run", "--workload", TOO_LONG, "--rate", "20"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("REJECTED "), "{stdout}");
    assert!(
        stdout.lines().next().unwrap().contains("max_model_len"),
        "{stdout}"
    );
    assert!(
        stderr.contains("WARNING: policy weighted rejected"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-rejected"), "{stderr}");

    let ok = sim(&[
        "run",
        "--workload",
        TOO_LONG,
        "--rate",
        "20",
        "--allow-rejected",
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).starts_with("REJECTED "));
    // A share below the one refused still fails.
    let strict = sim(&[
        "run",
        "--workload",
        TOO_LONG,
        "--rate",
        "20",
        "--allow-rejected",
        "0.01",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stderr).contains("more than the 1.0 %"));
}

#[test]
fn run_without_refusals_says_none() {
    let out = sim(&[
        "run",
        "--workload",
        "random:num_requests=20,input_tokens=500,output_tokens=4",
        "--rate",
        "10",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("rejected: none\n"));
}

#[test]
fn sweep_lists_refusing_rows_first_and_fails() {
    let dir = tempdir();
    let csv = dir.join("sweep.csv");
    let out = sim(&[
        "sweep",
        "--workload",
        TOO_LONG,
        "--policy",
        "round_robin",
        "--rates",
        "10,20",
        "--out",
        csv.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("REJECTED in 2 of 2 runs"), "{stdout}");
    assert!(text(&out.stderr).contains("WARNING: 2 of 2 runs rejected"));
    // The outputs are still written.
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
}

#[test]
fn sweep_drives_the_given_arrival_process() {
    let dir = tempdir();
    let (p, g) = (dir.join("poisson.csv"), dir.join("gamma.csv"));
    let w = "random:num_requests=60,input_tokens=300,output_tokens=16";
    let base = [
        "sweep",
        "--workload",
        w,
        "--policy",
        "round_robin",
        "--rates",
        "8",
    ];
    let a = sim(&[&base[..], &["--out", p.to_str().unwrap()]].concat());
    assert!(a.status.success(), "{}", text(&a.stderr));
    let b = sim(&[
        &base[..],
        &["--arrival", "gamma:cv=4", "--out", g.to_str().unwrap()],
    ]
    .concat());
    assert!(b.status.success(), "{}", text(&b.stderr));
    let (pr, gr) = (row(&p), row(&g));
    assert_eq!(pr["arrival"], "poisson");
    assert_eq!(gr["arrival"], "gamma:cv=4");
    // Burstier arrivals of the same requests: a different run.
    assert_ne!(pr["ttft_mean"], gr["ttft_mean"]);

    // A trace process takes no rate.
    let t = sim(&[&base[..], &["--arrival", "trace"]].concat());
    assert_eq!(t.status.code(), Some(1));
    assert!(
        text(&t.stderr).contains("take no rate"),
        "{}",
        text(&t.stderr)
    );
}

#[test]
fn run_and_sweep_simulate_the_same_requests_for_a_rate_and_seed() {
    let dir = tempdir();
    let csv = dir.join("sweep.csv");
    let run_dir = dir.join("run");
    let w = "random:num_requests=50,input_tokens=400,range_ratio=0.5,output_tokens=12";
    let r = sim(&[
        "run",
        "--workload",
        w,
        "--policy",
        "least_request",
        "--rate",
        "6",
        "--seed",
        "3",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let s = sim(&[
        "sweep",
        "--workload",
        w,
        "--policy",
        "least_request",
        "--rates",
        "6",
        "--seeds",
        "3",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(s.status.success(), "{}", text(&s.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let row = row(&csv);
    for (json, col) in [("ttft", "ttft_mean"), ("e2e", "e2e_mean")] {
        let a = summary[json]["mean"].as_f64().unwrap();
        let b: f64 = row[col].parse().unwrap();
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            "{json}: run {a} sweep {b}"
        );
    }
}

#[test]
fn a_rag_path_in_a_directory_is_a_corpus_not_a_spec_file() {
    let dir = tempdir();
    let corpus = dir.join("corpus.json");
    std::fs::write(
        &corpus,
        r#"[{"question": "Who?", "context": [["A", ["Alpha is a letter.", " It comes first."]], ["B", ["Beta comes second."]]]}]"#,
    )
    .unwrap();
    let spec = format!("rag:path={},passages_per_request=2", corpus.display());
    let out = sim(&["run", "--workload", &spec, "--sessions", "4", "--rate", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("requests 4 "),
        "{}",
        text(&out.stdout)
    );
}

fn row(csv: &Path) -> std::collections::HashMap<String, String> {
    let mut r = csv::Reader::from_path(csv).unwrap();
    let headers = r.headers().unwrap().clone();
    let rec = r.records().next().unwrap().unwrap();
    headers
        .iter()
        .zip(rec.iter())
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "kvroute-sim-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
