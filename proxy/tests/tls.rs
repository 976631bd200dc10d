//! HTTPS and HTTP/2 with a real TLS client (curl): HTTP/1.1 and HTTP/2
//! through ALPN, h2c, certificates by SNI and swapped on SIGHUP while a
//! download goes on, and the redirect from plain HTTP.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What curl saw.
struct Got {
    /// `1.1` or `2`.
    version: String,
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// Runs curl with `args` and the URL; `Err(stderr)` when it fails (TLS errors included).
fn curl(dir: &Path, args: &[&str], url: &str) -> Result<Got, String> {
    let (head, body) = (dir.join("curl.head"), dir.join("curl.body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let w = String::from_utf8(out.stdout).unwrap();
    let (version, status) = w.split_once(' ').unwrap();
    Ok(Got {
        version: version.into(),
        status: status.parse().unwrap(),
        headers: std::fs::read_to_string(head).unwrap(),
        body: std::fs::read(body).unwrap(),
    })
}

/// A local CA and a certificate for `names` in `dir` (`cdn-proxy dev-cert`).
fn dev_cert(dir: &Path, names: &[&str]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdn-proxy"));
    cmd.arg("dev-cert").arg("--dir").arg(dir);
    for n in names {
        cmd.args(["--name", n]);
    }
    assert!(cmd.status().unwrap().success());
    dir.to_path_buf()
}

fn cert_entry(dir: &Path) -> String {
    format!(
        "{{cert: {}, key: {}}}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

fn tls_section(port: u16, certs: &[&Path]) -> String {
    let list: Vec<String> = certs.iter().map(|d| cert_entry(d)).collect();
    format!(
        "[{{listen: \"127.0.0.1:{port}\", certificates: [{}]}}]",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2_byte_exact() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let certs = tempfile::tempdir().unwrap();
    let local = dev_cert(certs.path(), &["localhost", "127.0.0.1"]);
    let port = testkit::reserve_port();
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("tls", tls_section(port, &[&local]));
    let cache = tempfile::tempdir().unwrap();
    sections.insert("cache", format!("{{dir: {}}}", cache.path().display()));
    let edge = start_proxy(&sections, 1).await;
    let ca = local.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let dir = edge.dir.path();

    let url = format!("https://127.0.0.1:{port}/videos/clip.mp4");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        // A range (the media path) and a whole file.
        let got = curl(dir, &["--cacert", ca, flag, "-r", "1000-1500000"], &url).unwrap();
        assert_eq!((got.version.as_str(), got.status), (version, 206), "{flag}");
        assert_eq!(got.body, media.clip[1000..=1_500_000], "{flag}");
        let got = curl(dir, &["--cacert", ca, flag], &url).unwrap();
        assert_eq!((got.version.as_str(), got.status), (version, 200), "{flag}");
        assert_eq!(got.body, media.clip, "{flag}");
    }
    // Answers from the cache (the second round is all hits) are framed by
    // TLS and HTTP/2: written through Pingora, never with sendfile.
    assert!(series(&edge, "cdn_cache_requests_total{status=\"HIT\"}").await >= 2.0);
    assert_eq!(series(&edge, "cdn_cache_sendfile_bytes_total").await, 0.0);
    // Local endpoints answer over HTTPS too.
    let got = curl(
        dir,
        &["--cacert", ca],
        &format!("https://localhost:{port}/healthz"),
    )
    .unwrap();
    assert_eq!((got.version.as_str(), got.status), ("2", 200));
    // A client that does not trust the CA refuses the connection.
    assert!(curl(dir, &[], &url).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_served_on_the_plain_listener_when_enabled() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("h2c", "true".into());
    let cache = tempfile::tempdir().unwrap();
    sections.insert("cache", format!("{{dir: {}}}", cache.path().display()));
    let edge = start_proxy(&sections, 1).await;
    let dir = edge.dir.path();
    let url = format!("{}/videos/clip.mp4", edge.url());
    for _ in ["miss", "hit"] {
        let got = curl(dir, &["--http2-prior-knowledge", "-r", "5-70000"], &url).unwrap();
        assert_eq!((got.version.as_str(), got.status), ("2", 206));
        assert_eq!(got.body, media.clip[5..=70000]);
    }
    // A hit over HTTP/2 on the plain socket still goes through Pingora's framing.
    assert_eq!(
        series(&edge, "cdn_cache_requests_total{status=\"HIT\"}").await,
        1.0
    );
    assert_eq!(series(&edge, "cdn_cache_sendfile_bytes_total").await, 0.0);
    // HTTP/1.1 on the same listener still works.
    let got = curl(dir, &["--http1.1"], &url).unwrap();
    assert_eq!((got.version.as_str(), got.status), ("1.1", 200));
    assert_eq!(got.body, media.clip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_for_origins_are_redirected_to_https() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let certs = tempfile::tempdir().unwrap();
    let local = dev_cert(certs.path(), &["localhost"]);
    let port = testkit::reserve_port();
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("tls", tls_section(port, &[&local]));
    sections.insert("redirect_to_https", "true".into());
    let edge = start_proxy(&sections, 1).await;
    let dir = edge.dir.path();
    let got = curl(
        dir,
        &["-H", "host: localhost:1"],
        &format!("{}/videos/clip.mp4?t=3", edge.url()),
    )
    .unwrap();
    assert_eq!(got.status, 308);
    let want = format!("location: https://localhost:{port}/videos/clip.mp4?t=3");
    assert!(
        got.headers.to_ascii_lowercase().contains(&want),
        "{}",
        got.headers
    );
    // Followed, it plays; the proxy's own endpoints stay on plain HTTP (probes, scrapers).
    let ca = local.join("ca.pem");
    let got = curl(
        dir,
        &[
            "-L",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "host: localhost:1",
        ],
        &format!("{}/videos/clip.mp4", edge.url()),
    );
    let got = got.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, media.clip);
    let got = curl(dir, &[], &format!("{}/healthz", edge.url())).unwrap();
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_picked_by_sni_and_swapped_on_sighup_mid_download() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let certs = tempfile::tempdir().unwrap();
    // Three authorities: a certificate verifies against its own CA only.
    let a = dev_cert(&certs.path().join("a"), &["a.test"]);
    let b = dev_cert(&certs.path().join("b"), &["b.test"]);
    let a2 = dev_cert(&certs.path().join("a2"), &["a.test"]);
    let port = testkit::reserve_port();
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("tls", tls_section(port, &[&a, &b]));
    let edge = start_proxy(&sections, 1).await;
    let dir = edge.dir.path();
    let resolve = |name: &str| format!("{name}:{port}:127.0.0.1");
    let get = |name: &str, ca: &Path| {
        let (r, ca) = (resolve(name), ca.join("ca.pem"));
        let url = format!("https://{name}:{port}/healthz");
        curl(
            dir,
            &["--resolve", &r, "--cacert", ca.to_str().unwrap()],
            &url,
        )
    };
    get("a.test", &a).expect("a.test has a's certificate");
    get("b.test", &b).expect("b.test has b's certificate");
    assert!(
        get("b.test", &a).is_err(),
        "b.test is not served a's certificate"
    );

    // A slow download over the first certificate, going on through the reload.
    let body = dir.join("slow.body");
    let mut slow = Command::new("curl")
        .args(["-sS", "--limit-rate", "1M", "--resolve", &resolve("a.test")])
        .arg("--cacert")
        .arg(a.join("ca.pem"))
        .arg("-o")
        .arg(&body)
        .arg(format!("https://a.test:{port}/videos/clip.mp4"))
        .spawn()
        .unwrap();
    testkit::wait_for("the download to start", Duration::from_secs(10), || {
        std::fs::metadata(&body).ok().filter(|m| m.len() > 0)
    });

    // Load through the reload: new handshakes for a.test, trusting the old
    // and the new authority, one request each; none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, a, a2) = (stop.clone(), a.clone(), a2.clone());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut conn = tls_connect_to(port, "a.test", &[&a, &a2]).await;
                let sent = conn
                    .write_all(
                        b"GET /healthz HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let mut got = Vec::new();
                let read = conn.read_to_end(&mut got).await;
                if sent.is_ok() && read.is_ok() && got.starts_with(b"HTTP/1.1 200") {
                    ok += 1;
                } else {
                    failed.push(String::from_utf8_lossy(&got).into_owned());
                }
            }
            (ok, failed)
        })
    };

    sections.insert("tls", tls_section(port, &[&a2, &b]));
    let (public, admin) = (edge.server.addr.port(), edge.admin.port());
    std::fs::write(&edge.cdn_yaml, render(public, admin, &sections)).unwrap();
    edge.server.signal("HUP").unwrap();
    testkit::wait_until("the new certificate", Duration::from_secs(10), || async {
        get("a.test", &a2).ok()
    })
    .await;
    assert!(
        get("a.test", &a).is_err(),
        "the old certificate is no longer served"
    );
    get("b.test", &b).expect("b.test unchanged");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 5, "only {ok} requests during the reload");

    let status = tokio::task::spawn_blocking(move || slow.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the download survives the reload");
    assert_eq!(std::fs::read(&body).unwrap(), media.clip);
}

/// A TLS connection (HTTP/1.1 by ALPN) to `port` trusting the CA in `dir`.
async fn tls_connect(port: u16, dir: &Path) -> pingora::tls::TlsStream<tokio::net::TcpStream> {
    tls_connect_to(port, "localhost", &[dir]).await
}

/// A TLS connection to `port` for `name` (SNI) trusting the CAs in `dirs`.
async fn tls_connect_to(
    port: u16,
    name: &str,
    dirs: &[&Path],
) -> pingora::tls::TlsStream<tokio::net::TcpStream> {
    use pingora::tls::{ClientConfig, RootCertStore, ServerName, TlsConnector};
    pingora::tls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    for dir in dirs {
        pingora::tls::load_ca_file_into_store(dir.join("ca.pem").to_str().unwrap(), &mut roots)
            .unwrap();
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tls = TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    pingora::tls::TlsStream::Client(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_gate_guards_https_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let certs = tempfile::tempdir().unwrap();
    let local = dev_cert(certs.path(), &["localhost"]);
    let port = testkit::reserve_port();
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("tls", tls_section(port, &[&local]));
    sections.insert("client_header_timeout", "1s".into());
    let _edge = start_proxy(&sections, 1).await;

    // Two pipelined requests in one write: both answered, in order.
    let mut conn = tls_connect(port, &local).await;
    conn.write_all(
        b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\nGET /sub/nested.mp4 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got))
        .await
        .expect("answered within the deadline")
        .ok();
    let text = String::from_utf8_lossy(&got);
    let first = text.find("HTTP/1.1 200").expect("the first answer");
    let second = text[first + 1..]
        .find("HTTP/1.1 200")
        .expect("the second answer");
    assert!(text[first..first + 1 + second].contains("ok\n"), "{text}");
    assert!(
        got.ends_with(&media.nested),
        "the second answer is the file"
    );

    // A header trickled past the deadline: 408 and a close.
    let mut conn = tls_connect(port, &local).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: local")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        // One more byte a second; the gate answers after 1 s.
        loop {
            let mut buf = [0u8; 512];
            tokio::select! {
                r = conn.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    let _ = conn.write_all(b"h").await;
                }
            }
        }
    })
    .await
    .expect("the connection is closed within the deadline");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{got:?}"
    );
}
