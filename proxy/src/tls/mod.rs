//! HTTPS on the public listeners, with rustls through Pingora's `rustls`
//! feature (no system OpenSSL): TLS 1.2 and 1.3, HTTP/2 offered through
//! ALPN, several certificates picked by SNI (`certs.rs`), and certificates
//! swapped on SIGHUP for new handshakes while open connections go on.

pub mod certs;
pub mod dev_cert;

use crate::config::{Config, TlsListener};
use arc_swap::ArcSwap;
use certs::CertStore;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use std::net::SocketAddr;
use std::sync::Arc;

/// Picks each handshake's certificate from the listener's current store.
#[derive(Debug)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.load().pick(hello.server_name()))
    }
}

/// Every HTTPS listener's resolver, to swap certificates on reload.
#[derive(Default)]
pub struct Certificates {
    listeners: Vec<(SocketAddr, Arc<SniResolver>)>,
}

impl Certificates {
    /// Loads the certificates of `listener` and makes its Pingora settings.
    pub fn listener(&mut self, listener: &TlsListener) -> anyhow::Result<TlsSettings> {
        let store = CertStore::load(&listener.certificates).map_err(|e| {
            anyhow::anyhow!(
                "tls listener {}: certificates[{}].{}: {}",
                listener.listen,
                e.index,
                e.file,
                e.message
            )
        })?;
        let resolver = Arc::new(SniResolver {
            store: ArcSwap::from_pointee(store),
        });
        // Empty paths: the resolver stands for them.
        let mut settings = TlsSettings::intermediate("", "")?;
        settings.set_cert_resolver(resolver.clone());
        if listener.http2 {
            settings.enable_h2();
        }
        self.listeners.push((listener.listen, resolver));
        Ok(settings)
    }

    /// Loads the certificates `config` names for each running listener and
    /// swaps them in; all or none (the caller has validated them already,
    /// but the files may have changed since). Blocking file I/O.
    pub fn reload(&self, config: &Config) -> Result<usize, String> {
        let mut fresh = Vec::with_capacity(self.listeners.len());
        for (addr, resolver) in &self.listeners {
            let Some(listener) = config.tls.iter().find(|t| t.listen == *addr) else {
                continue; // a listener removed from the file runs on until a restart
            };
            let store = CertStore::load(&listener.certificates).map_err(|e| {
                format!(
                    "tls listener {addr}: certificates[{}].{}: {}",
                    e.index, e.file, e.message
                )
            })?;
            fresh.push((resolver, store));
        }
        let n = fresh.len();
        for (resolver, store) in fresh {
            resolver.store.store(Arc::new(store));
        }
        Ok(n)
    }
}
