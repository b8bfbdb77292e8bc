/*!
kvroute's load generator: replay a workload against a router or an engine
over the OpenAI streaming API, measure every request on the client, and read
the engines' own timers from their `/metrics`.

# Brief overview

[`run`] takes a [`LoadgenConfig`] (target URL, [`Api`], [`Pacing`], limits,
engines to scrape), the [`Session`](kvroute_workload::Session)s to replay
(usually from [`kvroute_workload::build_workload`]) and a shutdown future,
and returns a [`RunReport`]:

* one [`RequestRecord`] per request — failures included, with their HTTP
  status and [`ErrorKind`] — holding the client-side TTFT, TPOT, mean ITL,
  e2e, token counts, cached tokens (`usage.prompt_tokens_details`), and the
  router's `x-kvroute-instance` / `x-kvroute-cached-tokens` headers;
* a [`ClientSummary`] ([`Stats`] of TTFT/TPOT/ITL/e2e, throughput, goodput
  under an [`Slo`], errors by kind, requests per instance);
* per engine an [`InstanceReport`] with the engine-side
  [`EngineReport`](kvroute_metrics::EngineReport) (the delta of its
  histograms and counters between a scrape after the warm-up and one after
  the run), and their total — the engines' numbers are the primary result.

In probe mode (one request at a time) the engines are also scraped around
every request, giving each request's exact engine-side TTFT and e2e, the
input of `sim calibrate`. [`RunReport::write`] writes `requests.csv` and
`summary.json`; its `Display` is the terminal table.

Sessions keep their turn order: turn *k + 1* is sent after turn *k*'s answer
ended plus the session's think time. Open loop starts each session at its
arrival time; closed loop keeps `concurrency` sessions in flight.

```no_run
use kvroute_loadgen::{run, LoadgenConfig, Pacing};
use kvroute_workload::{build_workload, embedded_qwen3_template, embedded_qwen3_tokenizer, ArrivalSpec, WorkloadSpec};

# async fn demo() -> Result<(), Box<dyn std::error::Error>> {
let tokenizer = embedded_qwen3_tokenizer()?;
let template = embedded_qwen3_template()?;
let spec: WorkloadSpec = serde_json::from_str(r#"{"kind": "sharegpt", "max_sessions": 5}"#)?;
let sessions = build_workload(&spec, &ArrivalSpec::default(), &tokenizer, Some(&template), 0)?
    .collect::<Result<Vec<_>, _>>()?;

let mut config = LoadgenConfig::new("http://127.0.0.1:8000");
config.pacing = Pacing::Closed { concurrency: 2 };
config.engines = vec!["http://127.0.0.1:8001".into(), "http://127.0.0.1:8002".into()];
let report = run(config, sessions, async { let _ = tokio::signal::ctrl_c().await; }).await?;
println!("{report}");
report.write("results/run-1")?;
# Ok(())
# }
```

The SSE parser is public for other clients:

```
use kvroute_loadgen::{Chunk, SseParser};

let mut parser = SseParser::new();
let mut events = Vec::new();
// One event split across two frames, then two events in one frame.
parser.push(b"data: {\"choices\":[{\"delta\":{\"cont", &mut events);
parser.push(b"ent\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"completion_tokens\":1}}\n\ndata: [DONE]\n\n", &mut events);
assert_eq!(events.len(), 3);
assert!(matches!(Chunk::parse(&events[0]), Ok(Chunk::Data { text: Some(t), .. }) if t == "Hi"));
assert_eq!(Chunk::parse(&events[2]), Ok(Chunk::Done));
```

# Layout

* `config`: [`LoadgenConfig`], [`Api`], [`Pacing`], [`Slo`], [`RecordHook`].
* `runner`: [`run`] — pre-flight, dispatcher, session tasks, scrapes.
* `request`: one request, built and measured.
* `sse`: [`SseParser`], [`SseEvent`], [`Chunk`], [`Usage`].
* `http`: the pooled client (http and https), the target's headers, URL
  checks, probe, `/metrics` scrapes.
* `record`: [`RequestRecord`], [`ErrorKind`].
* `summary`: [`ClientSummary`], [`Stats`], [`InstanceCounts`].
* `report`: [`RunReport`], [`RunInfo`], [`InstanceReport`], the outputs.
* `bench_result`: [`bench_result`], the run as `vllm bench serve
  --save-result` writes it ([`BenchResultOptions`], [`Metric`]).
* `error`: [`LoadgenError`].
*/

#![deny(missing_docs)]

pub use crate::bench_result::{
    bench_result, default_file_name, percentile_word, BenchResultOptions, Metric,
};
pub use crate::config::{Api, LoadgenConfig, Pacing, RecordHook, Slo};
pub use crate::error::LoadgenError;
pub use crate::record::{ErrorKind, RequestRecord};
pub use crate::report::{InstanceReport, RunInfo, RunReport, CSV_COLUMNS};
pub use crate::request::{HEADER_CACHED_TOKENS, HEADER_INSTANCE};
pub use crate::runner::run;
pub use crate::sse::{Chunk, SseEvent, SseParser, Usage};
pub use crate::summary::{ClientSummary, InstanceCounts, Stats};

mod bench_result;
mod config;
mod error;
mod http;
mod record;
mod report;
mod request;
mod runner;
mod sse;
mod summary;
