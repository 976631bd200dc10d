//! Fault injection, by flag and through `POST /admin/faults`, and that the
//! load report shows what the faults do.

mod common;
use common::*;
use std::time::{Duration, Instant};

async fn post_faults(http: &reqwest::Client, o: &Server, json: &str) -> (u16, String) {
    let r = http
        .post(format!("{}/admin/faults", o.url()))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn cpu(http: &reqwest::Client, o: &Server) -> f64 {
    let load = get_json(http, o, "/load").await;
    load["cpu_utilization"].as_f64().unwrap()
}

#[tokio::test]
async fn admin_validates_and_reports_settings() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &["--fault-admin"]);
    let http = client();
    let (st, body) = post_faults(&http, &o, r#"{"latency_ms": 5, "error_rate": 0.0}"#).await;
    assert_eq!(st, 200, "{body}");
    let now = get_json(&http, &o, "/admin/faults").await;
    assert_eq!(now["latency_ms"], 5);
    assert_eq!(post_faults(&http, &o, "{not json").await.0, 400);
    assert_eq!(
        post_faults(&http, &o, r#"{"latency": 5}"#).await.0,
        400,
        "unknown field"
    );
    let (st, body) = post_faults(&http, &o, r#"{"error_rate": 2}"#).await;
    assert_eq!(st, 422);
    assert!(body.contains("error_rate"), "{body}");
    let r = http
        .delete(format!("{}/admin/faults", o.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
}

#[tokio::test]
async fn error_rate_and_latency() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &["--fault-admin", "--fault-error-rate", "1.0"]);
    let http = client();
    let url = format!("{}/videos/clip.mp4", o.url());
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 503);
    }
    // Health and metrics are not media: unaffected.
    assert_eq!(
        http.get(format!("{}/healthz", o.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    post_faults(&http, &o, r#"{"error_rate": 1.0, "error_status": 500}"#).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 500);
    post_faults(&http, &o, r#"{"reset": true, "latency_ms": 300}"#).await;
    let t = Instant::now();
    let r = http
        .get(&url)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    // An injected delay is a lower bound, whatever the machine's speed.
    assert!(t.elapsed() >= Duration::from_millis(300));
}

/// Fetches the first `len` bytes of the clip from an origin capped at
/// 400 kB/s, checks them, and returns how long it took.
async fn capped_range_get(len: usize) -> Duration {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &["--fault-bandwidth", "400000"]);
    let t = Instant::now();
    let body = client()
        .get(format!("{}/videos/clip.mp4", o.url()))
        .header("range", format!("bytes=0-{}", len - 1))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, &media.clip[..len]);
    t.elapsed()
}

#[tokio::test]
async fn bandwidth_cap_paces_a_stream() {
    // 400 kB at 400 kB/s: the cap makes it last at least most of a second.
    let took = capped_range_get(400_000).await;
    assert!(took >= Duration::from_millis(850), "took {took:?}");
}

#[tokio::test]
async fn bandwidth_cap_paces_a_body_smaller_than_one_chunk() {
    // 40 kB at 400 kB/s is 100 ms, although it fits in one read.
    let took = capped_range_get(40_000).await;
    assert!(took >= Duration::from_millis(90), "took {took:?}");
}

#[tokio::test]
async fn concurrency_limit_queues_requests() {
    let media = MediaFixture::new().unwrap();
    // One stream at a time, each slowed so the second must wait for the first.
    let o = start_origin(
        &media,
        &["--fault-concurrency", "1", "--fault-bandwidth", "2000000"],
    );
    let http = client();
    let url = format!("{}/videos/clip.mp4", o.url());
    let mut first = http.get(&url).send().await.unwrap();
    first.chunk().await.unwrap();
    let second = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&url)
                .header("range", "bytes=0-9")
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // While the first stream is open the second waits for its slot: the
    // origin reports it queued (without the limit it would never queue).
    testkit::wait_until(
        "the second request to queue",
        Duration::from_secs(10),
        || async {
            let text = http
                .get(format!("{}/metrics", o.url()))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .any(|l| l == "origin_queued_requests 1")
                .then_some(())
        },
    )
    .await;
    assert!(!second.is_finished(), "a queued request has no answer yet");
    let mut n = 0;
    while let Some(c) = first.chunk().await.unwrap() {
        n += c.len();
    }
    assert!(n > 0);
    assert_eq!(second.await.unwrap(), 206);
}

#[tokio::test]
async fn hang_accepts_but_never_answers_until_cleared() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &["--fault-admin", "--fault-hang"]);
    let http = client();
    let r = http
        .get(format!("{}/healthz", o.url()))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout(), "a hung origin must not answer");
    // The admin endpoint still answers, so the fault can be lifted.
    assert_eq!(post_faults(&http, &o, r#"{"hang": false}"#).await.0, 200);
    assert_eq!(
        http.get(format!("{}/healthz", o.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn cpu_burn_shows_in_cpu_utilization() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &["--fault-admin"]);
    let http = client();
    assert_eq!(
        post_faults(&http, &o, r#"{"cpu_burn_threads": 2}"#).await.0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = 0.0;
    while Instant::now() < deadline && seen < 0.4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = cpu(&http, &o).await;
    }
    assert!(
        seen >= 0.4,
        "two burning threads on this machine must show, saw {seen}"
    );
    assert_eq!(
        post_faults(&http, &o, r#"{"cpu_burn_threads": 0}"#).await.0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && seen > 0.2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = cpu(&http, &o).await;
    }
    assert!(seen <= 0.2, "burn stopped but cpu stays at {seen}");
}

#[tokio::test]
async fn a_cpu_report_floor_shows_in_the_load_report_and_header() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &["--fault-admin"]);
    let http = client();
    assert!(cpu(&http, &o).await < 0.5, "idle");
    let (st, body) = post_faults(&http, &o, r#"{"cpu_report_floor": 1.5}"#).await;
    assert_eq!(st, 422);
    assert!(body.contains("cpu_report_floor"), "{body}");
    assert_eq!(
        post_faults(&http, &o, r#"{"cpu_report_floor": 0.9}"#)
            .await
            .0,
        200
    );
    assert_eq!(cpu(&http, &o).await, 0.9);
    // The in-band report on every response says so too (ORCA text).
    let r = http
        .get(format!("{}/videos/clip.mp4", o.url()))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    let report = r.headers()[cdn_types::LOAD_HEADER].to_str().unwrap();
    assert!(report.contains("cpu_utilization=0.9000"), "{report}");
    assert_eq!(post_faults(&http, &o, r#"{"reset": true}"#).await.0, 200);
    assert!(cpu(&http, &o).await < 0.5, "the measured figure again");
}

#[tokio::test]
async fn with_a_token_the_fault_admin_wants_it() {
    let media = MediaFixture::new().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "fault-admin-token-0123456789\n").unwrap();
    let o = start_origin(
        &media,
        &[
            "--fault-admin",
            "--fault-admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    let http = client();
    let url = format!("{}/admin/faults", o.url());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "loopback alone is not enough with a token");
    assert!(r.headers().contains_key("www-authenticate"));
    let wrong = http
        .get(&url)
        .bearer_auth("fault-admin-token-x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .post(&url)
        .bearer_auth("fault-admin-token-0123456789")
        .body(r#"{"latency_ms": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("\"latency_ms\":1"));
}
