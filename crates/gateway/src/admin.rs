//! The admin API under `/admin/`, behind `Authorization: Bearer <token>`.
//!
//! Disabled (every path 404) unless an admin token is configured; a missing
//! or wrong token is 401.
//!
//! | request | effect |
//! |---|---|
//! | `GET /admin/instances` | every instance: id, url, state, in-flight, gauges, directory mode and blocks, KV-event and request counters |
//! | `POST /admin/instances` `{"url": …, "kv_events": …}` | add one (201 with its entry) |
//! | `POST /admin/instances/{id}/drain` | stop sending it new requests |
//! | `POST /admin/instances/{id}/undrain` | resume |
//! | `DELETE /admin/instances/{id}` | remove it for good |
//! | `GET /admin/snapshot` | the directory as a bincode [`Snapshot`](kvroute_directory::Snapshot) (`application/octet-stream`), for another replica's `--warm-start` |
//! | `GET /admin/decisions` | the last sampled routing decisions (every `proxy.explain_every`th), newest first: each candidate's matched blocks, the policy's terms and score |
//!
//! `{id}` is the numeric id from the listing.

use crate::body::ProxyBody;
use crate::config::InstanceConfig;
use crate::error::{error_response, json_response, AddInstanceError};
use crate::gateway::Gateway;
use crate::upstream::Engine;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use kvroute_core::InstanceId;
use kvroute_routing::Health;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const MAX_ADMIN_BODY: usize = 64 * 1024;

fn authorized(gw: &Gateway, req: &Request<Incoming>) -> Option<bool> {
    let token = gw.config.admin_token.as_deref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    Some(given.is_some_and(|g| crate::auth::same(g, token.as_bytes())))
}

pub(crate) async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<ProxyBody> {
    match authorized(gw, &req) {
        None => {
            return error_response(
                StatusCode::NOT_FOUND,
                "not found",
                "invalid_request_error",
                "not_found",
            )
        }
        Some(false) => {
            let mut r = error_response(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token",
                "authentication_error",
                "unauthorized",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        Some(true) => {}
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').skip(2).collect();
    match (req.method().clone(), segs.as_slice()) {
        (Method::GET, ["instances"]) => ok(Value::Array(
            gw.engines().iter().map(|e| describe(gw, e)).collect(),
        )),
        (Method::POST, ["instances"]) => add(gw, req).await,
        (Method::GET, ["snapshot"]) => {
            let mut r = Response::new(ProxyBody::full(gw.snapshot().encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        (Method::GET, ["decisions"]) => ok(Value::Array(
            gw.explained.lock().iter().rev().cloned().collect(),
        )),
        (Method::POST, ["instances", id, "drain"]) => with_id(gw, id, |gw, id| gw.drain(id)),
        (Method::POST, ["instances", id, "undrain"]) => with_id(gw, id, |gw, id| gw.undrain(id)),
        (Method::DELETE, ["instances", id]) => with_id(gw, id, |gw, id| gw.remove(id)),
        (Method::GET, ["instances", id]) => match parse_id(id).and_then(|i| gw.engine(i)) {
            Some(u) => ok(describe(gw, &u)),
            None => unknown(id),
        },
        _ => error_response(
            StatusCode::NOT_FOUND,
            "no such admin route",
            "invalid_request_error",
            "not_found",
        ),
    }
}

fn ok(v: Value) -> Response<ProxyBody> {
    json_response(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default())
}

fn unknown(id: &str) -> Response<ProxyBody> {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no instance {id:?} (or it was removed)"),
        "invalid_request_error",
        "unknown_instance",
    )
}

fn parse_id(s: &str) -> Option<InstanceId> {
    s.trim_start_matches('i')
        .parse::<u32>()
        .ok()
        .map(InstanceId)
}

fn with_id(
    gw: &Arc<Gateway>,
    id: &str,
    f: impl FnOnce(&Gateway, InstanceId) -> bool,
) -> Response<ProxyBody> {
    let Some(i) = parse_id(id) else {
        return unknown(id);
    };
    if !f(gw, i) {
        return unknown(id);
    }
    match gw.engine(i) {
        Some(e) => ok(describe(gw, &e)),
        None => unknown(id),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    url: String,
    #[serde(default)]
    kv_events: Option<String>,
    #[serde(default)]
    replay: Option<String>,
}

async fn add(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<ProxyBody> {
    let bad = |msg: String| {
        error_response(
            StatusCode::BAD_REQUEST,
            &msg,
            "invalid_request_error",
            "invalid_instance",
        )
    };
    let bytes = match Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(format!("cannot read body: {e}")),
    };
    let body: AddBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return bad(format!("expected {{\"url\": …, \"kv_events\": …}}: {e}")),
    };
    let c = InstanceConfig {
        url: body.url,
        kv_events: body.kv_events,
        replay: body.replay,
    };
    match gw.add_instance(&c) {
        Ok(id) => match gw.engine(id) {
            Some(u) => json_response(
                StatusCode::CREATED,
                serde_json::to_vec(&describe(gw, &u)).unwrap_or_default(),
            ),
            None => bad("instance vanished".into()),
        },
        Err(e @ AddInstanceError::Duplicate(_)) => error_response(
            StatusCode::CONFLICT,
            &e.to_string(),
            "invalid_request_error",
            "duplicate_instance",
        ),
        Err(e) => bad(e.to_string()),
    }
}

/// One instance as JSON.
pub(crate) fn describe(gw: &Gateway, e: &Engine) -> Value {
    let u = e.ext();
    let id = e.id();
    let dir = gw.dispatcher().directory();
    let now = gw.dispatcher().now();
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let g = e.gauges();
    let c = &e.counters;
    let health = e.health();
    let (state, inflight, pending) = (e.state().as_str(), e.inflight(), e.pending_prefill_tokens());
    let gauges = json!({
        "running": g.running,
        "waiting": g.waiting,
        "kv_usage": g.kv_usage,
        "age_secs": (g.observed_at.0 > 0).then(|| now.saturating_sub(g.observed_at).as_secs_f64()),
    });
    let counters = json!({
        "routed": r(&c.routed),
        "finished": r(&c.finished),
        "failed": r(&c.failed),
        "cancelled": r(&c.cancelled),
        "prompt_tokens": r(&c.prompt_tokens),
        "predicted_cached_tokens": r(&c.predicted_cached_tokens),
    });
    let kv = &u.kv;
    json!({
        "id": id.0,
        "url": u.name(),
        "state": state,
        "inflight": inflight,
        "pending_prefill_tokens": pending,
        "consecutive_failures": u.consecutive_failures(),
        "probe_failing": health.has(Health::FAILING),
        "ejected": health.has(Health::EJECTED),
        "ejections": u.ejections(),
        "gauges": gauges,
        "requests": counters,
        "engine": {
            "prefix_cache_queries": r(&u.engine.prefix_cache_queries),
            "prefix_cache_hits": r(&u.engine.prefix_cache_hits),
            "block_size": u.engine.block_size.load(Ordering::Relaxed),
            "num_gpu_blocks": r(&u.engine.num_gpu_blocks),
        },
        "directory": {
            "mode": dir.mode(id).as_str(),
            "blocks": dir.instance_blocks(id),
        },
        "kv_events": {
            "endpoint": u.kv_events().map(|e| e.to_string()),
            "connected": kv.connected(),
            "publishers": kv.publishers.load(Ordering::Relaxed),
            "secs_since_last_event": kv.secs_since_last_event(),
            "fallback_reasons": crate::upstream::FeedFallback::labels(kv.fallback_reasons()),
            "refused": r(&kv.refused),
            "violations": r(&kv.violations),
            "foreign_batches": r(&kv.foreign_batches),
            "decode_errors": r(&kv.decode_errors),
            "resets": r(&kv.resets),
            "resets_suppressed": r(&kv.resets_suppressed),
            "batches": r(&kv.batches),
            "events": r(&kv.events),
            "gaps": r(&kv.gaps),
            "lost_batches": r(&kv.lost_batches),
            "replayed_batches": r(&kv.replayed_batches),
            "restarts": r(&kv.restarts),
            "fallbacks": r(&kv.fallbacks),
            "last_lag_secs": r(&kv.last_lag_us) as f64 / 1e6,
        },
    })
}
