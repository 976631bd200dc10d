//! `/prometheus` parses and carries the promised series.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_parses_and_has_the_promised_series() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 2).await;
    let (_, failed) = spread(&edge, "/", 20, 2).await;
    assert_eq!(failed, 0);
    let text = prometheus_text(&edge).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition");
    let has = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .any(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
    };
    let o = addrs[0].to_string();
    for name in [
        "cdn_active_streams",
        "cdn_origin_score",
        "cdn_origin_tier",
        "cdn_origin_cpu_ratio",
        "cdn_origin_memory_ratio",
        "cdn_ejections_total",
    ] {
        assert!(
            has(name, Some(("origin", &o))),
            "{name}{{origin={o}}} missing"
        );
    }
    assert!(has("cdn_origin_up", Some(("origin", &o))));
    assert!(has("cdn_retries_total", None));
    assert!(has("cdn_ttfb_seconds_count", None), "TTFB histogram");
    assert!(has("cdn_response_bytes_total", None));
    let total: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "cdn_requests_total" && s.labels.get("code") == Some("2xx"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 20.0);
    // The edge's own answers have their counter (the scrapes above are in it).
    let value = |name: &str, labels: &[(&str, &str)]| {
        (scrape.samples.iter())
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name}{labels:?} missing"))
    };
    // One state series per state, the current one at 1.
    assert_eq!(
        value("cdn_origin_state", &[("origin", &o), ("state", "up")]),
        1.0
    );
    assert_eq!(
        value("cdn_origin_state", &[("origin", &o), ("state", "down")]),
        0.0
    );
    assert_eq!(
        value("cdn_origin_state", &[("origin", &o), ("state", "draining")]),
        0.0
    );
    assert!(
        value(
            "cdn_local_responses_total",
            &[("endpoint", "metrics"), ("code", "2xx")]
        ) >= 1.0
    );
    assert_eq!(
        value("cdn_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let loaded = value("cdn_config_last_reload_success_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(loaded > now - 600.0 && loaded <= now, "{loaded}");
    // What clients waited for their response header, by route (the default one).
    assert_eq!(
        value("cdn_client_ttfb_seconds_count", &[("route", "/")]),
        20.0
    );
    // CPU time with its fraction (the crate's own collector counted whole seconds).
    let cpu = value("process_cpu_seconds_total", &[]);
    assert!(cpu > 0.0 && cpu.fract() != 0.0, "{cpu}");
    // No per-path labels.
    assert!(!scrape
        .samples
        .iter()
        .any(|s| s.labels.get("path").is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_hangs_up_mid_body_is_still_counted() {
    use std::io::{Read, Write};
    let media = MediaFixture::new().unwrap();
    // A large sparse file: the body is still flowing when the client leaves.
    std::fs::File::create(media.path().join("big.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let origins = start_origins(&media, 1);
    let edge = start_proxy(&default_sections(&[origins[0].addr]), 1).await;
    let mut s = std::net::TcpStream::connect(edge.server.addr).unwrap();
    s.write_all(b"GET /videos/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    let counted = format!(
        "cdn_requests_total{{code=\"2xx\",origin=\"{}\"}} 1",
        origins[0].addr
    );
    testkit::wait_until(
        "the request to be counted",
        std::time::Duration::from_secs(10),
        || async {
            let r = testkit::raw_get_async(edge.server.addr, "/prometheus")
                .await
                .unwrap();
            String::from_utf8_lossy(&r.body)
                .contains(&counted)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_is_not_counted_as_a_5xx() {
    use std::io::Write;
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &["--fault-latency-ms", "1000"]);
    // The plain proxy path: Pingora watches the client while it waits for the origin.
    let mut sections = default_sections(&[origin.addr]);
    sections.insert("media", "{enabled: false}".into());
    let edge = start_proxy(&sections, 1).await;
    let mut s = std::net::TcpStream::connect(edge.server.addr).unwrap();
    s.write_all(b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\n\r\n")
        .unwrap();
    // Wait until the request is at the origin, then hang up.
    testkit::wait_until(
        "the request to reach the origin",
        std::time::Duration::from_secs(10),
        || async {
            let text = prometheus_text(&edge).await;
            text.lines()
                .any(|l| l.starts_with("cdn_active_streams") && l.ends_with(" 1"))
                .then_some(())
        },
    )
    .await;
    // A reset, not a FIN: the proxy's write of the answer then fails, as
    // it does for a player that is closed or a load generator that stops.
    socket2::SockRef::from(&s)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(s);
    let text = testkit::wait_until(
        "the request to be counted",
        std::time::Duration::from_secs(10),
        || async {
            let text = prometheus_text(&edge).await;
            text.contains("cdn_client_closed_total 1").then_some(text)
        },
    )
    .await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("cdn_requests_total{code=\"5xx\"") && !l.ends_with(" 0")),
        "{text}"
    );
}
