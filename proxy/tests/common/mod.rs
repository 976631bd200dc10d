//! Starts real `cdn-origin`s and the real `cdn-proxy` on loopback ports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;
pub use testkit::{MediaFixture, Server};

/// Starts one `cdn-origin` over `media` on `listen` (port 0 for any).
pub fn start_origin_at(media: &MediaFixture, listen: &str, extra: &[&str]) -> Server {
    testkit::raise_fd_limit();
    let bin = testkit::workspace_bin_built("cdn-origin", "cdn-origin");
    let dir = media.path_str();
    let mut args = vec![
        "--listen",
        listen,
        "--media",
        &dir,
        "--default",
        "clip.mp4",
        "--fault-admin",
    ];
    args.extend_from_slice(extra);
    Server::start(&bin, &args).expect("cdn-origin starts")
}

/// Starts `n` origins on free ports.
pub fn start_origins(media: &MediaFixture, n: usize) -> Vec<Server> {
    (0..n)
        .map(|_| start_origin_at(media, "127.0.0.1:0", &[]))
        .collect()
}

/// A running proxy and the files it was started with.
pub struct Edge {
    pub server: Server,
    /// Where its JSON snapshot is (`endpoints.metrics`).
    pub metrics_path: &'static str,
    pub admin: SocketAddr,
    pub cdn_yaml: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Edge {
    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// The cdn.yaml sections tests use by default: fast health checks and short timeouts.
pub fn default_sections(origins: &[SocketAddr]) -> BTreeMap<&'static str, String> {
    let list: String = origins
        .iter()
        .map(|a| format!("\n  - address: {a}"))
        .collect();
    BTreeMap::from([
        ("origins", list),
        (
            "health",
            "{interval: 200ms, timeout: 500ms, rise: 1, fall: 1}".into(),
        ),
        ("discovery", "{interval: 500ms}".into()),
        ("timeouts", "{connect: 500ms, read: 2s, idle: 30s}".into()),
        (
            "retry",
            "{attempts: 3, budget_ratio: 0.5, budget_min_per_sec: 50}".into(),
        ),
        // Tests run in parallel; the dashboard has its own tests (dashboard/, e2e/).
        ("dashboard", "{enabled: false}".into()),
    ])
}

/// Renders cdn.yaml with the proxy's ports and the given sections.
pub fn render(public: u16, admin: u16, sections: &BTreeMap<&'static str, String>) -> String {
    let mut y = format!("listen: [\"127.0.0.1:{public}\"]\nadmin_listen: 127.0.0.1:{admin}\n");
    for (k, v) in sections {
        y.push_str(&format!("{k}: {v}\n"));
    }
    y
}

/// Starts the proxy with `sections` and waits until `expect_up` origins are up.
pub async fn start_proxy(sections: &BTreeMap<&'static str, String>, expect_up: usize) -> Edge {
    start_proxy_at(sections, expect_up, "/metrics").await
}

/// As `start_proxy`, with the JSON snapshot moved to `metrics_path`.
pub async fn start_proxy_at(
    sections: &BTreeMap<&'static str, String>,
    expect_up: usize,
    metrics_path: &'static str,
) -> Edge {
    start_proxy_with_grace(sections, expect_up, metrics_path, (0, 1)).await
}

/// As `start_proxy_at`, with Pingora's `grace_period_seconds` and
/// `graceful_shutdown_timeout_seconds` (the tests' default: 0 and 1).
pub async fn start_proxy_with_grace(
    sections: &BTreeMap<&'static str, String>,
    expect_up: usize,
    metrics_path: &'static str,
    (grace, shutdown_timeout): (u32, u32),
) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (testkit::reserve_port(), testkit::reserve_port());
    let cdn_yaml = dir.path().join("cdn.yaml");
    std::fs::write(&cdn_yaml, render(public, admin, sections)).unwrap();
    let pingora_yaml = dir.path().join("pingora.yaml");
    std::fs::write(
        &pingora_yaml,
        format!(
            "---\nversion: 1\nthreads: 2\npid_file: {d}/proxy.pid\nupgrade_sock: {d}/upgrade.sock\n\
             grace_period_seconds: {grace}\ngraceful_shutdown_timeout_seconds: {shutdown_timeout}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{public}").parse().unwrap();
    let (cdn, pingora) = (cdn_yaml.clone(), pingora_yaml.clone());
    // Starting polls with blocking reads: on the blocking pool, not a worker.
    let server = tokio::task::spawn_blocking(move || {
        Server::start_ready(
            env!("CARGO_BIN_EXE_cdn-proxy").as_ref(),
            &[
                "--cdn-conf",
                cdn.to_str().unwrap(),
                "-c",
                pingora.to_str().unwrap(),
            ],
            addr,
            "/healthz",
        )
    })
    .await
    .unwrap()
    .expect("cdn-proxy starts");
    let edge = Edge {
        server,
        metrics_path,
        admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        cdn_yaml,
        dir,
    };
    wait_origins_up(&edge, expect_up).await;
    edge
}

/// A series' value from `/prometheus`, 0 if absent.
pub async fn series(edge: &Edge, name: &str) -> f64 {
    let text = prometheus_text(edge).await;
    let line = text.lines().find(|l| l.split(' ').next() == Some(name));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// GET /metrics from the proxy, parsed.
pub async fn metrics(edge: &Edge) -> serde_json::Value {
    let r = testkit::raw_get_async(edge.server.addr, edge.metrics_path)
        .await
        .expect("GET /metrics");
    serde_json::from_slice(&r.body).expect("/metrics is JSON")
}

/// Waits until the snapshot shows `n` origins up.
pub async fn wait_origins_up(edge: &Edge, n: usize) {
    let what = format!("{n} origins up");
    testkit::wait_until(&what, Duration::from_secs(20), || async {
        (metrics(edge).await["global"]["origins_up"] == n).then_some(())
    })
    .await;
}

/// The state the snapshot reports for the origin at `addr`.
pub async fn origin_state(edge: &Edge, addr: SocketAddr) -> Option<String> {
    let m = metrics(edge).await;
    m["origins"]
        .as_array()?
        .iter()
        .find(|o| o["address"] == addr.to_string())
        .map(|o| o["state"].as_str().unwrap_or("").to_string())
}

/// GET /prometheus from the proxy.
pub async fn prometheus_text(edge: &Edge) -> String {
    let r = client()
        .get(format!("{}/prometheus", edge.url()))
        .send()
        .await
        .expect("GET /prometheus");
    r.text().await.expect("text")
}

/// An async client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `POST` JSON to an origin's fault admin.
pub async fn set_faults(http: &reqwest::Client, origin: &Server, json: &str) {
    let r = http
        .post(format!("{}/admin/faults", origin.url()))
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Counts by `X-Served-By` over `n` GETs of `path` from `conc` clients,
/// each sending its next request when the last one is done (a closed loop,
/// as real clients do). Returns the counts and the number of failures.
pub async fn spread(
    edge: &Edge,
    path: &str,
    n: usize,
    conc: usize,
) -> (BTreeMap<String, usize>, usize) {
    let http = client();
    let url = format!("{}{path}", edge.url());
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
    let workers = (0..conc).map(|_| {
        let (http, url, left) = (http.clone(), url.clone(), left.clone());
        tokio::spawn(async move {
            let (mut served, mut failed) = (BTreeMap::<String, usize>::new(), 0);
            while left
                .fetch_update(SeqCst, SeqCst, |l| l.checked_sub(1))
                .is_ok()
            {
                let res = async {
                    let r = http
                        .get(&url)
                        .header("range", "bytes=0-1023")
                        .send()
                        .await
                        .ok()?;
                    let by = r.headers().get("x-served-by")?.to_str().ok()?.to_string();
                    let ok = r.status() == 206;
                    r.bytes().await.ok()?;
                    ok.then_some(by)
                };
                match res.await {
                    Some(by) => *served.entry(by).or_insert(0) += 1,
                    None => failed += 1,
                }
            }
            (served, failed)
        })
    });
    let mut served = BTreeMap::new();
    let mut failed = 0;
    for w in futures_util::future::join_all(workers).await {
        let (s, f) = w.expect("worker");
        failed += f;
        for (k, v) in s {
            *served.entry(k).or_insert(0) += v;
        }
    }
    (served, failed)
}

/// The range and conditional cases the media and cache tests compare with
/// the origin: (file, request headers), for the clip of `size` bytes with
/// its `etag` and `modified` date, around slices of `s` bytes.
pub fn range_matrix(
    etag: &str,
    modified: &str,
    size: usize,
    s: usize,
) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        ("clip.mp4", vec![]),
        ("clip.mp4", vec![("range", "bytes=0-".into())]),
        ("clip.mp4", vec![("range", "bytes=0-0".into())]),
        (
            "clip.mp4",
            vec![("range", format!("bytes={}-{}", s - 1, s))],
        ),
        (
            "clip.mp4",
            vec![("range", format!("bytes={}-{}", s, 2 * s - 1))],
        ),
        ("clip.mp4", vec![("range", "bytes=100000-300000".into())]),
        ("clip.mp4", vec![("range", "bytes=-10".into())]),
        ("clip.mp4", vec![("range", format!("bytes=-{}", s + 7))]),
        ("clip.mp4", vec![("range", "bytes=-50000000".into())]),
        ("clip.mp4", vec![("range", format!("bytes={}-", size - 1))]),
        (
            "clip.mp4",
            vec![("range", format!("bytes={}-", 48 * s + 3))],
        ),
        ("clip.mp4", vec![("range", format!("bytes={size}-"))]),
        ("clip.mp4", vec![("range", "bytes=0-9,70000-70009".into())]),
        ("clip.mp4", vec![("range", "bytes=abc".into())]),
        (
            "clip.mp4",
            vec![
                ("range", "bytes=70000-".into()),
                ("if-range", etag.to_string()),
            ],
        ),
        (
            "clip.mp4",
            vec![
                ("range", "bytes=70000-".into()),
                ("if-range", "\"old\"".into()),
            ],
        ),
        (
            "clip.mp4",
            vec![
                ("range", "bytes=70000-80000".into()),
                ("if-range", modified.to_string()),
            ],
        ),
        (
            "clip.mp4",
            vec![
                ("range", "bytes=70000-80000".into()),
                ("if-range", "Mon, 01 Jan 2001 00:00:00 GMT".into()),
            ],
        ),
        ("clip.mp4", vec![("if-none-match", etag.to_string())]),
        (
            "clip.mp4",
            vec![
                ("if-none-match", "\"other\"".into()),
                ("range", "bytes=5-70000".into()),
            ],
        ),
        ("clip.mp4", vec![("if-match", "\"other\"".into())]),
        (
            "clip.mp4",
            vec![
                ("if-match", etag.to_string()),
                ("range", "bytes=65000-140000".into()),
            ],
        ),
        (
            "clip.mp4",
            vec![("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT".into())],
        ),
        (
            "clip.mp4",
            vec![(
                "if-unmodified-since",
                "Mon, 01 Jan 2001 00:00:00 GMT".into(),
            )],
        ),
        ("empty.mp4", vec![]),
        ("empty.mp4", vec![("range", "bytes=0-".into())]),
        ("missing.mp4", vec![]),
        ("sub/nested.mp4", vec![("range", "bytes=10-65545".into())]),
    ]
}

/// The headers a client reads that must be the origin's own.
pub const COMPARED: [&str; 7] = [
    "content-range",
    "content-length",
    "content-type",
    "etag",
    "last-modified",
    "accept-ranges",
    "cache-control",
];

/// Sends the same GET of `/videos/{file}` with `headers` to the origin at
/// `origin` and the edge at `edge`, and checks that the edge's status, the
/// [`COMPARED`] headers and the body are the origin's (`what` names the
/// case in failures). Returns the edge's `X-Cache`, if any.
pub async fn same_as_origin(
    http: &reqwest::Client,
    origin: &str,
    edge: &str,
    file: &str,
    headers: &[(&str, String)],
    what: &str,
) -> Option<String> {
    let get = |base: &str| {
        let mut req = http.get(format!("{base}/videos/{file}"));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        req.send()
    };
    let want = get(origin).await.unwrap();
    let got = get(edge).await.unwrap();
    assert_eq!(got.status(), want.status(), "{what}");
    for h in COMPARED {
        assert_eq!(got.headers().get(h), want.headers().get(h), "{what}: {h}");
    }
    let x_cache = (got.headers().get("x-cache")).map(|v| v.to_str().unwrap().to_string());
    let (want, got) = (want.bytes().await.unwrap(), got.bytes().await.unwrap());
    assert!(
        want == got,
        "{what}: body differs ({} vs {} bytes)",
        got.len(),
        want.len()
    );
    x_cache
}
