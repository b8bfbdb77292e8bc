//! Pick-only routing: the routing decision without the forwarding, for a
//! data plane that forwards the request itself (an Envoy `ext_proc`
//! endpoint picker, `kvroute-epp`).
//!
//! ```text
//! Gateway::pick(path, headers, body, allowed)
//!   inference path: parse + encode (as the proxy does)   other: no prompt
//!   ─▶ Dispatcher::route_excluding(instances not in `allowed`)
//!   ─▶ Pick { endpoint "host:port", decision, InflightGuard }
//! data plane reports: first_token() (first response byte) … finish(status)
//! ```
//!
//! A [`Pick`] holds the request's share of the instance's load like a
//! proxied request does: released by [`Pick::finish`], or as cancelled when
//! the pick is dropped (the data plane went away).

use crate::gateway::Gateway;
use crate::request::{ApiKind, RequestError};
use crate::upstream::{Engine, Upstream};
use http::{HeaderMap, HeaderValue, StatusCode};
use kvroute_core::{Decision, InstanceId, Outcome};
use kvroute_routing::InflightGuard;
use std::sync::Arc;
use std::time::Instant;

/// Why no instance was picked.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The request body is unusable (as the proxy would refuse it).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No instance takes requests.
    #[error("no healthy instance is available")]
    NoInstance,
    /// The data plane allowed only endpoints that are not healthy instances.
    #[error("none of the {allowed} endpoints the data plane allowed is a healthy instance")]
    NoneAllowed {
        /// How many endpoints it allowed.
        allowed: usize,
    },
}

impl PickError {
    /// The HTTP status the data plane should answer the client with: the
    /// request error's (400, 413, …), else 503.
    pub fn status(&self) -> StatusCode {
        match self {
            PickError::Request(e) => e.status(),
            PickError::NoInstance | PickError::NoneAllowed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The OpenAI-style error body for the client.
    pub fn body(&self) -> Vec<u8> {
        match self {
            PickError::Request(e) => crate::error::error_json(
                &e.to_string(),
                "invalid_request_error",
                e.code(),
                e.param(),
            ),
            PickError::NoInstance | PickError::NoneAllowed { .. } => {
                crate::error::error_json(&self.to_string(), "server_error", "no_instance", None)
            }
        }
    }
}

/// One picked instance for a request the data plane forwards.
pub struct Pick {
    gateway: Arc<Gateway>,
    guard: InflightGuard<Upstream>,
    decision: Decision,
    cached_tokens: u32,
    request_id: HeaderValue,
    started: Instant,
    first_token: bool,
}

impl std::fmt::Debug for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick")
            .field("engine", &self.engine().name())
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

impl Pick {
    /// The instance.
    pub fn engine(&self) -> &Arc<Engine> {
        self.guard.entry()
    }

    /// The instance's `host:port`, as the data plane connects to it.
    pub fn endpoint(&self) -> String {
        self.engine().ext().url().host_port()
    }

    /// The policy's decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Prompt tokens predicted cached on the instance.
    pub fn cached_tokens(&self) -> u32 {
        self.cached_tokens
    }

    /// The request id (the client's `x-request-id`, or one made up).
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The instance's first response byte reached the data plane (for a
    /// stream, the first token): the prompt's prefill is done.
    pub fn first_token(&mut self, status: u16) {
        if !self.first_token {
            self.first_token = true;
            self.gateway
                .metrics
                .ttft(status, self.started.elapsed().as_secs_f64());
        }
        self.guard.first_token();
    }

    /// The request ended with the instance's `status`: below 500 it
    /// finished (the instance answered), else it failed (counted towards
    /// ejecting the instance).
    pub fn finish(mut self, status: u16) {
        let e2e = self.started.elapsed().as_secs_f64();
        let engine = Arc::clone(self.engine());
        if status >= 500 {
            self.gateway.request_failed(&engine);
            self.gateway.metrics.error("upstream_status");
            self.guard.finish(Outcome::Failed);
        } else {
            if !self.first_token {
                self.first_token(status);
            }
            self.gateway.request_succeeded(&engine);
            self.guard.finish(Outcome::Finished);
        }
        self.gateway.metrics.e2e(status, e2e);
    }
}

impl Gateway {
    /// Pick an instance for a request the caller forwards itself. `path`
    /// is the request's path: `/v1/completions` and `/v1/chat/completions`
    /// bodies are parsed and their prompts encoded as the proxy does; any
    /// other request is routed without a prompt (by load alone). With
    /// `allowed`, only instances whose `host:port` is in it are candidates.
    pub async fn pick(
        self: &Arc<Self>,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        allowed: Option<&[String]>,
    ) -> Result<Pick, PickError> {
        let started = Instant::now();
        let (route, request_id) = match ApiKind::from_path(path) {
            Some(kind) => {
                let p = self.prepare(kind, headers, body).await?;
                (p.route, p.request_id)
            }
            None => self.route_request(headers, 0, Vec::new(), None),
        };
        let exclude: Vec<InstanceId> = match allowed {
            None => Vec::new(),
            Some(list) => self.dispatcher.with_table(|t| {
                t.eligible()
                    .iter()
                    .copied()
                    .filter(|&id| {
                        t.get(id).is_none_or(|e| {
                            let a = e.ext().url().host_port();
                            !list.iter().any(|x| x.trim() == a)
                        })
                    })
                    .collect()
            }),
        };
        let t0 = Instant::now();
        let routed = self
            .dispatcher
            .route_excluding(&route, &exclude)
            .map_err(|_| {
                self.metrics.error("no_instance");
                match allowed {
                    Some(list) => PickError::NoneAllowed {
                        allowed: list.len(),
                    },
                    None => PickError::NoInstance,
                }
            })?;
        self.metrics
            .decision(t0.elapsed().as_secs_f64(), routed.decision.reason);
        let cached_tokens = route.blocks_to_tokens(routed.decision.cached_blocks);
        Ok(Pick {
            gateway: Arc::clone(self),
            guard: routed.guard,
            decision: routed.decision,
            cached_tokens,
            request_id,
            started,
            first_token: false,
        })
    }
}
