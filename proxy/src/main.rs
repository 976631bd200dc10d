//! `cdn-proxy`: builds the Pingora server from `pingora.yaml` (`-c`) and our
//! `cdn.yaml` (`--cdn-conf`), and wires the services: the proxy on the public
//! listeners, the admin app on its loopback listener, and the background
//! services (health/discovery monitor, ratings, metrics snapshots, SIGHUP
//! reload, dashboard). Nothing else happens here.
//!
//! A request: `edge.rs` (routes.rs, select/, origins/) → Pingora → origin.
//! A load report: origin header or health check → `origins/` → `select/rater.rs`.
//! A config change: `reload.rs` → `config/` → swapped in (`ArcSwap`).

mod access_log;
mod admin;
mod allocator;
mod atomic_f64;
mod cache;
mod clock;
mod config;
mod config_watch;
mod cors;
mod direct_socket;
mod discovery;
mod drain;
mod edge;
mod forwarded;
mod header_deadline;
mod https_redirect;
mod media;
mod metrics;
mod monitor;
mod origins;
mod peer;
mod reload;
mod replayed_stream;
mod request_gate;
mod request_id;
mod respond;
mod retry_budget;
mod routes;
mod select;
mod sidecar;
mod tls;
mod websocket;

use arc_swap::ArcSwap;
use clap::Parser;
use pingora::lb::Backends;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::background::background_service;
use std::path::PathBuf;
use std::sync::Arc;

/// The Pingora load-balancing edge in front of cdn-origin servers.
#[derive(Debug, Parser)]
#[command(name = "cdn-proxy", version)]
struct Args {
    /// Our configuration: listeners, origins, selection, health, retries, timeouts.
    #[arg(
        long = "cdn-conf",
        value_name = "FILE",
        default_value = "conf/cdn.yaml"
    )]
    cdn_conf: PathBuf,

    /// Validate cdn.yaml (and pingora.yaml if given with -c), print the result, and exit.
    #[arg(long)]
    check: bool,

    /// Pingora's own options: -c pingora.yaml, -u (graceful upgrade), -d (daemon), -t (test config).
    #[command(flatten)]
    pingora: Opt,

    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// GET /healthz on the first `listen` address of --cdn-conf (a wildcard
    /// address is reached on loopback) and exit 0 if it answers 2xx, 1
    /// otherwise: a container HEALTHCHECK with no shell tools.
    Healthcheck,
    /// Make a local certificate authority and a certificate for `--name`s
    /// in `--dir` (ca.pem, ca.key, cert.pem, key.pem), unless a certificate
    /// there has more than 30 days left; print the files. For trying HTTPS
    /// on one machine (`make run`), not for the internet.
    DevCert {
        /// Folder for the files.
        #[arg(long, default_value = "target/dev-tls")]
        dir: PathBuf,
        /// Names (DNS or IP) the certificate is for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    cdn_types::logging::init();
    if let Some(Command::DevCert { dir, names }) = &args.command {
        return match tls::dev_cert::ensure(dir, names) {
            Ok(f) => {
                let state = if f.made { "made" } else { "kept" };
                println!(
                    "{state} {} (trust this CA: {})",
                    f.cert.display(),
                    f.ca.display()
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cdn-proxy dev-cert: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match config::Config::load(&args.cdn_conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cdn-proxy: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    if let Some(Command::Healthcheck) = &args.command {
        // Config::load refuses an empty `listen`.
        if config.endpoints.healthz.is_empty() {
            eprintln!(
                "cdn-proxy healthcheck: endpoints.healthz is switched off in {}",
                args.cdn_conf.display()
            );
            return std::process::ExitCode::FAILURE;
        }
        return cdn_types::healthcheck::run(
            "cdn-proxy",
            config.listen[0],
            &config.endpoints.healthz,
        );
    }
    if args.check {
        // Pingora's parser validates pingora.yaml the same way -t does.
        if let Err(e) = Server::new(Some(Opt {
            test: false,
            ..args.pingora
        })) {
            eprintln!("cdn-proxy: invalid Pingora configuration: {e}");
            std::process::exit(2);
        }
        println!("{}: ok", args.cdn_conf.display());
        return std::process::ExitCode::SUCCESS;
    }
    if let Err(e) = run(args, config) {
        eprintln!("cdn-proxy: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn run(args: Args, config: config::Config) -> anyhow::Result<()> {
    let mut server = Server::new(Some(args.pingora))?;
    server.bootstrap();

    if !config.admin_listen.ip().is_loopback() && config.admin_auth.token.is_none() {
        tracing::warn!(
            admin_listen = %config.admin_listen,
            "the admin API is reachable from other hosts without a token; set admin_auth.token_file or admin_auth.token_env"
        );
    }
    let listen = config.listen.clone();
    let tls_listeners = config.tls.clone();
    let h2c = config.h2c;
    let client_read_buffer = config.client_read_buffer;
    let dashboard = config.dashboard.clone();
    let admin_listen = config.admin_listen;
    let budget = Arc::new(retry_budget::RetryBudget::new(&config.retry));
    prometheus::register(Box::new(budget.refused.clone()))?;
    let config = Arc::new(ArcSwap::from_pointee(config));
    let registry = Arc::new(origins::Registry::default());
    let ratings = Arc::new(select::Ratings::default());
    let discovery = discovery::Discovery::new(config.clone(), registry.clone());
    let settings: select::SettingsSource = {
        let config = config.clone();
        Arc::new(move || Arc::new(config.load().selection.clone()))
    };
    let shared = select::Shared {
        settings: settings.clone(),
        ratings: ratings.clone(),
    };
    let balancer = Arc::new(select::Balancer::new(
        Backends::new(Box::new(discovery)),
        shared,
    ));
    let metrics = Arc::new(metrics::Metrics::new(registry.clone(), ratings.clone())?);
    let snapshot = Arc::new(ArcSwap::from_pointee(metrics::Snapshot::default()));
    let rediscover = Arc::new(tokio::sync::Notify::new());
    let warmup = Arc::new(monitor::Warmup::default());
    let hub = dashboard.enabled.then(|| sidecar::hub(&dashboard));
    let draining = Arc::new(drain::Draining::default());
    let access_log = {
        let c = &config.load().access_log;
        cdn_types::access_log::AccessLog::start(c.format, c.path.as_deref()).map_err(|e| {
            let path = c.path.as_deref().unwrap_or("stdout".as_ref());
            anyhow::anyhow!("access_log.path: cannot open {}: {e}", path.display())
        })?
    };

    let cache = match &config.load().cache.dir {
        Some(dir) => {
            let max = config.load().cache.max_size;
            let cache = cache::Cache::open(dir, max).map_err(|e| {
                anyhow::anyhow!(
                    "cache.dir: cannot open {}: {e}; make it a writable folder",
                    dir.display()
                )
            })?;
            let cache = Arc::new(cache);
            metrics::CacheCollector::register(cache.clone())?;
            Some(cache)
        }
        None => None,
    };

    let edge = edge::Edge {
        balancer: balancer.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        snapshot: snapshot.clone(),
        budget: budget.clone(),
        warmup: warmup.clone(),
        dashboard: hub.clone(),
        media: Arc::new(media::MediaPath {
            fetcher: Arc::new(media::Fetcher {
                balancer: balancer.clone(),
                budget: budget.clone(),
                metrics: metrics.clone(),
                connector: pingora::connectors::TransportConnector::new(None),
            }),
            cache: cache.clone(),
            warmup: warmup.clone(),
            metrics: metrics.clone(),
        }),
        access_log: access_log.clone(),
        draining: draining.clone(),
        route_latency: metrics::RouteLatency::register()?,
    };
    // Our connection loop reads each request header (deadline, size,
    // pipelining) before Pingora's proxy answers it.
    let mut app = pingora::proxy::http_proxy(&server.configuration, edge);
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = h2c;
    options.h2_idle_timeout = Some(request_gate::KEEPALIVE);
    app.server_options = Some(options);
    let gate = request_gate::RequestGate {
        app: Arc::new(app),
        config: config.clone(),
    };
    let mut public = pingora::services::listening::Service::new("cdn-proxy".to_string(), gate);
    // Pingora reads each client connection through a buffer it keeps while
    // the connection is open; a small one keeps idle keep-alive connections cheap.
    let read_buffer = L4BufferSettings::default().read(client_read_buffer);
    for addr in &listen {
        public.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(read_buffer));
    }
    let mut certificates = tls::Certificates::default();
    for t in &tls_listeners {
        let settings = certificates.listener(t)?;
        let endpoint = ListenerConfig::tcp(t.listen.to_string()).tls(settings);
        public.add_listener(endpoint.l4_buffer(read_buffer));
    }
    let mut admin = pingora::services::listening::Service::new(
        "admin".to_string(),
        pingora::apps::http_app::HttpServer::new_app(admin::Admin {
            registry: registry.clone(),
            config: config.clone(),
            cache: cache.clone(),
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
        }),
    );
    admin.add_tcp(&admin_listen.to_string());

    let rater = select::Rater::new(
        registry.clone(),
        ratings.clone(),
        settings,
        balancer.clone(),
    );
    let monitor = monitor::Monitor {
        balancer,
        registry: registry.clone(),
        config: config.clone(),
        rediscover: rediscover.clone(),
        warmup,
    };
    let sidecar = hub.map(|hub| sidecar::Sidecar {
        config: dashboard,
        hub,
        snapshot: snapshot.clone(),
    });
    let snapshotter = metrics::Snapshotter {
        metrics: metrics.clone(),
        registry,
        ratings,
        config: config.clone(),
        latest: snapshot,
        cache: cache.clone(),
    };
    let shutdown_signal = Box::new(drain::DrainingSignal {
        config: config.clone(),
        draining,
    });
    let reloader = reload::Reloader {
        path: args.cdn_conf,
        config,
        rediscover,
        metrics,
        certificates: Arc::new(certificates),
        cache,
    };

    server.add_service(public);
    server.add_service(admin);
    server.add_service(background_service("purging", allocator::Purging));
    server.add_service(background_service("monitor", monitor));
    server.add_service(background_service("ratings", rater));
    server.add_service(background_service("snapshots", snapshotter));
    server.add_service(background_service("reload", reloader));
    if let Some(log) = access_log {
        server.add_service(background_service(
            "access log",
            access_log::Reopener { log },
        ));
    }
    if let Some(sidecar) = sidecar {
        server.add_service(background_service("dashboard", sidecar));
    }
    let https: Vec<_> = tls_listeners.iter().map(|t| t.listen).collect();
    tracing::info!(?listen, ?https, %admin_listen, "cdn-proxy starting");
    server.run(pingora::server::RunArgs { shutdown_signal });
    Ok(())
}
