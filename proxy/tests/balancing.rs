//! Distribution follows load: an origin that answers slowly gets clearly
//! less traffic; drained origins get none; the admin API works.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_gets_clearly_less_traffic() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 3).await;
    let http = client();
    set_faults(&http, &origins[0], r#"{"latency_ms": 100}"#).await;
    let (served, failed) = spread(&edge, "/videos/clip.mp4", 600, 24).await;
    assert_eq!(failed, 0);
    let slow = served.get(&addrs[0].to_string()).copied().unwrap_or(0);
    let fast: Vec<usize> = addrs[1..]
        .iter()
        .map(|a| served.get(&a.to_string()).copied().unwrap_or(0))
        .collect();
    println!("served: {served:?}");
    // A fair share would be 200; the slow origin must get clearly less than either fast one.
    assert!(
        slow * 3 < fast[0] && slow * 3 < fast[1],
        "slow origin got {slow}, fast ones {fast:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_reporting_high_cpu_lands_in_a_higher_tier_and_gets_less_traffic() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    // The origin reports 90 % CPU (a fault that sets its load report's
    // figure; that burning threads show there is cdn-origin's own test).
    // Real burning threads made this test about how busy the runner was:
    // a thread reported 0.35-0.5 CPU, near a tier bound, and the tier
    // flipped back mid-run on a busy CI machine. Full CPU alone is worth
    // 30 points (its weight); a first bound of 15 puts that clearly in
    // tier 1, past the hysteresis either way.
    let mut sections = default_sections(&addrs);
    sections.insert("selection", "{tier_bounds: [15, 50, 75]}".into());
    let edge = start_proxy(&sections, 3).await;
    let http = client();
    set_faults(&http, &origins[0], r#"{"cpu_report_floor": 0.9}"#).await;
    let hot = addrs[0].to_string();
    let why = testkit::wait_until(
        "the hot origin in tier 1 or above on its cpu points",
        Duration::from_secs(20),
        || async {
            // Traffic keeps the in-band reports coming.
            spread(&edge, "/videos/clip.mp4", 6, 2).await;
            let m = metrics(&edge).await;
            let o = m["origins"]
                .as_array()?
                .iter()
                .find(|o| o["address"] == hot)?
                .clone();
            (o["tier"].as_u64()? >= 1 && o["score_points"]["cpu"].as_f64()? > 0.0).then_some(o)
        },
    )
    .await;
    println!("hot origin: {why}");
    let (served, failed) = spread(&edge, "/videos/clip.mp4", 300, 6).await;
    println!("served: {served:?}");
    set_faults(&http, &origins[0], r#"{"reset": true}"#).await;
    assert_eq!(failed, 0);
    let n = |a: &std::net::SocketAddr| served.get(&a.to_string()).copied().unwrap_or(0);
    assert!(
        n(&addrs[0]) * 5 < n(&addrs[1]) && n(&addrs[0]) * 5 < n(&addrs[2]),
        "the hot origin should get only probes: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_origin_takes_a_share_at_idle() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 3).await;
    // One request at a time: no in-flight signal, so this is where argmin on noise would starve an origin.
    let (served, failed) = spread(&edge, "/videos/clip.mp4", 300, 1).await;
    assert_eq!(failed, 0);
    // A policy that compares idle origins on noise (argmin) leaves one at
    // the probes alone (one a second: 1–3 here). One that the rater measured
    // clearly slower (latency over 1.5× the fleet's, as happens to one origin
    // when other work shares this 2-core machine) is meant to get less: it
    // wins only when both candidates are it, 10–23 of 300 in such runs. On a
    // quiet machine each gets about a third.
    for a in &addrs {
        let n = served.get(&a.to_string()).copied().unwrap_or(0);
        assert!(n >= 6, "{a} got {n} of 300: {served:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_undrain_and_capacity() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 2).await;
    let http = client();
    let admin = format!("http://{}", edge.admin);
    let list: serde_json::Value = http
        .get(format!("{admin}/origins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    let r = http
        .post(format!("{admin}/origins/{}/drain", addrs[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        origin_state(&edge, addrs[0]).await.as_deref().map(|_| ()),
        Some(())
    );
    testkit::wait_until(
        "drained state",
        std::time::Duration::from_secs(5),
        || async {
            (origin_state(&edge, addrs[0]).await.as_deref() == Some("draining")).then_some(())
        },
    )
    .await;
    let (served, failed) = spread(&edge, "/", 100, 10).await;
    assert_eq!(failed, 0);
    assert_eq!(
        served.get(&addrs[0].to_string()),
        None,
        "a drained origin gets no new requests: {served:?}"
    );

    assert_eq!(
        http.post(format!("{admin}/origins/{}/undrain", addrs[0]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(format!("{admin}/origins/{}/capacity", addrs[1]))
        .body(r#"{"capacity": 3.5}"#)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["capacity"], 3.5);
    let r = http
        .post(format!("{admin}/origins/{}/capacity", addrs[1]))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{admin}/origins/10.9.9.9:1/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_is_selectable_in_the_config_and_serves() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    for policy in [
        "tier",
        "round_robin",
        "random",
        "least_conn",
        "p2c_ewma",
        "consistent",
    ] {
        let mut sections = default_sections(&addrs);
        sections.insert("selection", format!("{{policy: {policy}}}"));
        let edge = start_proxy(&sections, 3).await;
        // One at a time for consistent hashing: under its load bound, one
        // path stays on one origin (with more in flight it would spill over).
        let concurrency = if policy == "consistent" { 1 } else { 3 };
        let (served, failed) = spread(&edge, "/videos/clip.mp4", 60, concurrency).await;
        assert_eq!(failed, 0, "{policy}");
        if policy == "consistent" {
            assert_eq!(served.len(), 1, "{policy}: {served:?}");
        } else {
            assert!(served.len() >= 2, "{policy} should spread: {served:?}");
        }
    }
}
