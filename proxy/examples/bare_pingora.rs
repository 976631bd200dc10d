//! The floor under cdn-proxy's numbers: a bare Pingora round-robin proxy in
//! the shape of Pingora's own `load_balancer` example (no health checks, no
//! metrics, no filters), with the same allocator and runtime settings.
//! `bench/proxy.sh` runs it beside cdn-proxy (`ALSO_BARE=1`), so the cost of
//! our features is measured apart from the cost of Pingora itself.
//!
//! `cargo run --release --example bare_pingora -- -c pingora.yaml --listen
//! 127.0.0.1:18580 --origin 127.0.0.1:19101 --origin 127.0.0.1:19102`

use async_trait::async_trait;
use clap::Parser;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::Opt;
use pingora::server::Server;
use std::sync::Arc;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A bare Pingora round-robin HTTP proxy, for benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// An origin (host:port); repeat for more.
    #[arg(long = "origin", required = true)]
    origins: Vec<String>,
    /// Pingora's own options (-c pingora.yaml).
    #[command(flatten)]
    pingora: Opt,
}

/// Round robin over the configured origins, nothing else.
struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let origin = self
            .0
            .select(b"", 256)
            .expect("a static, non-empty origin list");
        Ok(Box::new(HttpPeer::new(origin, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let mut server = Server::new(Some(args.pingora)).expect("pingora server config");
    server.bootstrap();
    let origins = LoadBalancer::try_from_iter(args.origins).expect("origin addresses");
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, Bare(Arc::new(origins)));
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever();
}
