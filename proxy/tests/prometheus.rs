//! `/prometheus` parses and carries the promised series.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_parses_and_has_the_promised_series() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 2);
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
    assert!(has("cdn_origin_up", Some(("state", "up"))));
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
    // No per-path labels.
    assert!(!scrape
        .samples
        .iter()
        .any(|s| s.labels.get("path").is_some()));
}
