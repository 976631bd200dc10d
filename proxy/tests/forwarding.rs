//! What origins are told about the client: forwarding headers (replaced
//! from an untrusted client, appended to from a trusted proxy) and the
//! request id, on the plain proxy path and the media path's fetches, and
//! the request id returned to the client.

mod common;
use common::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request heads an origin received, lower-cased.
type Seen = Arc<Mutex<Vec<String>>>;

/// An origin that records every request head. `/healthz` is 200; any other
/// path is a 1000-byte object that honours a `Range: bytes=S-E` (so the
/// media path can slice it). A recorder rather than cdn-origin: what is
/// tested is the request the proxy sends.
async fn recording_origin() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut head = Vec::new();
                loop {
                    let n = conn.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return Some(());
                    }
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&head[..end]).to_lowercase();
                    head.drain(..end + 4);
                    let answer = if text.starts_with("get /healthz ") {
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
                    } else {
                        log.lock().unwrap().push(text.clone());
                        object_answer(&text)
                    };
                    conn.write_all(answer.as_bytes()).await.ok()?;
                }
            });
        }
    });
    (addr, seen)
}

fn object_answer(head: &str) -> String {
    let range = head.lines().find_map(|l| l.strip_prefix("range: bytes="));
    let (start, end) = match range.and_then(|r| r.split_once('-')) {
        Some((s, e)) => (
            s.parse::<usize>().unwrap(),
            e.parse::<usize>().unwrap().min(999),
        ),
        None => (0, 999),
    };
    let body = "v".repeat(end - start + 1);
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    format!(
        "HTTP/1.1 {status}\r\netag: \"x\"\r\ncontent-type: video/mp4\r\ncontent-range: bytes {start}-{end}/1000\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The value of `name` in a recorded head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

async fn edge(origin: SocketAddr, extra: &[(&'static str, &str)]) -> Edge {
    let mut sections = default_sections(&[origin]);
    for (k, v) in extra {
        sections.insert(k, v.to_string());
    }
    start_proxy(&sections, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_s_claims_are_replaced_and_its_request_id_kept() {
    let (origin, seen) = recording_origin().await;
    let every = "{x_forwarded_host: true, forwarded: true}";
    let edge = edge(origin, &[("forwarded", every)]).await;
    let resp = client()
        .get(format!("{}/videos/notes.txt", edge.url()))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "player-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "player-42");
    let head = seen
        .lock()
        .unwrap()
        .pop()
        .expect("the origin saw the request");
    let host = format!("127.0.0.1:{}", edge.server.addr.port());
    assert_eq!(
        header(&head, "x-forwarded-for"),
        Some("127.0.0.1"),
        "{head}"
    );
    assert_eq!(header(&head, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&head, "x-forwarded-host"), Some(host.as_str()));
    let forwarded = format!("for=127.0.0.1;host=\"{host}\";proto=http");
    assert_eq!(header(&head, "forwarded"), Some(forwarded.as_str()));
    assert_eq!(header(&head, "x-request-id"), Some("player-42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_s_chain_is_appended_to() {
    let (origin, seen) = recording_origin().await;
    let edge = edge(origin, &[("forwarded", "{trusted_proxies: [127.0.0.0/8]}")]).await;
    let resp = client()
        .get(format!("{}/videos/notes.txt", edge.url()))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let head = seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        header(&head, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
        "{head}"
    );
    assert_eq!(header(&head, "x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slice_fetch_carries_the_client_and_one_new_request_id() {
    let (origin, seen) = recording_origin().await;
    let edge = edge(origin, &[("media", "{slice_size: 65536}")]).await;
    let resp = client()
        .get(format!("{}/videos/a.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "a new id: {id}");
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
    let heads = seen.lock().unwrap().clone();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(head.starts_with("get /videos/a.mp4 "), "{head}");
        assert!(header(head, "range").is_some(), "a slice fetch: {head}");
        assert_eq!(header(head, "x-forwarded-for"), Some("127.0.0.1"), "{head}");
        assert_eq!(header(head, "x-request-id"), Some(id.as_str()), "{head}");
    }
}
