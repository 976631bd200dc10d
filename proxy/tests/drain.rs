//! SIGTERM drains: for `drain_period` the proxy fails `/healthz` and goes on
//! serving new connections, then closes its listeners and lets a download
//! in flight finish. No request is lost before the listeners close.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_serves_on_then_closes_without_losing_a_request() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("drain_period", "2s".into());
    let mut edge = start_proxy_with_grace(&sections, 1, "/metrics", (4, 5)).await;
    let dir = edge.dir.path().to_path_buf();

    // A download that outlasts the drain: ~2.5 s at 1.2 MiB/s.
    let body = dir.join("slow.body");
    let mut slow = Command::new("curl")
        .args(["-sS", "--limit-rate", "1200K", "-o"])
        .arg(&body)
        .arg(format!("{}/videos/clip.mp4", edge.url()))
        .spawn()
        .unwrap();
    testkit::wait_for("the download to start", Duration::from_secs(10), || {
        std::fs::metadata(&body).ok().filter(|m| m.len() > 0)
    });

    let terminated = Instant::now();
    edge.server.signal("TERM").unwrap();
    // Requests on new connections go on being served until the listener
    // closes; /healthz tells load balancers to go.
    let http = client();
    let (mut served, mut unready) = (0, false);
    loop {
        match http
            .get(format!("{}/sub/nested.mp4", edge.url()))
            .send()
            .await
        {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                // Each answer closes its connection while draining.
                assert_eq!(
                    r.headers().get("connection").map(|v| v.to_str().unwrap()),
                    Some("close")
                );
                assert_eq!(r.bytes().await.unwrap(), media.nested);
                served += 1;
            }
            Err(e) if e.is_connect() => break, // the listener closed: the drain is over
            // A connection still in the listen backlog when the listener
            // closes is reset by the kernel (as with nginx and HAProxy): only
            // possible once the drain period is over, which the proxy's timer
            // counts from after `terminated`.
            Err(_) if terminated.elapsed() >= Duration::from_secs(2) => break,
            Err(e) => panic!("a request failed during the drain: {e:?}"),
        }
        let health = testkit::raw_get_async(edge.server.addr, "/healthz").await;
        if let Ok(h) = health {
            if h.status == 503 {
                unready = true;
            }
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(15),
            "the drain never ended"
        );
    }
    assert!(unready, "/healthz answered 503 during the drain");
    assert!(served > 3, "served {served} during the drain");
    assert!(
        terminated.elapsed() >= Duration::from_millis(1500),
        "the listener stayed open for the drain period"
    );

    let status = tokio::task::spawn_blocking(move || slow.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the download in flight finished");
    assert_eq!(std::fs::read(&body).unwrap(), media.clip);
    let exit = edge.server.exited(Duration::from_secs(20)).await.unwrap();
    assert!(exit.success(), "{exit}");
}
