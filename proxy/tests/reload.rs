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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_a_kubernetes_style_configmap_swap_without_a_signal() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("watch_config", "200ms".into());
    let edge = start_proxy(&sections, 1).await;
    let (public, admin) = (edge.server.addr.port(), edge.admin.port());
    let served_by = || async {
        let r = client()
            .get(format!("{}/videos/sub/nested.mp4", edge.url()))
            .send()
            .await
            .unwrap();
        let names: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        r.bytes().await.unwrap();
        names
    };
    assert!(served_by().await.contains(&"x-served-by".to_string()));

    // As the kubelet updates a mounted ConfigMap: cdn.yaml becomes a symlink
    // into `..data`, itself a symlink to a folder of this version, and a new
    // version is a new folder with `..data` swapped to it atomically.
    let dir = edge.cdn_yaml.parent().unwrap().to_path_buf();
    let version = |name: &str, header: &str| {
        let v = dir.join(name);
        std::fs::create_dir_all(&v).unwrap();
        let mut s = sections.clone();
        s.insert("served_by_header", header.into());
        std::fs::write(v.join("cdn.yaml"), render(public, admin, &s)).unwrap();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    };
    version("..2026_11_29_a", "X-Edge-A");
    let link = dir.join("cdn.yaml.link");
    std::os::unix::fs::symlink("..data/cdn.yaml", &link).unwrap();
    std::fs::rename(&link, &edge.cdn_yaml).unwrap();
    reloads(&edge, "applied", 1).await;
    assert!(served_by().await.contains(&"x-edge-a".to_string()));

    version("..2026_11_29_b", "X-Edge-B");
    reloads(&edge, "applied", 2).await;
    assert!(served_by().await.contains(&"x-edge-b".to_string()));

    // An invalid version is refused once, and the running config stays.
    let bad = dir.join("..2026_11_29_c");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("cdn.yaml"), "origins: []\n").unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink("..2026_11_29_c", &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    reloads(&edge, "refused", 1).await;
    assert!(served_by().await.contains(&"x-edge-b".to_string()));
    // Absence takes time to show: five more checks of the unchanged bad file.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = metrics(&edge).await;
    assert_eq!(m["global"]["config_reloads_applied"], 2);
    assert_eq!(
        m["global"]["config_reloads_refused"], 1,
        "refused once, not every tick"
    );
}
