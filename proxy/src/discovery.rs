//! Where the origins are: static addresses and DNS names re-resolved every
//! `discovery.interval`, each A/AAAA record an origin (so `docker compose
//! --scale` and Kubernetes headless services work). Pingora ships no DNS
//! discovery; this is our [`ServiceDiscovery`].
//!
//! Discovery also keeps the origin registry in step, and is the only place
//! origins are made: new addresses get live state (down until their first
//! health check passes), attached to their `Backend` (`Backend::ext`) for
//! the selector; addresses no longer listed are marked gone and drain.

use crate::config::{Config, HostPort};
use crate::origins::{Origin, Registry};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Static and DNS discovery over the live config.
pub struct Discovery {
    config: Arc<ArcSwap<Config>>,
    registry: Arc<Registry>,
    state: Mutex<DnsState>,
}

#[derive(Default)]
struct DnsState {
    /// The resolver and the name servers it was built for.
    resolver: Option<(Vec<SocketAddr>, TokioResolver)>,
    /// Last good answer per name: a failed lookup keeps it rather than dropping every origin.
    last: HashMap<String, Vec<SocketAddr>>,
}

impl Discovery {
    /// Discovery over `config`, registering origins in `registry`.
    pub fn new(config: Arc<ArcSwap<Config>>, registry: Arc<Registry>) -> Self {
        Discovery {
            config,
            registry,
            state: Mutex::new(DnsState::default()),
        }
    }

    /// Resolves every entry and updates the registry; returns the origins listed now.
    pub async fn resolve(&self) -> Vec<Arc<Origin>> {
        let cfg = self.config.load_full();
        let mut state = self.state.lock().await;
        let mut listed = Vec::new();
        // Each address's pools: an address listed in several entries is in each of their pools.
        let mut pools: HashMap<SocketAddr, u64> = HashMap::new();
        for entry in &cfg.origins {
            // The config was checked: every name has a bit.
            let bit = crate::origins::pools::bit(&entry.pool).unwrap_or(0);
            let (source, addrs) = if let Some(a) = &entry.address {
                let addrs = match tokio::net::lookup_host(a.as_str()).await {
                    Ok(mut it) => it.next().into_iter().collect(),
                    Err(e) => {
                        tracing::warn!(address = %a, "cannot resolve origin: {e}");
                        Vec::new()
                    }
                };
                ("static".to_string(), addrs)
            } else if let Some(d) = &entry.dns {
                (d.clone(), state.lookup(&cfg, d).await)
            } else {
                continue;
            };
            for addr in addrs {
                let o = self.registry.get_or_insert(addr, &source, entry.capacity);
                o.set_configured_capacity(entry.capacity);
                o.health.set_gone(false);
                *pools.entry(addr).or_default() |= bit;
                listed.push(o);
            }
        }
        for o in &listed {
            o.set_pools(pools.get(&o.addr).copied().unwrap_or(0));
        }
        listed.sort_by_key(|o| o.addr);
        listed.dedup_by_key(|o| o.addr);
        let now: HashSet<SocketAddr> = listed.iter().map(|o| o.addr).collect();
        for o in self.registry.all() {
            if !now.contains(&o.addr) {
                o.health.set_gone(true);
            }
        }
        self.registry.prune();
        listed
    }
}

impl DnsState {
    async fn lookup(&mut self, cfg: &Config, entry: &str) -> Vec<SocketAddr> {
        let Some(target) = HostPort::parse(entry) else {
            return Vec::new();
        };
        let (name, port) = (target.name(), target.port);
        let servers = &cfg.discovery.nameservers;
        if self.resolver.as_ref().is_none_or(|(s, _)| s != servers) {
            match build_resolver(servers) {
                Ok(r) => self.resolver = Some((servers.clone(), r)),
                Err(e) => tracing::error!("cannot build a DNS resolver: {e}"),
            }
        }
        let Some((_, resolver)) = &self.resolver else {
            return self.last.get(entry).cloned().unwrap_or_default();
        };
        match resolver.lookup_ip(name).await {
            Ok(ips) => {
                let mut addrs: Vec<SocketAddr> =
                    ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                addrs.sort();
                addrs.dedup();
                self.last.insert(entry.to_string(), addrs.clone());
                addrs
            }
            Err(e) if e.is_no_records_found() => {
                // The name exists with no records: every origin behind it is gone.
                self.last.insert(entry.to_string(), Vec::new());
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(name, "DNS lookup failed, keeping the last answer: {e}");
                self.last.get(entry).cloned().unwrap_or_default()
            }
        }
    }
}

/// A resolver for the given name servers, or the system's configuration when empty.
/// Caching is off: every discovery round asks again.
fn build_resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| e.to_string())?
    } else {
        let mut rc = ResolverConfig::new();
        for s in servers {
            rc.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
        }
        TokioResolver::builder_with_config(rc, TokioConnectionProvider::default())
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = std::time::Duration::from_secs(2);
    Ok(builder.build())
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let backends = self
            .resolve()
            .await
            .into_iter()
            .map(|origin| {
                let mut b = Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(origin.addr),
                    weight: 1,
                    ext: http::Extensions::new(),
                };
                b.ext.insert(origin);
                b
            })
            .collect();
        Ok((backends, HashMap::new()))
    }
}
