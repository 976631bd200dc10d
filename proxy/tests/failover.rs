//! Failover: a killed origin, a hung origin, all origins down and back,
//! passive ejection on 5xx.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_origin_under_steady_load_fails_no_request() {
    let media = MediaFixture::new().unwrap();
    let mut origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 3).await;
    let load = tokio::spawn({
        let url = format!("{}/videos/sub/nested.mp4", edge.url());
        async move {
            let http = client();
            let (mut ok, mut failed) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                let futs = (0..8).map(|_| http.get(&url).send());
                for r in futures_util::future::join_all(futs).await {
                    match r {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(b) if b.len() == 65536 => ok += 1,
                            Ok(b) => failed.push(format!("short body: {} bytes", b.len())),
                            Err(e) => failed.push(e.to_string()),
                        },
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
            }
            (ok, failed)
        }
    });
    // Let traffic flow, then kill one origin outright.
    testkit::wait_until(
        "traffic on every origin",
        Duration::from_secs(10),
        || async {
            let m = metrics(&edge).await;
            m["origins"]
                .as_array()?
                .iter()
                .all(|o| o["requests_total"].as_u64() > Some(0))
                .then_some(())
        },
    )
    .await;
    drop(origins.remove(1));
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 100, "only {ok} requests completed");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    testkit::wait_until(
        "the killed origin shows down",
        Duration::from_secs(5),
        || async {
            matches!(
                origin_state(&edge, addrs[1]).await.as_deref(),
                Some("down" | "ejected")
            )
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_origin_is_left_within_the_timeout() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let mut sections = default_sections(&addrs);
    sections.insert("timeouts", "{connect: 500ms, read: 1s, idle: 30s}".into());
    // Slow health checks, so the retry path (not the health check) is what is tested.
    sections.insert(
        "health",
        "{interval: 30s, timeout: 500ms, rise: 1, fall: 1}".into(),
    );
    let edge = start_proxy(&sections, 2).await;
    let http = client();
    set_faults(&http, &origins[0], r#"{"hang": true}"#).await;
    for _ in 0..6 {
        let t = Instant::now();
        let r = http
            .get(format!("{}/videos/clip.mp4", edge.url()))
            .header("range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["x-served-by"], addrs[1].to_string().as_str());
        // At most one read timeout (1 s) before moving on, plus slack for a loaded machine.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_that_died_before_a_health_check_noticed_get_503_not_502() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let mut sections = default_sections(&addrs);
    // Checks too rare to notice within the test: the proxy still thinks every
    // origin is up when the requests arrive.
    sections.insert(
        "health",
        "{interval: 1m, timeout: 500ms, rise: 1, fall: 1}".into(),
    );
    let edge = start_proxy(&sections, 3).await;
    drop(origins);
    for _ in 0..10 {
        let r = testkit::raw_get_async(edge.server.addr, "/videos/sub/nested.mp4")
            .await
            .unwrap();
        assert_eq!(r.status, 503, "every origin refused the connection");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(String::from_utf8_lossy(&r.body).contains("no origin"));
    }
    assert_eq!(
        metrics(&edge).await["global"]["origins_up"],
        3,
        "the health checks had not noticed yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_is_a_prompt_503_then_recovery() {
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &[]);
    let addr = origin.addr;
    let edge = start_proxy(&default_sections(&[addr]), 1).await;
    drop(origin);
    let r = testkit::wait_until("a 503", Duration::from_secs(10), || async {
        let r = testkit::raw_get_async(edge.server.addr, "/").await.ok()?;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&r.body).contains("no origin"));
    // Back on the same port: traffic returns once a health check passes.
    // (Polled on real requests: /metrics is a snapshot up to a second old.)
    let _again = start_origin_at(&media, &addr.to_string(), &[]);
    testkit::wait_until("recovery", Duration::from_secs(10), || async {
        (testkit::raw_get_async(edge.server.addr, "/")
            .await
            .ok()?
            .status
            == 200)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_an_origin() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let mut sections = default_sections(&addrs);
    sections.insert(
        "ejection",
        "{consecutive_failures: 3, base: 30s, max: 60s}".into(),
    );
    let edge = start_proxy(&sections, 2).await;
    let http = client();
    // 500 is not retried (only 502/503 are), so clients see these failures: the point is the ejection.
    set_faults(
        &http,
        &origins[0],
        r#"{"error_rate": 1.0, "error_status": 500}"#,
    )
    .await;
    testkit::wait_until("ejection", Duration::from_secs(20), || async {
        let _ = testkit::raw_get_async(edge.server.addr, "/videos/sub/nested.mp4").await;
        (origin_state(&edge, addrs[0]).await.as_deref() == Some("ejected")).then_some(())
    })
    .await;
    let (served, failed) = spread(&edge, "/", 50, 5).await;
    assert_eq!(failed, 0);
    assert_eq!(served.get(&addrs[0].to_string()), None, "{served:?}");
    let text = prometheus_text(&edge).await;
    assert!(
        text.contains(&format!("cdn_ejections_total{{origin=\"{}\"}} 1", addrs[0])),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_503_is_retried_elsewhere() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let mut sections = default_sections(&addrs);
    sections.insert(
        "ejection",
        "{consecutive_failures: 0, base: 1s, max: 1s}".into(),
    );
    let edge = start_proxy(&sections, 2).await;
    let http = client();
    set_faults(
        &http,
        &origins[0],
        r#"{"error_rate": 1.0, "error_status": 503}"#,
    )
    .await;
    let (served, failed) = spread(&edge, "/", 100, 4).await;
    assert_eq!(failed, 0, "{served:?}");
    assert_eq!(served.get(&addrs[1].to_string()), Some(&100));
    let text = prometheus_text(&edge).await;
    let retries: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cdn_retries_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Requests that picked the failing origin first were retried (the rest went straight to the good one).
    assert!(retries >= 1.0, "no retries counted");
}
