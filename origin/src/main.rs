//! `cdn-origin`: wires the flags, the media folder, metrics, the load
//! sampler and fault injection into a hyper HTTP/1.1 server with graceful
//! shutdown. The work is done in the modules.

mod access;
mod allocator;
mod body;
mod cgroup;
mod cli;
mod fault_admin;
mod faults;
mod files;
mod load;
mod media;
mod metrics;
mod reply;
mod routes;
mod send_room;

use anyhow::{bail, Context};
use clap::Parser;
use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Request headers larger than this are refused with 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// At most this many request headers.
const MAX_HEADERS: usize = 64;
/// Unsent bytes a connection's socket queues before writes wait. Without a
/// bound the kernel queues megabytes for a client that reads slowly (its
/// send buffer grows to `tcp_wmem`'s maximum, 4 MiB by default); with it a
/// slow viewer costs its receive window plus this.
const NOTSENT_LOWAT: u32 = 128 * 1024;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    if let Some(cli::Command::Healthcheck) = args.command {
        return cdn_types::healthcheck::run("cdn-origin", args.listen, "/healthz");
    }
    if let Err(e) = start(args) {
        eprintln!("cdn-origin: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn start(args: cli::Args) -> anyhow::Result<()> {
    cdn_types::logging::init();
    allocator::return_freed_memory();
    // Each stream holds a socket and a file: raise the soft limit to the hard one.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("could not raise the open-file limit: {e}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: cli::Args) -> anyhow::Result<()> {
    if let Err(e) = args.faults.validate() {
        bail!("invalid fault flag: {e} (see --help)");
    }
    if !files::is_safe_relative(&args.default_file) {
        bail!(
            "--default {:?} must be a plain path inside the media folder (no '..', no leading '/')",
            args.default_file
        );
    }
    let media = files::Media::new(&args.media).context("--media")?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let name_header = HeaderValue::from_str(&name)
        .with_context(|| format!("--name {name:?} must be printable ASCII"))?;

    let sampler = load::LoadSampler::detect();
    let metrics = Arc::new(metrics::Metrics::new(
        &name,
        sampler.cpu_source(),
        sampler.mem_source(),
    )?);
    sampler.prime(&metrics);
    tokio::spawn(sampler.run(metrics.clone()));

    let path = args.access_log_path.as_deref();
    let access_log = cdn_types::access_log::AccessLog::start(args.access_log, path)
        .with_context(|| format!("--access-log-path {:?}: cannot open", path))?;
    if let Some(log) = access_log.clone() {
        tokio::spawn(reopen_on_sigusr1(log));
    }
    let fault_admin_token = match &args.fault_admin_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("--fault-admin-token-file {}", path.display()))?;
            let token = token.trim().to_string();
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("--fault-admin-token-file {}: the token must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 24`)", path.display());
            }
            Some(token)
        }
        None => None,
    };
    let app = Arc::new(routes::App {
        media,
        default_file: args.default_file.clone(),
        name: name_header,
        metrics,
        faults: faults::Faults::new(args.faults, args.fault_admin),
        draining: Default::default(),
        chunk_size: args.chunk_kib as usize * 1024,
        media_cache_control: cache_control(
            args.max_age,
            args.stale_while_revalidate,
            args.stale_if_error,
        ),
        manifest_cache_control: cache_control(args.manifest_max_age, 0, 0),
        access_log,
        fault_admin_token,
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    let addr = listener.local_addr()?;
    // The one line a script reads to learn the port.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, name, media = %app.media.root().display(), "cdn-origin started");

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => serve_connection(accepted, &app, &http, &graceful).await,
            () = &mut shutdown => break,
        }
    }

    // Draining: /healthz turns 503; keep accepting for the drain delay so
    // load balancers see it, then close the port and let streams finish.
    app.draining.store(true, Ordering::Relaxed);
    tracing::info!(drain_delay = ?args.drain_delay, grace = ?args.grace, "draining");
    let delay = tokio::time::sleep(args.drain_delay);
    tokio::pin!(delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => serve_connection(accepted, &app, &http, &graceful).await,
            () = &mut delay => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all streams finished"),
        () = tokio::time::sleep(args.grace) => tracing::warn!("grace period over; closing remaining streams"),
    }
    Ok(())
}

async fn serve_connection(
    accepted: std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
    app: &Arc<routes::App>,
    http: &http1::Builder,
    graceful: &GracefulShutdown,
) {
    let (stream, peer) = match accepted {
        Ok(a) => a,
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!(%peer, "TCP_NOTSENT_LOWAT: {e}");
    }
    // Streams size their chunks to this connection's send room.
    let room = match send_room::SendRoom::of(&stream) {
        Ok(room) => Some(room),
        Err(e) => {
            tracing::debug!(%peer, "no send room, streams use whole chunks: {e}");
            None
        }
    };
    let app = app.clone();
    let conn = http.serve_connection(
        TokioIo::new(stream),
        service_fn(move |mut req| {
            if let Some(room) = &room {
                req.extensions_mut().insert(room.clone());
            }
            routes::handle(app.clone(), peer, req)
        }),
    );
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    });
}

/// Reopens the access log file on SIGUSR1 (after logrotate moved it).
async fn reopen_on_sigusr1(log: Arc<cdn_types::access_log::AccessLog>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::error!("cannot listen for SIGUSR1; the access log will not be reopened");
        return;
    };
    while usr1.recv().await.is_some() {
        log.reopen();
        tracing::info!("access log reopened");
    }
}

/// `public, max-age=SECS`, with the stale extensions (RFC 5861) when not 0.
fn cache_control(secs: u32, stale_while_revalidate: u32, stale_if_error: u32) -> HeaderValue {
    let mut v = format!("public, max-age={secs}");
    if stale_while_revalidate > 0 {
        v.push_str(&format!(
            ", stale-while-revalidate={stale_while_revalidate}"
        ));
    }
    if stale_if_error > 0 {
        v.push_str(&format!(", stale-if-error={stale_if_error}"));
    }
    HeaderValue::try_from(v).expect("digits are a valid header value")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; SIGTERM will not drain");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
