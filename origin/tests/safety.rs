//! Bad input from the network: traversal, wrong methods, oversized or
//! garbage requests. Raw HTTP so that no client normalises the paths.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use testkit::{raw_get, raw_request};

#[test]
fn traversal_and_escaping_symlinks_are_not_found() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    for path in [
        "/videos/../secret.txt",
        "/videos/sub/../../secret.txt",
        "/videos/%2e%2e/secret.txt",
        "/videos/%2E%2E/%2E%2E/etc/passwd",
        "/videos/sub%2f..%2f..%2fsecret.txt",
        "/videos/..%5csecret.txt",
        "/videos//etc/passwd",
        "/videos/%2fetc%2fpasswd",
        "/videos/clip.mp4%00.txt",
        "/videos/escape.mp4",
        "/videos/./clip.mp4",
        "/videos/sub",
        "/videos/nothing-here.mp4",
        "/../../etc/passwd",
        "/etc/passwd",
        // Paths outside /videos/ map to the media folder the same way.
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "//etc/passwd",
        "/escape.mp4",
        "/sub",
    ] {
        let r = raw_get(o.addr, path).unwrap();
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: expected 404 (or 400 from the HTTP parser), got {}",
            r.status
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("outside the media folder"),
            "{path} leaked"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{path} leaked /etc/passwd"
        );
    }
    // The same file through an inside symlink is fine.
    assert_eq!(
        raw_get(o.addr, "/videos/inside-link.mp4").unwrap().status,
        200
    );
}

#[test]
fn other_methods_get_405_with_allow() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    for (method, path) in [
        ("POST", "/"),
        ("PUT", "/videos/clip.mp4"),
        ("DELETE", "/videos/clip.mp4"),
        ("PATCH", "/videos"),
        ("OPTIONS", "/videos/clip.mp4"),
        ("POST", "/healthz"),
        ("POST", "/metrics"),
    ] {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let r = raw_request(o.addr, req.as_bytes()).unwrap();
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
    // Without --fault-admin the admin endpoint does not exist.
    let r = raw_request(o.addr, b"POST /admin/faults HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn oversized_headers_are_refused() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    let big = "a".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let mut s = TcpStream::connect(o.addr).unwrap();
    // The server may close before reading all of it; a write error is acceptable.
    let _ = s.write_all(req.as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "expected 431 or a closed connection, got {text:?}"
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_request(
        o.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    );
    if let Ok(r) = r {
        assert_eq!(r.status, 431, "too many headers");
    }
    // Still serving.
    assert_eq!(raw_get(o.addr, "/healthz").unwrap().status, 200);
}

#[test]
fn garbage_never_takes_the_process_down() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    let nasty: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999999999999999999-\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=-0\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=18446744073709551615-18446744073709551615\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nIf-Range: \xff\xfe\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: not a date\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /videos/%ff%fe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /videos/%zz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_vec(),
    ];
    for req in &nasty {
        let mut s = TcpStream::connect(o.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = s.write_all(req);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            !text.starts_with("HTTP/1.1 5"),
            "{:?} → {text}",
            String::from_utf8_lossy(req)
        );
    }
    // A range ending at u64::MAX on a real file is clipped, not overflowed.
    let r = raw_request(
        o.addr,
        b"GET /videos/clip.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-18446744073709551615\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, media.clip);
    assert_eq!(
        raw_get(o.addr, "/healthz").unwrap().status,
        200,
        "still alive"
    );
}
