//! What the origin reports: catalog, Prometheus metrics, the in-band load
//! report and `/load`.

mod common;
use cdn_types::LoadReport;
use common::*;
use std::collections::HashMap;

#[tokio::test]
async fn catalog_lists_every_regular_file_with_its_validators() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    let http = client();
    for path in ["/videos", "/videos/"] {
        let resp = http.get(format!("{}{path}", o.url())).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let list: Vec<serde_json::Value> = resp.json().await.unwrap();
        let names: Vec<&str> = list.iter().map(|e| e["name"].as_str().unwrap()).collect();
        // Symlinks are served when they stay inside, but not listed.
        assert_eq!(names, ["clip.mp4", "empty.mp4", "sub/nested.mp4"]);
        let clip = &list[0];
        assert_eq!(clip["size"], media.clip.len() as u64);
        assert_eq!(clip["content_type"], "video/mp4");
        assert_eq!(clip["url"], "/videos/clip.mp4");
        assert!(clip["modified"].as_str().unwrap().ends_with('Z'));
        let head = http
            .head(format!("{}/videos/clip.mp4", o.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(clip["etag"], head.headers()["etag"].to_str().unwrap());
    }
}

fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), v))
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_with_conventional_names() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    let http = client();
    let get = |p: &str| http.get(format!("{}{p}", o.url())).send();
    let body = get("/videos/clip.mp4")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), media.clip.len());
    assert_eq!(get("/nope").await.unwrap().status(), 404);
    let resp = get("/metrics").await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = scrape(&resp.text().await.unwrap());
    assert_eq!(m["origin_requests_total{code=2xx}"], 1.0);
    assert_eq!(m["origin_requests_total{code=4xx}"], 1.0);
    assert!(m["origin_response_bytes_total{}"] >= media.clip.len() as f64);
    assert_eq!(m["origin_active_streams{}"], 0.0);
    assert!(m["origin_request_duration_seconds_count{}"] >= 2.0);
    assert!(m["process_cpu_seconds_total{}"] >= 0.0);
    assert!(m["process_resident_memory_bytes{}"] > 0.0);
    assert_eq!(m["origin_info{name=test-origin,version=0.1.0}"], 1.0);
    let cpu = m
        .iter()
        .find(|(k, _)| k.starts_with("origin_cpu_utilization_ratio{source="))
        .expect("cpu ratio");
    assert!(cpu.0.contains("source=process") || cpu.0.contains("source=cgroup"));
    assert!(m
        .keys()
        .any(|k| k.starts_with("origin_memory_utilization_ratio{source=")));
    // Rates are left to PromQL.
    assert!(!m
        .keys()
        .any(|k| k.starts_with("origin_requests_per_second")));
}

#[tokio::test]
async fn every_response_carries_a_parseable_load_report() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    let http = client();
    for path in [
        "/",
        "/videos/clip.mp4",
        "/videos",
        "/healthz",
        "/metrics",
        "/load",
        "/missing",
    ] {
        let resp = http.get(format!("{}{path}", o.url())).send().await.unwrap();
        let h = resp.headers()["endpoint-load-metrics"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(h.starts_with("TEXT cpu_utilization="), "{path}: {h}");
        let r = LoadReport::parse_orca_text(&h).unwrap();
        assert!(
            r.cpu_utilization >= 0.0 && r.mem_utilization > 0.0,
            "{path}: {r:?}"
        );
    }
    let load = get_json(&http, &o, "/load").await;
    assert_eq!(load["name"], "test-origin");
    for key in [
        "cpu_utilization",
        "mem_utilization",
        "rps_fractional",
        "active_streams",
    ] {
        assert!(load[key].is_number(), "{key} in {load}");
    }
    assert!(["process", "cgroup"].contains(&load["cpu_source"].as_str().unwrap()));
    assert!(["process", "cgroup"].contains(&load["mem_source"].as_str().unwrap()));
}

#[tokio::test]
async fn load_report_follows_traffic() {
    let media = MediaFixture::new().unwrap();
    // Capped bandwidth keeps a stream open long enough to be seen.
    let o = start_origin(&media, &["--fault-bandwidth", "1000000"]);
    let http = client();
    let mut stream = http
        .get(format!("{}/videos/clip.mp4", o.url()))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let resp = http
        .get(format!("{}/healthz", o.url()))
        .send()
        .await
        .unwrap();
    let r = LoadReport::parse_orca_text(resp.headers()["endpoint-load-metrics"].to_str().unwrap())
        .unwrap();
    assert_eq!(r.active_streams, 1, "the open stream is counted");
    drop(stream);
    // The request rate rises with traffic (sampled every 500 ms).
    let url = format!("{}/healthz", o.url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        for _ in 0..20 {
            http.get(&url).send().await.unwrap();
        }
        let load = get_json(&http, &o, "/load").await;
        if load["rps_fractional"].as_f64().unwrap() > 5.0 && load["active_streams"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rate never rose / stream never ended: {load}"
        );
    }
}
