//! An origin that trickles its response header is timed out by
//! `timeouts.response_header` (Pingora's read timeout is per read), on the
//! plain proxy path and on the media path, and the request goes to another
//! origin.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin whose health check answers at once and whose every other
/// response header comes one byte every 100 ms, never ending. (cdn-origin
/// cannot do this: hyper writes its headers whole.)
async fn trickling_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                loop {
                    let n = conn.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return None::<()>;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    if head.starts_with(b"GET /healthz ") {
                        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .ok()?;
                        head.clear();
                        continue;
                    }
                    conn.write_all(b"HTTP/1.1 200 OK\r\nx-slow: ").await.ok()?;
                    loop {
                        conn.write_all(b"a").await.ok()?;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        }
    });
    addr
}

async fn edge_over(origins: &[SocketAddr], media: &str) -> Edge {
    let mut sections = default_sections(origins);
    sections.insert(
        "timeouts",
        "{connect: 500ms, read: 2s, idle: 30s, response_header: 1s}".into(),
    );
    sections.insert("selection", "{policy: round_robin}".into());
    sections.insert("media", media.into());
    start_proxy(&sections, origins.len()).await
}

async fn get(edge: &Edge, path: &str) -> (u16, Vec<u8>) {
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client().get(format!("{}{path}", edge.url())).send(),
    )
    .await
    .expect("an answer within 20 s, not a header trickled forever")
    .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_header_alone_gets_504() {
    let slow = trickling_origin().await;
    for media in ["{enabled: false}", "{enabled: true}"] {
        let edge = edge_over(&[slow], media).await;
        let (status, body) = get(&edge, "/videos/clip.mp4").await;
        assert_eq!(
            status,
            504,
            "media: {media}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_header_goes_to_another_origin() {
    let fixture = MediaFixture::new().unwrap();
    let good = start_origins(&fixture, 1);
    let slow = trickling_origin().await;
    for media in ["{enabled: false}", "{enabled: true}"] {
        let edge = edge_over(&[slow, good[0].addr], media).await;
        // Round robin: every other first pick is the trickling origin.
        for _ in 0..4 {
            let (status, body) = get(&edge, "/videos/clip.mp4").await;
            assert_eq!(status, 200, "media: {media}");
            assert!(body == fixture.clip, "media: {media}: body differs");
        }
        let text = prometheus_text(&edge).await;
        assert!(
            text.lines()
                .any(|l| l.starts_with("cdn_retries_total ") && l != "cdn_retries_total 0")
                || text
                    .lines()
                    .any(|l| l.starts_with("cdn_media_resumes_total ")
                        && l != "cdn_media_resumes_total 0"),
            "no request was retried: the trickling origin was never picked?\n{text}"
        );
    }
}
