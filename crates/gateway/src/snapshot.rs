//! Warm start: the router's directory as a [`Snapshot`] (served at
//! `GET /admin/snapshot`), and a new router filled from one before it
//! takes traffic (`directory.warm_start`, `--warm-start FILE|URL`).
//!
//! A replica added behind a load balancer (or a router restarted) starts
//! with an empty directory: in predicted mode it routes as if nothing were
//! cached until its own history refills it; in exact mode it knows only
//! blocks stored after it subscribed. Fetching a running replica's snapshot
//! gives it that replica's view at once (KV events and its own routing keep
//! it current from there; blocks an engine evicted between the snapshot
//! and the subscription stay listed until the directory's LRU bound ages
//! them out, unless the engine's replay socket supplies the gap).
//!
//! Instances are matched by URL; blocks of instances the new router does
//! not have are skipped. A snapshot made with another hashing (algorithm,
//! block size, seed or tokenizer) is refused: its hashes would never match.
//! A source that cannot be reached over HTTP is logged and the router
//! starts cold (peers come and go); a file that cannot be read, or bytes
//! that are not a usable snapshot, stop the start-up with the reason.

use crate::error::ServeError;
use crate::gateway::Gateway;
use bytes::Bytes;
use http_body_util::Full;
use kvroute_directory::{InstanceSnapshot, Snapshot};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest snapshot fetched over HTTP.
const MAX_FETCH: usize = 1 << 30;

impl Gateway {
    /// How this router hashes prompts, as snapshots record it.
    pub fn hashing_id(&self) -> String {
        let h = &self.config().hashing;
        let tokenizer = h
            .tokenizer
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or("pseudo-tokens".to_string(), |n| {
                n.to_string_lossy().into_owned()
            });
        format!(
            "{}/block {}/seed {}/{}",
            h.algo, h.block_size, h.seed, tokenizer
        )
    }

    /// Every instance's directory entries, least recently used first.
    pub fn snapshot(&self) -> Snapshot {
        let dir = self.dispatcher().directory();
        Snapshot {
            hashing: self.hashing_id(),
            taken_at_unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            instances: self
                .engines()
                .iter()
                .map(|e| InstanceSnapshot {
                    name: e.name().to_string(),
                    blocks: dir.export(e.id()),
                })
                .collect(),
        }
    }

    /// Fill the directory from a snapshot's bytes; returns the blocks taken.
    pub fn import_snapshot(&self, bytes: &[u8]) -> Result<usize, ServeError> {
        let snap = Snapshot::decode(bytes)?;
        snap.check_hashing(&self.hashing_id())?;
        let dir = self.dispatcher().directory();
        let mut taken = 0;
        for e in self.engines() {
            if let Some(s) = snap.instances.iter().find(|s| s.name == e.name()) {
                dir.import(e.id(), &s.blocks);
                taken += s.blocks.len();
            }
        }
        Ok(taken)
    }

    /// Warm start from `directory.warm_start`, if set (see the module docs).
    pub async fn warm_start(&self) -> Result<(), ServeError> {
        let Some(source) = self.config().directory.warm_start.clone() else {
            return Ok(());
        };
        let bytes = if source.starts_with("http://") || source.starts_with("https://") {
            match self.fetch_snapshot(&source).await {
                Ok(b) => b,
                Err(reason) => {
                    tracing::warn!(source = %source, %reason, "no directory snapshot; starting cold");
                    return Ok(());
                }
            }
        } else {
            Bytes::from(tokio::fs::read(&source).await.map_err(|e| {
                ServeError::WarmStart(format!("reading the snapshot {source}: {e}"))
            })?)
        };
        let taken = self.import_snapshot(&bytes).map_err(|e| match e {
            ServeError::Snapshot(s) => ServeError::WarmStart(format!("{source}: {s}")),
            other => other,
        })?;
        tracing::info!(source = %source, blocks = taken, "directory warmed from a snapshot");
        Ok(())
    }

    /// GET a peer's `/admin/snapshot` with this router's admin token.
    async fn fetch_snapshot(&self, url: &str) -> Result<Bytes, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let mut req = http::Request::get(uri);
        if let Some(token) = &self.config().admin_token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, body) =
            kvroute_http::send_bounded(&self.client, req, MAX_FETCH, Duration::from_secs(30))
                .await
                .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        Ok(body)
    }
}
