//! `cdn-proxy healthcheck`, the container HEALTHCHECK: it probes the first
//! listener of the same cdn.yaml the proxy runs with.

mod common;
use common::*;
use std::time::Duration;

async fn healthcheck(edge: &Edge) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cdn-proxy"))
        .args(["--cdn-conf", edge.cdn_yaml.to_str().unwrap(), "healthcheck"])
        .output()
        .await
        .expect("cdn-proxy healthcheck runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_probes_the_configured_listener() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut edge = start_proxy(&default_sections(&[origins[0].addr]), 1).await;
    let up = healthcheck(&edge).await;
    assert!(up.status.success(), "{up:?}");
    let said = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(
        said.contains(&format!("{}/healthz", edge.server.addr)),
        "{said}"
    );

    edge.server.signal("KILL").unwrap();
    edge.server.exited(Duration::from_secs(10)).await.unwrap();
    let down = healthcheck(&edge).await;
    assert_eq!(down.status.code(), Some(1), "{down:?}");
}
