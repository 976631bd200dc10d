//! The shape of `cdn.yaml`: every key, its type and its default. What the
//! types cannot say (sums, orderings, clashes) is checked in `validate.rs`.

use crate::origins::Ejection;
use crate::select::Selection;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The whole `cdn.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Public listeners (video, `/metrics`, `/prometheus`, `/healthz`).
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners, each with its certificates (`tls.rs`).
    pub tls: Vec<TlsListener>,
    /// HTTP/2 without TLS (prior knowledge, h2c) on the plain `listen` listeners.
    pub h2c: bool,
    /// The plain `listen` listeners answer requests for origins with a
    /// redirect (308) to the first `tls` listener; the proxy's own
    /// endpoints (`/healthz`, `/prometheus`...) are still answered there.
    pub redirect_to_https: bool,
    /// After SIGTERM, how long to go on serving with `/healthz` failing
    /// before the listeners close (`drain.rs`).
    #[serde(with = "humantime_serde")]
    pub drain_period: Duration,
    /// Reload when `cdn.yaml`, or a certificate, key or token file it
    /// names, changes, checked this often (`config_watch.rs`); 0: only on
    /// SIGHUP.
    #[serde(with = "humantime_serde")]
    pub watch_config: Duration,
    /// Operator listener (origins, drain, capacity); loopback by default.
    pub admin_listen: SocketAddr,
    /// The admin API's bearer token (required off loopback).
    pub admin_auth: AdminAuth,
    /// Size of the read buffer under each client connection, on every
    /// public listener; 0 (the default): none. Every open connection holds
    /// one, idle keep-alive ones included. Request headers are read whole
    /// by the request gate and bodies by Pingora into its own buffers, so
    /// the layer below is not needed. Pingora's default is 64 KiB.
    pub client_read_buffer: usize,
    /// A client's request header must be complete this long after its
    /// first byte (else `408` and the connection is closed).
    #[serde(with = "humantime_serde")]
    pub client_header_timeout: Duration,
    /// Largest client request header, in bytes (else `431`).
    pub client_max_header: usize,
    /// Response header naming the origin that served a request (empty: none).
    pub served_by_header: String,
    /// `served_by_header` as it is written on responses (its case kept),
    /// made once when the file is read rather than on every response.
    #[serde(skip)]
    pub served_by_name: Option<bytes::Bytes>,
    /// Header carrying each request's id to origins and back to the client
    /// (empty: none). A well-formed incoming id is kept, else one is made.
    pub request_id_header: String,
    /// `request_id_header` parsed once when the file is read.
    #[serde(skip)]
    pub request_id_name: Option<http::HeaderName>,
    /// One line per request (read at start).
    pub access_log: AccessLogConfig,
    /// Path prefixes sent to the origins; a path no route covers gets `404`.
    pub routes: Vec<OriginRoute>,
    /// `routes` indexes, longest prefix first, made when the file is read.
    #[serde(skip)]
    pub routes_by_length: Vec<usize>,
    /// Paths of the proxy's own endpoints on the public listeners.
    pub endpoints: Endpoints,
    /// What origins are told about the client.
    pub forwarded: Forwarded,
    /// Cross-origin access for player pages on other sites.
    pub cors: Cors,
    /// The origins: static addresses and DNS names.
    pub origins: Vec<OriginEntry>,
    /// DNS re-resolution.
    pub discovery: Discovery,
    /// How an origin is picked.
    pub selection: Selection,
    /// Active health checks.
    pub health: Health,
    /// Passive outlier ejection.
    pub ejection: Ejection,
    /// Retries on another origin.
    pub retry: Retry,
    /// Timeouts towards origins.
    pub timeouts: Timeouts,
    /// The media path: media GETs answered from slices fetched from origins.
    pub media: Media,
    /// The slice cache on disk (`cache/`).
    pub cache: CacheConfig,
    /// `cache.status_header` parsed once when the file is read.
    #[serde(skip)]
    pub cache_status_name: Option<http::HeaderName>,
    /// `cache.key_headers` parsed once when the file is read.
    #[serde(skip)]
    pub cache_key_parts: Vec<http::HeaderName>,
    /// The dashboard sidecar.
    pub dashboard: Dashboard,
}

/// The slice cache (`cache/`): slices of the media path stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The folder slices are stored in (created if missing); none: no
    /// cache. Read at start: a new folder needs a restart.
    pub dir: Option<std::path::PathBuf>,
    /// Most bytes of slice files kept; the least recently used go first.
    pub max_size: u64,
    /// Response header telling what the cache did (`HIT`, `MISS`, ...);
    /// empty: none.
    pub status_header: String,
    /// Request headers whose values are part of the cache key, after the
    /// path and query (e.g. `[host]` for origins that serve several sites).
    pub key_headers: Vec<String>,
    /// Hits to plain HTTP/1 clients are sent from their files by the
    /// kernel (`sendfile`); off: read and written by the proxy, as TLS
    /// and HTTP/2 always are.
    pub sendfile: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: None,
            max_size: 1024 * 1024 * 1024,
            status_header: "X-Cache".into(),
            key_headers: Vec::new(),
            sendfile: true,
        }
    }
}

/// Where the admin API's bearer token comes from (`admin.rs`); at most one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminAuth {
    /// A file holding the token (a Docker or Kubernetes secret; surrounding
    /// whitespace ignored).
    pub token_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub token_env: Option<String>,
    /// The token, read when the file is loaded; none: no authentication.
    #[serde(skip)]
    pub token: Option<String>,
}

/// The access log (`access_log.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// `off`, `combined` or `json`.
    pub format: cdn_types::access_log::Format,
    /// A file, appended to and reopened on SIGUSR1; none: stdout.
    pub path: Option<std::path::PathBuf>,
}

/// A path prefix whose requests go to the origins (`routes.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginRoute {
    /// Covers the path equal to it and every path under it (`/videos`:
    /// `/videos` and `/videos/...`, not `/videosx`).
    pub prefix: String,
    /// Media GETs here take the slice path (when `media.enabled`); off:
    /// proxied as they are (live segments that change, say).
    #[serde(default = "yes")]
    pub media: bool,
    /// Media GETs here are served from the cache and stored in it (when
    /// `cache.dir` is set); off: always fetched.
    #[serde(default = "yes")]
    pub cache: bool,
    /// The origins that serve it: those whose `pool` is this.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// `pool`'s bit (`origins/pools.rs`), set when the file is read.
    #[serde(skip)]
    pub pool_bit: u64,
}

/// Paths of the proxy's own endpoints; `""` switches one off (its path then
/// goes to the origins like any other).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    /// Liveness (`200 ok`), for probes and load balancers.
    pub healthz: String,
    /// The JSON snapshot.
    pub metrics: String,
    /// The Prometheus text.
    pub prometheus: String,
    /// The dashboard page and its files (this path and under it), when
    /// `dashboard.enabled`.
    pub dashboard: String,
    /// The dashboard's WebSocket, when `dashboard.enabled`.
    pub dashboard_socket: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            healthz: "/healthz".into(),
            metrics: "/metrics".into(),
            prometheus: "/prometheus".into(),
            dashboard: "/dashboard".into(),
            dashboard_socket: "/ws".into(),
        }
    }
}

/// One HTTPS listener (`tls.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    /// Address to listen on, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Certificate chains and keys; each serves the names in its
    /// certificate (SNI), the first also every other name and clients without SNI.
    pub certificates: Vec<CertificateFiles>,
    /// Offer HTTP/2 through ALPN (HTTP/1.1 is always offered).
    #[serde(default = "yes")]
    pub http2: bool,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The leaf certificate first, then its intermediates.
    pub cert: std::path::PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

fn yes() -> bool {
    true
}

/// Cross-origin access (`cors.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Page origins allowed (`https://player.example`), `*` for any; empty:
    /// CORS off (no headers added, `OPTIONS` goes to the origins).
    pub allowed_origins: Vec<String>,
    /// How long a browser may keep a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            allowed_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

/// What origins are told about the client (`forwarded.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarded {
    /// `X-Forwarded-For`: the client's address, appended.
    pub x_forwarded_for: bool,
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub x_forwarded_proto: bool,
    /// `X-Forwarded-Host`: the client's `Host`.
    pub x_forwarded_host: bool,
    /// RFC 7239 `Forwarded` (appended).
    pub forwarded: bool,
    /// Clients (addresses or CIDR ranges) whose incoming forwarding
    /// headers are kept and appended to; from any other client they are
    /// replaced.
    pub trusted_proxies: Vec<String>,
    /// `trusted_proxies` parsed once when the file is read.
    #[serde(skip)]
    pub trusted: Vec<ipnet::IpNet>,
}

impl Default for Forwarded {
    fn default() -> Self {
        // The two that nginx, HAProxy and Envoy users expect; each header
        // costs ~2k instructions per request through Pingora's header map.
        Forwarded {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: false,
            forwarded: false,
            trusted_proxies: Vec::new(),
            trusted: Vec::new(),
        }
    }
}

/// The media path: a GET of a media file is answered by the proxy itself
/// from aligned slices fetched with Range requests, each from the origin the
/// balancer picks, so a stream survives the origin serving it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    /// Whether media GETs take the slice path (off: every request is proxied as is).
    pub enabled: bool,
    /// Bytes per slice; slice `i` covers `[i·size, (i+1)·size)`, as nginx's slice module.
    pub slice_size: u64,
    /// Path extensions (without the dot, any case) that are media; empty: every GET.
    pub extensions: Vec<String>,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            enabled: true,
            slice_size: 1024 * 1024,
            extensions: [
                "mp4", "m4v", "m4a", "m4s", "mov", "webm", "mkv", "ts", "mp3", "aac", "ogg", "flac",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// The dashboard sidecar: its own listener, proxied from the public one at `/dashboard` and `/ws`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dashboard {
    /// Whether to run it.
    pub enabled: bool,
    /// Its listener (loopback: users reach it through the public listener).
    pub listen: SocketAddr,
    /// Time between snapshots pushed to clients.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Snapshots kept and sent to a new client first (300 at 1 s: five minutes).
    pub history: usize,
    /// Most dashboard clients at once.
    pub max_clients: usize,
    /// Most dashboard clients at once from one address (`429` past it).
    pub max_clients_per_ip: usize,
    /// Folder with the page (index.html, app.js, style.css).
    pub web_root: std::path::PathBuf,
    /// Chart.js's UMD build, from the npm package installed in dashboard/.
    pub chart_js: std::path::PathBuf,
}

impl Default for Dashboard {
    /// The sidecar's own defaults, on the loopback listener 127.0.0.1:8082.
    fn default() -> Self {
        let s = cdn_dashboard::Settings::default();
        Dashboard {
            enabled: true,
            listen: "127.0.0.1:8082".parse().expect("literal"),
            interval: s.interval,
            history: s.history,
            max_clients: s.max_clients,
            max_clients_per_ip: s.max_clients_per_ip,
            web_root: s.web_root,
            chart_js: s.chart_js,
        }
    }
}

/// One origin, or one DNS name standing for every address it resolves to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginEntry {
    /// `host:port`: an IP literal, or a name that must resolve when the file
    /// is loaded; re-resolved (first address) every `discovery.interval`.
    #[serde(default)]
    pub address: Option<String>,
    /// `name:port` re-resolved every `discovery.interval`; each A/AAAA record is an origin.
    #[serde(default)]
    pub dns: Option<String>,
    /// Relative capacity (weight): 2.0 takes about twice the traffic of 1.0.
    #[serde(default = "one")]
    pub capacity: f64,
    /// The pool it serves (`routes[].pool`); an address listed in several
    /// entries is in each of their pools.
    #[serde(default = "default_pool")]
    pub pool: String,
}

fn default_pool() -> String {
    crate::origins::pools::DEFAULT_POOL.to_owned()
}

fn one() -> f64 {
    1.0
}

/// DNS discovery settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// How often DNS names are re-resolved.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// DNS servers (`ip:port`) to ask; empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
}

/// Active health checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Time between checks of one origin.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A check slower than this fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Path checked on every origin (200 healthy, 503 draining).
    pub path: String,
    /// Consecutive passes that make a down origin up.
    pub rise: u32,
    /// Consecutive failures that make an up origin down.
    pub fall: u32,
}

/// Retries on a different origin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Most origins tried for one request (1: no retry).
    pub attempts: u32,
    /// Retries allowed as a fraction of requests (a retry budget, as Linkerd's).
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio.
    pub budget_min_per_sec: f64,
}

/// Timeouts towards origins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Each read from an origin, the response header included.
    #[serde(with = "humantime_serde")]
    pub read: Duration,
    /// Idle pooled connections to origins are closed after this.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// An origin's whole response header, however it trickles in.
    #[serde(with = "humantime_serde")]
    pub response_header: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["0.0.0.0:8080".parse().expect("literal")],
            tls: Vec::new(),
            h2c: false,
            redirect_to_https: false,
            drain_period: Duration::ZERO,
            watch_config: Duration::ZERO,
            admin_listen: "127.0.0.1:8081".parse().expect("literal"),
            admin_auth: AdminAuth::default(),
            client_read_buffer: 0,
            client_header_timeout: Duration::from_secs(10),
            client_max_header: 64 * 1024,
            served_by_header: "X-Served-By".into(),
            served_by_name: Some(bytes::Bytes::from_static(b"X-Served-By")),
            request_id_header: "X-Request-Id".into(),
            request_id_name: Some(http::HeaderName::from_static("x-request-id")),
            access_log: AccessLogConfig::default(),
            routes: vec![OriginRoute {
                prefix: "/".into(),
                media: true,
                cache: true,
                pool: default_pool(),
                pool_bit: crate::origins::pools::bit(crate::origins::pools::DEFAULT_POOL)
                    .unwrap_or(1),
            }],
            routes_by_length: vec![0],
            endpoints: Endpoints::default(),
            forwarded: Forwarded::default(),
            cors: Cors::default(),
            origins: Vec::new(),
            discovery: Discovery::default(),
            selection: Selection::default(),
            health: Health::default(),
            ejection: Ejection::default(),
            retry: Retry::default(),
            timeouts: Timeouts::default(),
            media: Media::default(),
            cache: CacheConfig::default(),
            cache_status_name: Some(http::HeaderName::from_static("x-cache")),
            cache_key_parts: Vec::new(),
            dashboard: Dashboard::default(),
        }
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            interval: Duration::from_secs(5),
            nameservers: Vec::new(),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            path: "/healthz".into(),
            rise: 2,
            fall: 2,
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_sec: 10.0,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            response_header: Duration::from_secs(10),
        }
    }
}

/// A `name:port` (or `ip:port`) as written in `origins[].address` and
/// `origins[].dns`: split once here, for validation and discovery alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The name or IP literal (brackets of an IPv6 literal kept).
    pub host: &'a str,
    /// The port.
    pub port: u16,
}

impl<'a> HostPort<'a> {
    /// Splits `text` at its last `:`; `None` unless both sides are present
    /// and the port is a number 0–65535.
    pub fn parse(text: &'a str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok()?;
        (!host.is_empty()).then_some(HostPort { host, port })
    }

    /// The host without IPv6 brackets, as a resolver wants it.
    pub fn name(&self) -> &'a str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}
