//! SIGHUP (or, with `watch_config`, a change to the files: `config_watch.rs`)
//! reloads `cdn.yaml` and the HTTPS certificates: a valid file is
//! swapped in atomically (requests in flight keep the config they started
//! with, connections their certificate) and discovery runs at once;
//! an invalid one is logged and the old config stays. The file is read and
//! its static addresses resolved on the blocking pool, never on the
//! threads that serve requests. Listeners are bound at
//! start and do not change on reload (use Pingora's graceful upgrade, `-u`).

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// Reloads the config on SIGHUP, and when its files change (`watch_config`).
pub struct Reloader {
    /// The file to read.
    pub path: PathBuf,
    /// Where the config lives.
    pub config: Arc<ArcSwap<Config>>,
    /// Tells the monitor to rediscover now.
    pub rediscover: Arc<Notify>,
    /// Counts reloads applied and refused.
    pub metrics: Arc<Metrics>,
    /// The HTTPS listeners' certificates, read again on each reload.
    pub certificates: Arc<crate::tls::Certificates>,
    /// The slice cache, whose budget follows `cache.max_size`.
    pub cache: Option<Arc<crate::cache::Cache>>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot listen for SIGHUP; reload is unavailable");
            return;
        };
        let mut seen = self.fingerprint().await;
        loop {
            let every = self.config.load().watch_config;
            let tick = async {
                match every.is_zero() {
                    true => std::future::pending().await,
                    false => tokio::time::sleep(every).await,
                }
            };
            tokio::select! {
                _ = hup.recv() => {}
                _ = tick => {
                    let now = self.fingerprint().await;
                    if now == seen {
                        continue;
                    }
                    tracing::info!(file = %self.path.display(), "configuration files changed: reloading");
                }
                _ = shutdown.changed() => return,
            }
            self.reload().await;
            // What this reload read, so the watcher does not read it as a change.
            seen = self.fingerprint().await;
        }
    }
}

impl Reloader {
    /// The watched files' fingerprint (`config_watch.rs`), read on the blocking pool.
    async fn fingerprint(&self) -> u64 {
        let path = self.path.clone();
        let cfg = self.config.load_full();
        tokio::task::spawn_blocking(move || crate::config_watch::fingerprint(&path, &cfg))
            .await
            .unwrap_or_default()
    }

    /// Reads the file and applies it, or keeps the running config.
    async fn reload(&self) {
        let path = self.path.clone();
        let certificates = self.certificates.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let new = Config::load(&path)?;
            // New handshakes get the new certificates; open connections keep theirs.
            certificates.reload(&new).map_err(|message| ConfigError {
                file: path.display().to_string(),
                key: "tls".into(),
                message,
            })?;
            Ok(new)
        })
        .await;
        match loaded.unwrap_or_else(|e| {
            Err(ConfigError {
                file: self.path.display().to_string(),
                key: String::new(),
                message: format!("reading it failed: {e}"),
            })
        }) {
            Ok(new) => {
                let old = self.config.load();
                let tls = |c: &Config| {
                    c.tls
                        .iter()
                        .map(|t| (t.listen, t.http2))
                        .collect::<Vec<_>>()
                };
                if new.listen != old.listen
                    || new.admin_listen != old.admin_listen
                    || tls(&new) != tls(&old)
                    || new.h2c != old.h2c
                {
                    tracing::warn!("listener changes need a restart or a graceful upgrade (-u); the rest is applied");
                }
                if new.access_log != old.access_log {
                    tracing::warn!("access_log changes need a restart; the rest is applied");
                }
                if new.cache.dir != old.cache.dir {
                    tracing::warn!("cache.dir changes need a restart; the rest is applied");
                }
                if let Some(cache) = &self.cache {
                    cache.set_budget(new.cache.max_size);
                }
                self.config.store(Arc::new(new));
                self.rediscover.notify_one();
                self.metrics.reload_applied();
                tracing::info!(file = %self.path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.metrics.reloads_refused.inc();
                tracing::error!("reload refused, keeping the running configuration: {e}")
            }
        }
    }
}
