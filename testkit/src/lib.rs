//! Test support shared by every crate's integration tests: start the
//! project's real binaries on free ports and wait for them to be ready,
//! speak raw HTTP/1.1 (for requests a client library would normalise), and
//! build media folders with known content.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a binary may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a binary built by this workspace, next to the running test's
/// `deps/` folder (works across crates, unlike `CARGO_BIN_EXE_*`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join(name)
}

/// [`workspace_bin`], built first with `cargo build -p <package>` if it is
/// missing (`cargo test -p` builds only the tested package's binaries).
pub fn workspace_bin_built(name: &str, package: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let path = workspace_bin(name);
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("running cargo build");
        assert!(st.success(), "cargo build -p {package} failed");
    }
    path
}

/// Raises this test process's open-file limit so hundreds of connections fit.
pub fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// A running child process that announced its address; killed on drop.
pub struct Server {
    child: Child,
    /// The address the process printed in its `listening on ADDR` line.
    pub addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `bin` with `args` and waits for its `listening on ADDR` line on
    /// stdout: the process prints it after binding, so it is ready then.
    pub fn start(bin: &Path, args: &[&str]) -> anyhow::Result<Server> {
        let (mut child, stdout) = spawn_child(bin, args)?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Read the first line on a thread so a silent child cannot hang the test.
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send(res);
            r
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let _ = child.kill();
                bail!("reading the address line of {}: {e}", bin.display());
            }
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "{} printed no address line within {START_TIMEOUT:?}",
                    bin.display()
                );
            }
        };
        let stdout = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let status = child.wait().ok();
            bail!(
                "{} said {line:?} instead of `listening on ADDR` (exit: {status:?})",
                bin.display()
            );
        };
        let addr = addr
            .parse()
            .with_context(|| format!("address in {line:?}"))?;
        Ok(Server {
            child,
            addr,
            _stdout: stdout,
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`, ...) with the `kill` command.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?;
        anyhow::ensure!(st.success(), "kill -{sig} {} failed", self.pid());
        Ok(())
    }

    /// [`Server::wait_exit`] for async tests: sleeps on the runtime's timer.
    pub async fn exited(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("process {} still running after {timeout:?}", self.pid());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit, at most `timeout`. Blocks the thread:
    /// async tests use [`Server::exited`].
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("process {} still running after {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// Starts `bin` with `args` for a server that listens on a known `addr`
    /// and is ready when `GET ready_path` answers 200 (polled, with a deadline).
    pub fn start_ready(
        bin: &Path,
        args: &[&str],
        addr: SocketAddr,
        ready_path: &str,
    ) -> anyhow::Result<Server> {
        let (mut child, stdout) = spawn_child(bin, args)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = raw_get(addr, ready_path) {
                if r.status == 200 {
                    break;
                }
            }
            if let Some(st) = child.try_wait()? {
                bail!("{} exited with {st} before it was ready", bin.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "{} was not ready on {addr}{ready_path} within {START_TIMEOUT:?}",
                    bin.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server {
            child,
            addr,
            _stdout: BufReader::new(stdout),
        })
    }
}

impl Server {
    /// Starts `bin` with `args` for a server that will serve on `addr` later
    /// (e.g. one taking listeners over in a graceful upgrade); no readiness wait.
    pub fn spawn(bin: &Path, args: &[&str], addr: SocketAddr) -> anyhow::Result<Server> {
        let (child, stdout) = spawn_child(bin, args)?;
        Ok(Server {
            child,
            addr,
            _stdout: BufReader::new(stdout),
        })
    }
}

/// Starts `bin` with stdout piped (for the address line) and stderr shown,
/// logging at `RUST_LOG` (default `warn`).
fn spawn_child(bin: &Path, args: &[&str]) -> anyhow::Result<(Child, ChildStdout)> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("child stdout")?;
    Ok((child, stdout))
}

/// A loopback port for a server that cannot report the port it binds
/// (cdn-proxy binds what its config says). Never the same port twice in
/// one test process, and taken below the kernel's ephemeral range, so
/// neither a parallel test nor an outgoing connection's source port can
/// take it between this call and the server's bind (binding port 0 and
/// closing it, the usual trick, leaves exactly that window open).
pub fn reserve_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    // Linux's default ephemeral range starts at 32768.
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000.min(ephemeral_low / 2), ephemeral_low);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut rng = (u64::from(std::process::id()) << 32 | u64::from(nanos)) | 1;
    for _ in 0..10_000 {
        // xorshift: no dependency for a few random numbers.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let port = low + (rng % u64::from(high - low)) as u16;
        if handed.contains(&port) {
            continue;
        }
        // Free now (no other process holds it): ours from here on.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}");
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
/// For waiting on a condition, never for measuring time. Blocks the
/// thread: for plain `#[test]`s and threads; async tests use [`wait_until`].
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls the async `check` until it returns `Some`, or fails after
/// `timeout`, sleeping on the runtime's timer between tries (the runtime's
/// other tasks keep running). For waiting on a condition in async tests.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`raw_request`] on the async runtime: sends `request` verbatim (it should
/// ask for `Connection: close`) and reads until the server closes, at most 20 s.
pub async fn raw_request_async(addr: SocketAddr, request: &[u8]) -> anyhow::Result<RawResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .context("no complete response within 20 s")??;
    parse_raw(&buf)
}

/// [`raw_get`] on the async runtime.
pub async fn raw_get_async(addr: SocketAddr, path: &str) -> anyhow::Result<RawResponse> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw_request_async(addr, request.as_bytes()).await
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Everything after the header block.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim (it should ask for `Connection: close`) and reads
/// the response until the server closes the connection.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> anyhow::Result<RawResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_raw(&buf)
}

/// A `GET` of a raw, unnormalised path with `Connection: close`.
pub fn raw_get(addr: SocketAddr, path: &str) -> anyhow::Result<RawResponse> {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn parse_raw(buf: &[u8]) -> anyhow::Result<RawResponse> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in response")?;
    let head = std::str::from_utf8(&buf[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .context("status line")?
        .parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

/// A temporary media folder with known files:
/// - `clip.mp4`: `CLIP_SIZE` pseudo-random bytes (the default video)
/// - `sub/nested.mp4`: 64 KiB
/// - `empty.mp4`: 0 bytes
/// - `escape.mp4`: a symlink to a file outside the folder
/// - `inside-link.mp4`: a symlink to `clip.mp4`
pub struct MediaFixture {
    dir: tempfile::TempDir,
    /// The bytes of `clip.mp4`.
    pub clip: Vec<u8>,
    /// The bytes of `sub/nested.mp4`.
    pub nested: Vec<u8>,
}

/// Size of `clip.mp4` in a [`MediaFixture`].
pub const CLIP_SIZE: usize = 3 * 1024 * 1024 + 17;

impl MediaFixture {
    /// Creates the folder and its files.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("media");
        std::fs::create_dir_all(root.join("sub"))?;
        let clip = pseudo_random(CLIP_SIZE, 1);
        let nested = pseudo_random(64 * 1024, 2);
        std::fs::write(root.join("clip.mp4"), &clip)?;
        std::fs::write(root.join("sub/nested.mp4"), &nested)?;
        std::fs::write(root.join("empty.mp4"), b"")?;
        std::fs::write(dir.path().join("secret.txt"), b"outside the media folder")?;
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("escape.mp4"))?;
        std::os::unix::fs::symlink(root.join("clip.mp4"), root.join("inside-link.mp4"))?;
        Ok(MediaFixture { dir, clip, nested })
    }

    /// The media folder to pass as `--media`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// The media folder as a string.
    pub fn path_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }
}

/// Deterministic bytes (xorshift), so failures are reproducible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
