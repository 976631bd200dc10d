//! The `healthcheck` subcommand both binaries offer: one HTTP GET of their
//! own health endpoint, so a container `HEALTHCHECK` needs no curl or shell.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// How long the whole check may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The address to probe for a listener bound to `listen`: a wildcard
/// (`0.0.0.0`, `[::]`) is reached through the loopback of the same family.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `path` from `addr` and returns the status code, or why it failed.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cdn-healthcheck\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() && !head[..len].contains(&b'\n') {
        match conn.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    parse_status(&head[..len]).ok_or_else(|| "no HTTP status line in the response".to_string())
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// Runs the check for a binary's `healthcheck` subcommand: prints the outcome
/// and exits 0 on a 2xx, 1 otherwise (the exit codes Docker expects).
pub fn run(program: &str, listen: SocketAddr, path: &str) -> ExitCode {
    let addr = target(listen);
    match probe(addr, path, TIMEOUT) {
        Ok(status) if (200..300).contains(&status) => {
            println!("{program}: healthy (http://{addr}{path} answered {status})");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{program}: unhealthy (http://{addr}{path} answered {status})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{program}: unhealthy (http://{addr}{path}: {e})");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            target("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            target("10.0.0.5:80".parse().unwrap()),
            "10.0.0.5:80".parse().unwrap()
        );
    }

    #[test]
    fn status_lines_parse_and_garbage_does_not() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    /// A one-shot server answering `reply`, on a free loopback port.
    fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(reply);
        });
        addr
    }

    #[test]
    fn probe_reports_the_status_and_connect_failures() {
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(probe(ok, "/healthz", TIMEOUT), Ok(200));
        let draining = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(probe(draining, "/healthz", TIMEOUT), Ok(503));
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = probe(closed, "/healthz", TIMEOUT).unwrap_err();
        assert!(err.starts_with("connect:"), "{err}");
    }
}
