//! Access logs: one line per request, in the combined format (nginx's and
//! Apache's, with our fields appended as `key=value`) or as JSON, to stdout
//! or a file that is reopened on request (SIGUSR1, for logrotate).
//!
//! A request never waits for the log: lines go through a bounded queue to
//! a writer thread, and when the queue is full (the disk or the reader of
//! stdout is too slow) lines are dropped and counted, as nginx's syslog
//! target does, rather than slowing every viewer down.

use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most; more are dropped.
const QUEUE: usize = 16 * 1024;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// No access log.
    #[default]
    Off,
    /// The combined log format, our fields appended as `key=value`.
    Combined,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "off" => Ok(Format::Off),
            "combined" => Ok(Format::Combined),
            "json" => Ok(Format::Json),
            _ => Err(format!("{s:?}: use off, combined or json")),
        }
    }
}

/// What one request did. Fields a binary does not know stay `None` (`-`).
#[derive(Debug, Default, Serialize)]
pub struct Entry<'a> {
    /// The client's address.
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: &'a str,
    /// Path and query as asked.
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`...
    pub protocol: &'a str,
    /// Status sent; 499 when the client left before an answer (nginx's code).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// From the request's arrival to its end, in seconds.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// From the request's arrival to the answer's header, in seconds.
    #[serde(
        serialize_with = "seconds_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttfb: Option<Duration>,
    /// `Referer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<&'a str>,
    /// `User-Agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
    /// The request id (`X-Request-Id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    /// `X-Forwarded-For` as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<&'a str>,
    /// The origin that answered (proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'a str>,
    /// Origins tried before the answer started (proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Cache outcome (proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'a str>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e6)
}

fn seconds_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    seconds(&d.unwrap_or_default(), s)
}

/// A running access log.
pub struct AccessLog {
    format: Format,
    queue: SyncSender<String>,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Starts the writer thread for `path` (`None`: stdout). `None` when
    /// `format` is `Off`. Fails if the file cannot be opened.
    pub fn start(format: Format, path: Option<&Path>) -> std::io::Result<Option<Arc<AccessLog>>> {
        if format == Format::Off {
            return Ok(None);
        }
        let sink = Sink::open(path)?;
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, sink, flag))?;
        Ok(Some(Arc::new(AccessLog {
            format,
            queue,
            dropped: AtomicU64::new(0),
            reopen,
        })))
    }

    /// Queues one line for `entry`; never blocks. False if it was dropped.
    pub fn log(&self, entry: &Entry<'_>) -> bool {
        let now = SystemTime::now();
        let line = match self.format {
            Format::Off => return true,
            Format::Combined => combined(entry, now),
            Format::Json => json(entry, now),
        };
        match self.queue.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Reopens the file before the next line (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where lines go.
enum Sink {
    Stdout(std::io::Stdout),
    File(PathBuf, std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn open(path: Option<&Path>) -> std::io::Result<Sink> {
        Ok(match path {
            None => Sink::Stdout(std::io::stdout()),
            Some(p) => Sink::File(p.to_path_buf(), std::io::BufWriter::new(append(p)?)),
        })
    }

    fn writer(&mut self) -> &mut dyn std::io::Write {
        match self {
            Sink::Stdout(s) => s,
            Sink::File(_, f) => f,
        }
    }
}

fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// How often the writer looks for lines. Requests never wake it (that
/// would be a system call per line on the request path); a line waits at
/// most this long, as with nginx's `access_log ... flush=`.
const POLL: Duration = Duration::from_millis(50);

/// The writer thread: every `POLL`, writes what is queued in one write.
fn write_lines(rx: Receiver<String>, mut sink: Sink, reopen: Arc<AtomicBool>) {
    let mut batch = String::new();
    loop {
        let open = loop {
            match rx.try_recv() {
                Ok(line) => {
                    batch.push_str(&line);
                    if batch.len() > 256 * 1024 {
                        break true;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break true,
                Err(mpsc::TryRecvError::Disconnected) => break false,
            }
        };
        if reopen.swap(false, Ordering::Relaxed) {
            if let Sink::File(path, f) = &mut sink {
                let _ = f.flush();
                match append(path) {
                    Ok(new) => *f = std::io::BufWriter::new(new),
                    Err(e) => {
                        tracing::error!(path = %path.display(), "cannot reopen the access log: {e}")
                    }
                }
            }
        }
        if !batch.is_empty() {
            let w = sink.writer();
            if let Err(e) = w.write_all(batch.as_bytes()).and_then(|()| w.flush()) {
                tracing::warn!("access log write failed: {e}");
            }
            batch.clear();
        }
        if !open {
            return;
        }
        if batch.capacity() > 1024 * 1024 {
            batch = String::new(); // a burst's buffer is not kept
        }
        std::thread::sleep(POLL);
    }
}

/// A combined-format line: `client - - [time] "request" status bytes
/// "referer" "agent"`, then our fields as `key=value` (`-` when unknown).
pub fn combined(e: &Entry<'_>, now: SystemTime) -> String {
    let mut s = String::with_capacity(256);
    match e.client {
        Some(ip) => {
            write!(s, "{ip}").ok();
        }
        None => s.push('-'),
    }
    s.push_str(" - - [");
    cached_second(&mut s, now, Clock::Clf);
    s.push_str("] \"");
    escaped(&mut s, e.method);
    s.push(' ');
    escaped(&mut s, e.target);
    s.push(' ');
    escaped(&mut s, e.protocol);
    let mut n = itoa::Buffer::new();
    s.push_str("\" ");
    s.push_str(n.format(e.status));
    s.push(' ');
    s.push_str(n.format(e.bytes));
    s.push_str(" \"");
    escaped(&mut s, e.referer.unwrap_or("-"));
    s.push_str("\" \"");
    escaped(&mut s, e.user_agent.unwrap_or("-"));
    s.push_str("\" rt=");
    millis(&mut s, e.duration);
    s.push_str(" ttfb=");
    match e.ttfb {
        Some(t) => millis(&mut s, t),
        None => s.push('-'),
    }
    let quoted = [
        ("origin", e.origin),
        ("cache", e.cache),
        ("rid", e.request_id),
        ("xff", e.forwarded_for),
    ];
    if let Some(a) = e.attempts {
        s.push_str(" attempts=");
        s.push_str(n.format(a));
    }
    for (k, v) in quoted {
        if let Some(v) = v {
            s.push(' ');
            s.push_str(k);
            s.push_str("=\"");
            escaped(&mut s, v);
            s.push('"');
        }
    }
    s.push('\n');
    s
}

/// A JSON line: the entry's fields and `time` (RFC 3339, UTC).
pub fn json(e: &Entry<'_>, now: SystemTime) -> String {
    // `time` first, then the entry's own fields: spliced rather than
    // `#[serde(flatten)]`, which buffers every field through a map.
    let fields = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    let mut line = String::with_capacity(fields.len() + 40);
    line.push_str("{\"time\":\"");
    cached_second(&mut line, now, Clock::Iso);
    line.push('"');
    if fields.len() > 2 {
        line.push(',');
    }
    line.push_str(&fields[1..]);
    line.push('\n');
    line
}

/// Seconds with three decimals (`0.012`), by integer arithmetic (cheaper
/// than formatting a float).
fn millis(out: &mut String, d: Duration) {
    let ms = d.as_millis();
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(ms / 1000));
    out.push('.');
    let frac = (ms % 1000) as u16;
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

/// How a line's time is written.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    /// `28/Nov/2026:21:40:05 +0000` (combined).
    Clf,
    /// `2026-11-28T21:40:05Z` (JSON; RFC 3339, whole seconds as nginx's `$time_iso8601`).
    Iso,
}

/// Appends `now` as `clock` says, formatted once per second per thread.
fn cached_second(out: &mut String, now: SystemTime, clock: Clock) {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<[(u64, String); 2]> = const {
            RefCell::new([(u64::MAX, String::new()), (u64::MAX, String::new())])
        };
    }
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let slot = &mut last[clock as usize];
        if slot.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let text = match clock {
                Clock::Clf => t.format(time::macros::format_description!(
                    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
                )),
                Clock::Iso => t.format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
                )),
            };
            *slot = (secs, text.unwrap_or_default());
        }
        out.push_str(&slot.1);
    });
}

/// Appends `text` with `"`, `\` and non-printable bytes escaped as `\xHH`
/// (nginx's escaping), so a line stays one line and its quotes hold.
fn escaped(out: &mut String, text: &str) {
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    if text.bytes().all(plain) {
        out.push_str(text); // the usual case
        return;
    }
    for b in text.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            write!(out, "\\x{b:02X}").ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            client: Some("192.0.2.7".parse().unwrap()),
            method: "GET",
            target: "/videos/a.mp4?t=\"1\"",
            protocol: "HTTP/1.1",
            status: 206,
            bytes: 1024,
            duration: Duration::from_millis(12),
            ttfb: Some(Duration::from_millis(3)),
            user_agent: Some("curl/8"),
            request_id: Some("abc"),
            origin: Some("127.0.0.1:9101"),
            attempts: Some(1),
            ..Entry::default()
        }
    }

    #[test]
    fn a_combined_line_is_the_classic_format_then_our_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_902_005);
        let line = combined(&entry(), at);
        assert_eq!(
            line,
            "192.0.2.7 - - [28/Nov/2026:21:40:05 +0000] \"GET /videos/a.mp4?t=\\x221\\x22 HTTP/1.1\" 206 1024 \"-\" \"curl/8\" rt=0.012 ttfb=0.003 attempts=1 origin=\"127.0.0.1:9101\" rid=\"abc\"\n"
        );
    }

    #[test]
    fn a_json_line_has_every_known_field_and_the_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_902_005);
        let v: serde_json::Value = serde_json::from_str(&json(&entry(), at)).unwrap();
        assert_eq!(v["time"], "2026-11-28T21:40:05Z");
        assert_eq!(v["status"], 206);
        assert_eq!(v["target"], "/videos/a.mp4?t=\"1\"");
        assert_eq!(v["duration"], 0.012);
        assert_eq!(v["origin"], "127.0.0.1:9101");
        assert!(v.get("referer").is_none());
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(Format::Combined, Some(&path))
            .unwrap()
            .unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let wait = |p: &Path, lines: usize| {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while read(p).lines().count() < lines {
                assert!(
                    std::time::Instant::now() < end,
                    "{} lines in {}",
                    lines,
                    p.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        log.log(&entry());
        wait(&path, 1);
        // logrotate: move the file, then ask for a reopen.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.log(&entry());
        wait(&path, 1);
        assert_eq!(read(&rotated).lines().count(), 1);
        assert_eq!(log.dropped(), 0);
    }
}
