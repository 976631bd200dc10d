//! SIGHUP reload under load, and refusal of an invalid file.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_under_load_without_errors() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 3);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let sections = default_sections(&addrs[..2]);
    let edge = start_proxy(&sections, 2).await;
    let (public, admin) = (edge.server.addr.port(), edge.admin.port());

    // Steady load through the whole reload.
    let load = {
        let url = edge.url();
        tokio::spawn(async move {
            let http = client();
            let (mut ok, mut failed) = (0u32, 0u32);
            let deadline = std::time::Instant::now() + Duration::from_secs(4);
            while std::time::Instant::now() < deadline {
                let good = match http
                    .get(format!("{url}/videos/sub/nested.mp4"))
                    .send()
                    .await
                {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok_and(|b| b.len() == 65536),
                    Err(_) => false,
                };
                if good {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed)
        })
    };
    // New origins, new weights, a new policy.
    let mut next = default_sections(&addrs);
    next.insert(
        "selection",
        "{policy: least_conn, weights: {cpu: 0.5, memory: 0.1, latency: 0.2, queue: 0.1, errors: 0.1}}".into(),
    );
    std::fs::write(&edge.cdn_yaml, render(public, admin, &next)).unwrap();
    edge.server.signal("HUP").unwrap();
    let applied = reloads(&edge, "applied", 1).await;
    assert_eq!(applied["config_reloads_refused"], 0);
    wait_origins_up(&edge, 3).await;

    // A file that would drop an origin, but whose weights sum to 1.2: it is
    // refused, and the running config (three origins) stays.
    let mut invalid = default_sections(&addrs[..2]);
    invalid.insert(
        "selection",
        "{weights: {cpu: 0.5, memory: 0.3, latency: 0.2, queue: 0.1, errors: 0.1}}".into(),
    );
    std::fs::write(&edge.cdn_yaml, render(public, admin, &invalid)).unwrap();
    edge.server.signal("HUP").unwrap();
    let after = reloads(&edge, "refused", 1).await;
    assert_eq!(
        after["config_reloads_applied"], 1,
        "the invalid file was applied"
    );
    assert_eq!(
        after["origins_total"], 3,
        "the refused file changed nothing"
    );
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 50, "{ok}");
    assert_eq!(failed, 0, "requests failed during reload");
    let (served, failed) = spread(&edge, "/", 90, 6).await;
    assert_eq!(failed, 0);
    assert!(
        served.get(&addrs[2].to_string()).copied().unwrap_or(0) > 0,
        "the added origin serves: {served:?}"
    );
}

/// Waits for a snapshot that counts `n` reloads with `result` (applied or
/// refused), and returns its `global` section.
async fn reloads(edge: &Edge, result: &str, n: u64) -> serde_json::Value {
    let key = format!("config_reloads_{result}");
    testkit::wait_until(
        &format!("{n} reload(s) {result}"),
        Duration::from_secs(10),
        || async {
            let global = metrics(edge).await["global"].clone();
            (global[&key] == n).then_some(global)
        },
    )
    .await
}
