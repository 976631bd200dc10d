//! Command-line flags.

use crate::faults::FaultSettings;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A minimal, fast video origin: serves a media folder over HTTP/1.1 with
/// exact Range and conditional semantics, and reports its own load.
#[derive(Debug, Parser)]
#[command(name = "cdn-origin", version)]
pub struct Args {
    /// Address to listen on. Port 0 picks a free port; the bound address is
    /// printed on stdout as `listening on ADDR`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// Folder whose files are served under /videos/ (subfolders included).
    #[arg(long, value_name = "DIR", default_value = "media")]
    pub media: PathBuf,

    /// Name reported in the X-Origin-Name header, /load and origin_info
    /// (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// File, relative to the media folder, that `GET /` serves.
    #[arg(long = "default", value_name = "FILE", default_value = "sample.mp4")]
    pub default_file: String,

    /// On SIGTERM/SIGINT, how long in-flight streams may take to finish before exit.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// On SIGTERM/SIGINT, how long to keep accepting (with /healthz at 503) so
    /// load balancers notice before the port closes.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

    /// Largest read per chunk of a stream, in KiB, for a client that keeps
    /// up (a slow client's chunks are what its socket takes, down to 16 KiB).
    #[arg(long, value_name = "KIB", default_value_t = 512, value_parser = clap::value_parser!(u32).range(4..=16384))]
    pub chunk_kib: u32,

    /// `Cache-Control: public, max-age=SECS` on media files, so that caches
    /// (the edge's included) keep them.
    #[arg(long, value_name = "SECS", default_value_t = 86400)]
    pub max_age: u32,

    /// Adds `stale-while-revalidate=SECS` to media files' Cache-Control
    /// (0: not sent): a cache may serve a stale copy that long while it
    /// checks it in the background.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stale_while_revalidate: u32,

    /// Adds `stale-if-error=SECS` to media files' Cache-Control (0: not
    /// sent): a cache may serve a stale copy that long when no origin answers.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stale_if_error: u32,

    /// `Cache-Control: public, max-age=SECS` on HLS playlists and DASH
    /// manifests (`.m3u8`, `.mpd`), which a live stream rewrites.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub manifest_max_age: u32,

    /// Enable POST /admin/faults (JSON, loopback clients only).
    #[arg(long)]
    pub fault_admin: bool,

    /// A file holding a bearer token for `/admin/faults`: with it, the admin
    /// answers any address that sends `Authorization: Bearer <token>` (and
    /// nothing else); without it, loopback only.
    #[arg(long, value_name = "FILE", requires = "fault_admin")]
    pub fault_admin_token_file: Option<PathBuf>,

    /// Access log: off, combined (nginx's format, our fields appended) or json.
    #[arg(long, value_name = "FORMAT", default_value = "off")]
    pub access_log: cdn_types::access_log::Format,

    /// Access log file (appended to, reopened on SIGUSR1); default: stdout.
    #[arg(long, value_name = "FILE")]
    pub access_log_path: Option<PathBuf>,

    #[command(flatten)]
    pub faults: FaultSettings,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET /healthz of the origin at --listen (a wildcard address is reached on
    /// loopback) and exit 0 if it answers 2xx, 1 otherwise: a container
    /// HEALTHCHECK with no shell tools.
    Healthcheck,
}
