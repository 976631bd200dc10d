//! What the public listener does with clients before a request reaches the
//! proxy: a header trickled past the deadline gets 408, one over the size
//! limit 431, and pipelined requests are all answered, in order.

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn edge_with(limits: &str) -> (Vec<Server>, Edge, MediaFixture) {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let mut sections = default_sections(&addrs);
    for line in limits.lines() {
        let (k, v) = line.split_once(": ").unwrap();
        sections.insert(Box::leak(k.to_string().into_boxed_str()), v.to_string());
    }
    let edge = start_proxy(&sections, 2).await;
    (origins, edge, media)
}

/// Everything the server sends until it closes (within `limit`).
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, conn.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_trickled_past_the_deadline_gets_408_and_a_close() {
    let (_origins, edge, _media) = edge_with("client_header_timeout: 1s").await;
    let conn = TcpStream::connect(edge.server.addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    // One byte every 100 ms: each read is quick, the header never ends.
    let trickle = tokio::spawn(async move {
        wr.write_all(b"GET /videos/clip.mp4 HTTP/1.1\r\nx-slow: ")
            .await
            .ok()?;
        for _ in 0..300 {
            wr.write_all(b"a").await.ok()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(())
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut out)).await;
    trickle.abort();
    assert!(read.is_ok(), "the connection was still open after 20 s");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_over_the_limit_gets_431_and_one_under_it_is_served() {
    let (_origins, edge, media) = edge_with("client_max_header: 4096").await;
    let ask = |pad: usize| {
        format!(
            "GET /videos/sub/nested.mp4 HTTP/1.1\r\nhost: t\r\nconnection: close\r\nx-pad: {}\r\n\r\n",
            "p".repeat(pad)
        )
    };
    let mut conn = TcpStream::connect(edge.server.addr).await.unwrap();
    conn.write_all(ask(5000).as_bytes()).await.unwrap();
    let text = String::from_utf8_lossy(&read_to_close(&mut conn, Duration::from_secs(10)).await)
        .to_string();
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    let mut conn = TcpStream::connect(edge.server.addr).await.unwrap();
    conn.write_all(ask(3000).as_bytes()).await.unwrap();
    let out = read_to_close(&mut conn, Duration::from_secs(10)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    assert!(
        out.ends_with(&media.nested),
        "the whole file follows the header"
    );
}

/// Reads one response (header and Content-Length body) from `buf`, refilled from `conn`.
async fn next_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while buf.len() < end + len {
        let mut chunk = [0u8; 65536];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let (_origins, edge, media) = edge_with("").await;
    let mut conn = TcpStream::connect(edge.server.addr).await.unwrap();
    // Media ranges, a local endpoint and a plain proxied file, sent at once.
    let mut asks = Vec::new();
    for i in 0..20usize {
        let (a, b) = (i * 1000, i * 1000 + 99 + i);
        asks.push((
            format!(
                "GET /videos/sub/nested.mp4 HTTP/1.1\r\nhost: t\r\nrange: bytes={a}-{b}\r\n\r\n"
            ),
            Some((a, b)),
        ));
        if i % 5 == 0 {
            asks.push(("GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n".into(), None));
        }
    }
    let all: String = asks.iter().map(|(r, _)| r.as_str()).collect();
    conn.write_all(all.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for (i, (_, range)) in asks.iter().enumerate() {
        let (head, body) = next_response(&mut conn, &mut buf).await;
        match range {
            Some((a, b)) => {
                assert!(head.starts_with("HTTP/1.1 206 "), "#{i}: {head}");
                assert!(body == media.nested[*a..=*b], "#{i}: another range's bytes");
            }
            None => assert_eq!(
                (head.starts_with("HTTP/1.1 200 "), body.as_slice()),
                (true, &b"ok\n"[..]),
                "#{i}: {head}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_gets_an_answer_not_a_silent_close() {
    let (_origins, edge, _media) = edge_with("").await;
    for ask in [
        "GET /videos/sub/nested.mp4 HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /videos/sub/nested.mp4 HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    ] {
        let mut conn = TcpStream::connect(edge.server.addr).await.unwrap();
        conn.write_all(ask.as_bytes()).await.unwrap();
        let out = read_to_close(&mut conn, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&out[..out.len().min(300)]).to_string();
        assert!(text.starts_with("HTTP/1.1 "), "{ask:?}: no status, got {text:?}");
    }
}
