//! [`run`]: the whole run, from the pre-flight checks to the report.
//!
//! ```text
//!  sessions ──(blocking thread)──▶ channel ──▶ dispatcher ──spawn──▶ session task ─▶ turn 0 ─▶ think ─▶ turn 1 …
//!                                             │ open: waits for each arrival          │
//!                                             │ closed / capped: waits for a slot      └─▶ records (+ probe scrapes)
//! ```
//!
//! 1. Pre-flight, before any load: the target must answer `GET /v1/models`
//!    (which also names the model unless one is configured) and every
//!    engine must serve `/metrics`.
//! 2. The dispatcher pulls sessions (produced on a blocking thread, so a
//!    lazily tokenized workload does not stall the runtime) and starts one
//!    task per session: at its `arrival` (open loop) and/or when one of
//!    `concurrency` slots frees up (closed loop). A session task sends its
//!    turns in order, each after the previous answer ended plus the
//!    session's think time.
//! 3. "Stop starting new work" is one watch flag, raised by `num_requests`
//!    being reached, by `duration` elapsing, or by the caller's `shutdown`
//!    future. After `shutdown`, in-flight requests get `drain` to finish,
//!    then a second flag aborts them (each still gives a record).
//! 4. Engines are scraped at the end of the warm-up (or at the start, with
//!    none) and, after the last request, once they report nothing running
//!    or waiting (at most `settle`). In probe mode they are also scraped
//!    around every request.

use crate::config::{LoadgenConfig, Pacing};
use crate::error::LoadgenError;
use crate::http::{self, BaseUrl, Client};
use crate::record::{ErrorKind, RequestRecord};
use crate::report::{InstanceReport, RunInfo, RunReport};
use crate::request::{send, Ident, Prepared, SendCtx};
use crate::summary::ClientSummary;
use kvroute_metrics::{EngineReading, EngineReport, Scrape};
use kvroute_workload::Session;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// Run `sessions` against `config.url` until they are done, a limit is
/// reached, or `shutdown` completes; then report.
///
/// Errors only for problems found before any load is sent (bad settings or
/// URLs, an unreachable target, an engine without `/metrics`). Failed
/// requests are records, not errors; an interrupted run still returns its
/// report, with [`RunReport::interrupted`] set.
pub async fn run<I>(
    config: LoadgenConfig,
    sessions: I,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, LoadgenError>
where
    I: IntoIterator<Item = Session>,
    I::IntoIter: Send + 'static,
{
    let pacing = config.effective_pacing();
    validate(&config, pacing)?;
    let target = BaseUrl::parse(&config.url)?;
    let mut engines = config
        .engines
        .iter()
        .map(|u| BaseUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    if config.probe && engines.is_empty() {
        engines.push(target.clone());
    }
    let client = http::Client::new(
        config.probe_timeout,
        config.ca_file.clone(),
        http::target_headers(&config.headers, config.api_key.as_deref())?,
    )?;
    let model = http::probe_model(
        &client,
        &target,
        config.probe_timeout,
        config.model.as_deref(),
    )
    .await?;
    let initial = http::scrape_all(&client, &engines, config.probe_timeout).await;
    let initial = initial
        .into_iter()
        .zip(&engines)
        .map(|(r, e)| {
            r.map_err(|reason| LoadgenError::EngineUnreachable {
                url: e.as_str().to_string(),
                reason,
            })
        })
        .collect::<Result<Vec<Scrape>, _>>()?;
    tracing::info!(url = %target.as_str(), %model, engines = engines.len(), "target answered; starting load");

    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let t0 = Instant::now();
    let (stop, _) = watch::channel(false);
    let (abort, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        client: client.clone(),
        target: target.clone(),
        model: model.clone(),
        config: config.clone(),
        t0,
        next_id: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        stop,
        abort,
        probe_engines: if config.probe {
            engines.clone()
        } else {
            Vec::new()
        },
    });

    // The "before" scrape at the end of the warm-up.
    let warm_scrape = (!config.warmup.is_zero() && !engines.is_empty()).then(|| {
        let (client, engines, timeout) = (client.clone(), engines.clone(), config.probe_timeout);
        let warmup_end = t0 + config.warmup;
        tokio::spawn(async move {
            tokio::time::sleep_until(warmup_end.into()).await;
            http::scrape_all(&client, &engines, timeout).await
        })
    });

    // Sessions come from a blocking thread: a lazy workload may tokenize.
    let (tx, rx) = mpsc::channel::<Session>(64);
    let iter = sessions.into_iter();
    let producer = tokio::task::spawn_blocking(move || {
        for s in iter {
            if tx.blocking_send(s).is_err() {
                break;
            }
        }
    });

    let work = dispatch(shared.clone(), rx, pacing);
    tokio::pin!(work);
    tokio::pin!(shutdown);
    let deadline = config.duration.map(|d| t0 + d);
    let mut deadline_passed = deadline.is_none();
    let mut interrupted = false;
    loop {
        tokio::select! {
            () = &mut work => break,
            () = &mut shutdown => {
                interrupted = true;
                tracing::warn!(drain = ?config.drain, "interrupted: no new requests; waiting for those in flight");
                shared.stop.send_replace(true);
                if tokio::time::timeout(config.drain, &mut work).await.is_err() {
                    tracing::warn!("aborting the requests still in flight");
                    shared.abort.send_replace(true);
                    work.as_mut().await;
                }
                break;
            }
            () = sleep_until_opt(deadline), if !deadline_passed => {
                deadline_passed = true;
                tracing::info!("duration reached: no new requests");
                shared.stop.send_replace(true);
            }
        }
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    // The producer ends once the channel is gone (or its iterator is done).
    drop(producer);

    // Engine reports.
    let mut notes = Vec::new();
    let before: Vec<Option<Scrape>> = match warm_scrape {
        None => initial.into_iter().map(Some).collect(),
        Some(task) if task.is_finished() => match task.await {
            Ok(scrapes) => scrapes
                .into_iter()
                .zip(initial)
                .zip(&engines)
                .map(|((r, init), e)| match r {
                    Ok(s) => Some(s),
                    Err(reason) => {
                        notes.push(format!(
                            "engine {}: warm-up scrape failed ({reason}); its report includes the warm-up",
                            e.as_str()
                        ));
                        Some(init)
                    }
                })
                .collect(),
            Err(_) => initial.into_iter().map(Some).collect(),
        },
        Some(task) => {
            task.abort();
            notes.push("the run ended within the warm-up: engine deltas are empty".to_string());
            engines.iter().map(|_| None).collect()
        }
    };
    let after = settle(&client, &engines, config.settle, config.probe_timeout).await;
    let mut instances = Vec::new();
    for ((e, b), a) in engines.iter().zip(before).zip(after) {
        let url = e.as_str().to_string();
        instances.push(match a {
            Ok(a) => {
                let b = b.unwrap_or_else(|| a.clone());
                InstanceReport {
                    url,
                    report: Some(EngineReport::from_scrapes(&b, &a)),
                    error: None,
                }
            }
            Err(reason) => {
                notes.push(format!("engine {url}: final scrape failed: {reason}"));
                InstanceReport {
                    url,
                    report: None,
                    error: Some(reason),
                }
            }
        });
    }
    let reports: Vec<EngineReport> = instances.iter().filter_map(|i| i.report.clone()).collect();
    let engine_total = (!reports.is_empty()).then(|| EngineReport::total(&reports));

    let mut records = std::mem::take(&mut *lock(&shared.records));
    records.sort_by_key(|r| r.id);
    if !config.warmup.is_zero() && !engines.is_empty() {
        let warm_end = config.warmup.as_secs_f64();
        let straddling = records
            .iter()
            .filter(|r| r.warmup && r.start + r.e2e > warm_end)
            .count();
        if straddling > 0 {
            notes.push(format!(
                "{straddling} warm-up request(s) were still running at the engines' \"before\" scrape: \
                 the engine reports count them, the client summary does not"
            ));
        }
    }
    let client_summary = ClientSummary::of(&records, config.slo);
    Ok(RunReport {
        run: RunInfo::new(&config, &model, pacing, started_at, wall_secs),
        interrupted,
        records,
        client: client_summary,
        engines: instances,
        engine_total,
        notes,
    })
}

fn validate(c: &LoadgenConfig, pacing: Pacing) -> Result<(), LoadgenError> {
    match pacing {
        Pacing::Closed { concurrency: 0 }
        | Pacing::Open {
            max_in_flight: Some(0),
        } => return Err(LoadgenError::setting("concurrency", "must be at least 1")),
        _ => {}
    }
    if c.timeout.is_zero() {
        return Err(LoadgenError::setting("timeout", "must be positive"));
    }
    if c.probe_timeout.is_zero() {
        return Err(LoadgenError::setting("probe_timeout", "must be positive"));
    }
    if c.num_requests == Some(0) {
        return Err(LoadgenError::setting("num_requests", "must be at least 1"));
    }
    if c.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(LoadgenError::setting("model", "must not be empty"));
    }
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// State shared by the dispatcher and the session tasks.
struct Shared {
    client: Client,
    target: BaseUrl,
    model: String,
    config: LoadgenConfig,
    t0: Instant,
    /// Next request id; ids at or past `num_requests` are never used.
    next_id: AtomicU64,
    /// Finished requests. A std mutex: only pushed to, never held across an await.
    records: Mutex<Vec<RequestRecord>>,
    /// True: start no new session or turn.
    stop: watch::Sender<bool>,
    /// True: cancel requests in flight.
    abort: watch::Sender<bool>,
    /// Engines scraped around each request (probe mode), else empty.
    probe_engines: Vec<BaseUrl>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once the run is over.
    let _ = rx.wait_for(|s| *s).await;
}

/// Start sessions as the pacing says until the sessions run out or the stop
/// flag is raised, then wait for every session task.
async fn dispatch(sh: Arc<Shared>, mut sessions: mpsc::Receiver<Session>, pacing: Pacing) {
    let (follow_arrivals, slots) = match pacing {
        Pacing::Open { max_in_flight } => (true, max_in_flight),
        Pacing::Closed { concurrency } => (false, Some(concurrency)),
    };
    let slots = slots.map(|n| Arc::new(Semaphore::new(n)));
    let mut stop = sh.stop.subscribe();
    let mut tasks = JoinSet::new();
    loop {
        let next = tokio::select! {
            biased;
            () = stopped(&mut stop) => None,
            s = sessions.recv() => s,
        };
        let Some(session) = next else { break };
        if follow_arrivals {
            let at = sh.t0 + Duration::from_nanos(session.arrival.0);
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = tokio::time::sleep_until(at.into()) => {}
            }
        }
        let permit = match &slots {
            Some(sem) => tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                p = sem.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
            },
            None => None,
        };
        // Reap finished sessions so the set stays small on long runs.
        while let Some(done) = tasks.try_join_next() {
            report_panic(done);
        }
        let sh = sh.clone();
        tasks.spawn(async move {
            let _slot = permit;
            run_session(sh, session).await;
        });
    }
    drop(sessions);
    while let Some(done) = tasks.join_next().await {
        report_panic(done);
    }
}

fn report_panic(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "a session task failed");
    }
}

/// Send a session's turns in order.
async fn run_session(sh: Arc<Shared>, session: Session) {
    let mut stop = sh.stop.subscribe();
    let mut abort = sh.abort.subscribe();
    let think = Duration::from_nanos(session.think_time.0);
    for (k, turn) in session.turns.iter().enumerate() {
        if k > 0 && !think.is_zero() {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                () = tokio::time::sleep(think) => {}
            }
        }
        if *stop.borrow() {
            return;
        }
        if sh.config.duration.is_some_and(|d| sh.t0.elapsed() >= d) {
            sh.stop.send_replace(true);
            return;
        }
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        if sh.config.num_requests.is_some_and(|cap| id >= cap) {
            sh.stop.send_replace(true);
            return;
        }
        let who = Ident {
            id,
            session: session.id,
            turn: u32::try_from(k).unwrap_or(u32::MAX),
        };
        let prepared = match Prepared::new(
            sh.config.api,
            &sh.target,
            &sh.model,
            turn,
            &sh.config.extra_body,
        ) {
            Ok(p) => p,
            Err(e) => {
                // Cannot happen: the base URL was validated and paths are fixed.
                tracing::error!(error = %e, "cannot build the request; session dropped");
                return;
            }
        };
        let before = if sh.probe_engines.is_empty() {
            None
        } else {
            Some(http::scrape_all(&sh.client, &sh.probe_engines, sh.config.probe_timeout).await)
        };
        let ctx = SendCtx {
            client: &sh.client,
            target: &sh.target,
            timeout: sh.config.timeout,
            t0: sh.t0,
            warmup: sh.config.warmup,
        };
        let mut record = send(ctx, who, &prepared, &mut abort).await;
        if let Some(before) = before {
            let (ttft, e2e) = probe_delta(&sh, &before, record.ok()).await;
            record.engine_ttft = ttft;
            record.engine_e2e = e2e;
        }
        let aborted = record.error_kind == Some(ErrorKind::Aborted);
        if let Some(hook) = &sh.config.on_record {
            (hook.0)(&record);
        }
        lock(&sh.records).push(record);
        if aborted {
            return;
        }
    }
}

/// Probe mode: the engines' TTFT and e2e of the one request just sent, as
/// the change of the histograms' `_sum` since `before` — exact when the
/// counts went up by exactly one. Engines may record a request a moment
/// after its stream ended, so a successful request is re-scraped for up to
/// a second until it shows up.
async fn probe_delta(
    sh: &Shared,
    before: &[Result<Scrape, String>],
    succeeded: bool,
) -> (Option<f64>, Option<f64>) {
    let give_up = Instant::now() + Duration::from_secs(1).min(sh.config.probe_timeout);
    loop {
        let after = http::scrape_all(&sh.client, &sh.probe_engines, sh.config.probe_timeout).await;
        let (mut ttft, mut e2e) = ((0.0, 0.0), (0.0, 0.0));
        for (b, a) in before.iter().zip(&after) {
            let (Ok(b), Ok(a)) = (b, a) else {
                return (None, None);
            };
            let r = EngineReport::from_scrapes(b, a);
            for (acc, t) in [(&mut ttft, &r.ttft_seconds), (&mut e2e, &r.e2e_seconds)] {
                if let Some(t) = t {
                    acc.0 += t.histogram.count;
                    acc.1 += t.histogram.sum;
                }
            }
        }
        let seen = ttft.0 >= 1.0 && e2e.0 >= 1.0;
        if seen || !succeeded || Instant::now() >= give_up {
            // Rounded to the nanosecond: a difference of two large sums
            // carries float noise below that.
            let exact =
                |(count, sum): (f64, f64)| (count == 1.0).then_some((sum * 1e9).round() / 1e9);
            return (exact(ttft), exact(e2e));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Scrape every engine until none reports running or waiting requests, for
/// at most `settle`; the last scrapes are the run's "after".
async fn settle(
    client: &Client,
    engines: &[BaseUrl],
    settle: Duration,
    timeout: Duration,
) -> Vec<Result<Scrape, String>> {
    let give_up = Instant::now() + settle;
    loop {
        let scrapes = http::scrape_all(client, engines, timeout).await;
        let idle = scrapes.iter().all(|s| match s {
            Ok(s) => EngineReading::from_scrape(s)
                .map_or(true, |r| r.gauges.running + r.gauges.waiting == 0),
            Err(_) => true,
        });
        if idle || Instant::now() >= give_up {
            return scrapes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
