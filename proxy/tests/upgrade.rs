//! Pingora's graceful upgrade: a new process started with `-u` takes the
//! listening sockets over from the old one on SIGQUIT, with no failed request.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_listener_over_without_errors() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let mut old = start_proxy(&default_sections(&addrs), 2).await;
    let pingora_yaml = old.dir.path().join("pingora.yaml");

    let load = {
        let url = old.url();
        tokio::spawn(async move {
            // Fresh connections: a client's keep-alive race with the old process closing is not the point here.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let (mut ok, mut failed) = (0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match http
                    .get(format!("{url}/videos/sub/nested.mp4"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(b) if b.len() == 65536 => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    },
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    let new = Server::spawn(
        env!("CARGO_BIN_EXE_cdn-proxy").as_ref(),
        &[
            "--cdn-conf",
            old.cdn_yaml.to_str().unwrap(),
            "-c",
            pingora_yaml.to_str().unwrap(),
            "-u",
        ],
        old.server.addr,
    )
    .unwrap();
    old.server.signal("QUIT").unwrap();
    let status = old.server.exited(Duration::from_secs(30)).await.unwrap();
    assert!(
        status.success() || status.code().is_none(),
        "old process: {status:?}"
    );
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 20, "{ok}");
    assert!(
        failed.is_empty(),
        "{} failed during the upgrade: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    // The new process serves on the same address.
    let r = testkit::raw_get_async(new.addr, "/videos/sub/nested.mp4")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, media.nested);
}
