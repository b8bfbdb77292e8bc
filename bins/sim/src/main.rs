//! `sim`: kvroute's simulator.
//!
//! * `sim run` — one cluster simulation (policy, workload, instances, staleness);
//! * `sim sweep` — a grid of them in parallel, one CSV row each;
//! * `sim serve` — one emulated vLLM engine on the wall clock behind its HTTP API;
//! * `sim calibrate` — fit a profile's latency terms to measured requests;
//! * `sim study` — the four studies, with figures and `docs/results.md`;
//! * `sim validate` — the simulator against live engines on the same replays.
//!
//! The binary only parses flags and wires the libraries (`kvroute-sim`,
//! `kvroute-emulator`, `kvroute-workload`).

mod calibrate;
mod live;
mod run;
mod serve;
mod spec;
mod study;
mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sim",
    version,
    about = "kvroute simulator: run, sweep, serve, calibrate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate one cluster run.
    Run(run::RunArgs),
    /// Simulate a grid of runs in parallel and write one CSV.
    Sweep(run::SweepArgs),
    /// Serve one emulated vLLM engine over HTTP.
    Serve(serve::ServeArgs),
    /// Fit a profile's latency model to measured requests.
    Calibrate(calibrate::CalibrateArgs),
    /// Run the four studies and write CSVs, figures and docs/results.md.
    Study(study::StudyArgs),
    /// Compare the simulator with live engines on the same replays.
    Validate(validate::ValidateArgs),
}

fn main() -> ExitCode {
    let argv = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = Cli::parse();
    // The study runs routers and engines in-process: keep their logs to warnings.
    let default_filter = match cli.command {
        Command::Study(_) | Command::Validate(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Sweep(a) => run::sweep(a),
        Command::Serve(a) => serve::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Study(a) => study::run(a, &argv),
        Command::Validate(a) => validate::run(a, &argv),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let broken_pipe = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
