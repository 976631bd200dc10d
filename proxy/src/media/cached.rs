//! A media response from the cache: the object comes from the cache's
//! entry (or the first slice's fill), the client's preconditions and range
//! are judged here against it, and each slice is read from its file —
//! stored, or being filled by one fetch that every viewer follows. A slice
//! the cache cannot give (not cacheable, a fill that gave up, a disk
//! error) is fetched for this viewer alone, as without a cache: no stream
//! is cut while an origin can serve it.

use super::client_body::ClientBody;
use super::fill::Fill;
use super::object::Object;
use super::pace::Pace;
use super::slicing::Asked;
use super::stream::mark_cache;
use super::{Failed, MediaPath, Report, Served, HOP_BY_HOP};
use crate::cache::{
    self, Cache, CacheStatus, Entry, Head, Joined, ObjectHash, ReadError, SliceId, SliceRead,
};
use crate::config::Config;
use crate::direct_socket::{DirectSocket, SendFileError};
use cdn_types::range::{evaluate, Outcome};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, OrErr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where a slice's bytes come from.
enum Source {
    /// The cache: stored, or followed while filled.
    Cache {
        entry: Arc<Entry>,
        read: SliceRead,
        status: CacheStatus,
    },
    /// Not from the cache: fetched for this viewer.
    Origin,
}

/// What one cached response needs to find its slices.
struct Lookup<'a> {
    cache: &'a Arc<Cache>,
    cfg: &'a Arc<Config>,
    template: &'a RequestHeader,
    key: &'a str,
    hash: ObjectHash,
    /// The route's pool.
    pool: u64,
}

impl MediaPath {
    /// Answers a media GET or HEAD through the cache.
    pub(super) async fn serve_cached(
        &self,
        cache: &Arc<Cache>,
        session: &mut Session,
        cfg: &Arc<Config>,
        report: &mut Report,
        pool: u64,
    ) -> Result<Served, Failed> {
        let req = session.req_header();
        let range = req.headers.get("range").and_then(|v| v.to_str().ok());
        let asked = Asked::of(range);
        let key = cache::key(req, &cfg.cache_key_parts);
        let hash = cache::hash_key(&key);
        let is_get = req.method == http::Method::GET;
        if asked == Asked::Several || key.len() > cache::MAX_KEY || cache.passing(hash) {
            return self.bypass(session, cfg, report, is_get, pool).await;
        }
        self.warmup
            .wait(cfg.health.timeout + std::time::Duration::from_millis(500))
            .await;
        let template = fill_template(session.req_header());
        let look = Lookup {
            cache,
            cfg,
            template: &template,
            key: &key,
            hash,
            pool,
        };
        let slice = cfg.media.slice_size;
        let known = cache.entry(hash);
        let now = SystemTime::now();
        let first_index = |size: Option<u64>| match asked {
            Asked::From(a, _) => a / slice,
            Asked::Suffix(n) => size.map_or(0, |s| s.saturating_sub(n) / slice),
            Asked::Whole | Asked::Several => 0,
        };
        let index = first_index(known.as_ref().map(|e| e.meta.size));
        let stale = known
            .as_ref()
            .and_then(|e| Some((e.clone(), e.staleness(now)?)));
        let source = match stale {
            None => self.source(&look, index, known, false, false).await,
            Some((e, by)) => {
                // How long past freshness the origin lets a copy be served.
                let grace = |ms| !e.meta.must_revalidate && by < Duration::from_millis(ms);
                let stored = grace(e.meta.stale_while_revalidate_ms)
                    .then(|| cache.stored(&e, index))
                    .flatten();
                match stored {
                    Some(read) => {
                        self.revalidate_in_background(&look, index, e.clone());
                        Source::Cache {
                            entry: e,
                            read,
                            status: CacheStatus::Stale,
                        }
                    }
                    None => {
                        let if_error = grace(e.meta.stale_if_error_ms);
                        self.source(&look, index, Some(e), true, if_error).await
                    }
                }
            }
        };
        let (entry, read, status) = match source {
            Source::Cache {
                entry,
                read,
                status,
            } => (entry, read, status),
            Source::Origin => return self.bypass(session, cfg, report, is_get, pool).await,
        };
        report.cache = Some(status);
        self.metrics.cache_requests[status.index()].inc();
        let object = Object::from_entry(&entry);
        let (code, want) = match evaluate(&session.req_header().headers, &object.validators()) {
            Outcome::Full if object.size > 0 => (200, Some(0..=object.size - 1)),
            Outcome::Full => (200, None),
            Outcome::Partial(r) if r.len() == 1 => (206, Some(r[0].clone())),
            Outcome::Partial(_) => return self.bypass(session, cfg, report, is_get, pool).await,
            Outcome::NotModified => (304, None),
            Outcome::PreconditionFailed => (412, None),
            Outcome::Unsatisfiable => (416, None),
        };
        let mut header = match &want {
            Some(want) => object.client_header(code, want),
            None => bodiless(code, &object),
        }
        .map_err(Failed::Cut)?;
        let age = entry.age(SystemTime::now()).as_secs();
        let _ = header.insert_header("age", age.to_string());
        if let Some(name) = &cfg.request_id_name {
            crate::request_id::echo(&mut header, session.req_header(), name);
        }
        crate::cors::decorate(&mut header, session.req_header(), &cfg.cors);
        mark_cache(&mut header, cfg, report);
        let Some(want) = want.filter(|_| is_get) else {
            session
                .write_response_header(Box::new(header), true)
                .await
                .map_err(Failed::Cut)?;
            report.header_at = Some(std::time::Instant::now());
            return Ok(Served::Done);
        };
        let direct = cfg.cache.sendfile && want.end() - want.start() + 1 >= SENDFILE_MIN;
        let mut body = ClientBody::start(session, header, direct)
            .await
            .map_err(Failed::Cut)?;
        report.header_at = Some(std::time::Instant::now());
        let first = (want.start() / slice == index).then_some((index, read));
        self.metrics.media_streams.inc();
        let result = self
            .deliver_cached(&look, session, &mut body, &entry, &object, want, first)
            .await;
        self.metrics.media_streams.dec();
        report.direct_bytes = body.direct_bytes;
        result?;
        Box::pin(body.finish(session)).await.map_err(Failed::Cut)?;
        Ok(Served::Done)
    }

    /// The request goes to the origins as if there were no cache.
    async fn bypass(
        &self,
        session: &mut Session,
        cfg: &Arc<Config>,
        report: &mut Report,
        is_get: bool,
        pool: u64,
    ) -> Result<Served, Failed> {
        report.cache = Some(CacheStatus::Bypass);
        self.metrics.cache_requests[CacheStatus::Bypass.index()].inc();
        if !is_get {
            return Ok(Served::Proxy);
        }
        Box::pin(self.serve_fetched(session, cfg, report, pool)).await
    }

    /// Starts a fill that asks whether a stale entry is still current,
    /// unless one of this slice is under way; nobody waits for it.
    fn revalidate_in_background(&self, look: &Lookup<'_>, index: u64, entry: Arc<Entry>) {
        let id = SliceId {
            hash: look.hash,
            index,
        };
        if let Joined::Lead(leader, _) = look.cache.join(id) {
            self.start_fill(look, index, Some(entry), true, leader);
        }
    }

    /// Spawns the fill of slice `index`, led by `leader`.
    fn start_fill(
        &self,
        look: &Lookup<'_>,
        index: u64,
        known: Option<Arc<Entry>>,
        revalidate: bool,
        leader: cache::Leader,
    ) {
        let fill = Fill {
            cache: look.cache.clone(),
            fetcher: self.fetcher.clone(),
            cfg: look.cfg.clone(),
            template: look.template.clone(),
            key: look.key.to_owned(),
            hash: look.hash,
            index,
            known,
            revalidate,
            pool: look.pool,
            metrics: self.metrics.clone(),
        };
        tokio::spawn(fill.run(leader));
    }

    /// Slice `index`: stored, followed while another viewer's fill writes
    /// it, or filled by a new fill this call starts. `known`: the object as
    /// the cache knows it; `revalidate`: it is stale, so the fill asks the
    /// origin whether it changed; `stale_if_error`: if no origin answers,
    /// the stale copy may be served.
    async fn source(
        &self,
        look: &Lookup<'_>,
        index: u64,
        mut known: Option<Arc<Entry>>,
        mut revalidate: bool,
        stale_if_error: bool,
    ) -> Source {
        let mut revalidated = false;
        // A 304 refreshes the entry and the slice is looked up again:
        // at most a few rounds, each ending in a fill's verdict.
        for _ in 0..3 {
            if let (false, Some(e)) = (revalidate, &known) {
                if let Some(read) = look.cache.stored(e, index) {
                    let status = if revalidated {
                        CacheStatus::Revalidated
                    } else {
                        CacheStatus::Hit
                    };
                    return Source::Cache {
                        entry: e.clone(),
                        read,
                        status,
                    };
                }
            }
            let id = SliceId {
                hash: look.hash,
                index,
            };
            let (mut follower, led) = match look.cache.join(id) {
                Joined::Follow(f) => (f, false),
                Joined::Lead(leader, f) => {
                    self.start_fill(look, index, known.clone(), revalidate, leader);
                    (f, true)
                }
            };
            match follower.head().await.as_deref() {
                None | Some(Head::Pass) => return Source::Origin,
                Some(Head::Failed) => {
                    let stale = known.as_ref().filter(|_| stale_if_error);
                    return match stale.and_then(|e| Some((e, look.cache.stored(e, index)?))) {
                        Some((e, read)) => Source::Cache {
                            entry: e.clone(),
                            read,
                            status: CacheStatus::Stale,
                        },
                        None => Source::Origin,
                    };
                }
                Some(Head::NotModified(e)) => {
                    known = Some(e.clone());
                    revalidate = false;
                    revalidated = true;
                }
                Some(Head::Body {
                    entry,
                    file,
                    body_offset,
                    len,
                    status,
                }) => {
                    let read = SliceRead::following(file.clone(), *body_offset, *len, follower);
                    // A viewer who joined another's fill cost the origins
                    // nothing: a hit (as Varnish counts a waited-for object).
                    let status = match *status {
                        _ if revalidated => CacheStatus::Revalidated,
                        CacheStatus::Miss if !led => CacheStatus::Hit,
                        status => status,
                    };
                    return Source::Cache {
                        entry: entry.clone(),
                        read,
                        status,
                    };
                }
            }
        }
        Source::Origin
    }

    /// Writes `want` of the object to the client, slice by slice, from the
    /// cache where it can and from the origins where it cannot.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_cached(
        &self,
        look: &Lookup<'_>,
        session: &mut Session,
        body: &mut ClientBody,
        entry: &Arc<Entry>,
        object: &Object,
        want: RangeInclusive<u64>,
        mut first: Option<(u64, SliceRead)>,
    ) -> Result<(), Failed> {
        let slice = look.cfg.media.slice_size;
        let (mut pos, last) = (*want.start(), *want.end());
        let mut pace = Pace::new(std::time::Instant::now());
        let mut buf = Vec::new();
        while pos <= last {
            let index = pos / slice;
            let slice_start = index * slice;
            let slice_last = (slice_start + slice - 1).min(object.size - 1);
            let until = last.min(slice_last);
            let read = match first.take() {
                Some((i, read)) if i == index => Some(read),
                _ => match self
                    .source(look, index, Some(entry.clone()), false, false)
                    .await
                {
                    Source::Cache { entry: e, read, .. } if e.version == entry.version => {
                        Some(read)
                    }
                    Source::Cache { .. } => {
                        self.metrics.media_aborts.inc();
                        return Err(Failed::Cut(Error::explain(
                            ErrorType::HTTPStatus(502),
                            "the object changed mid-stream: not splicing another version",
                        )));
                    }
                    Source::Origin => None,
                },
            };
            let read = read.filter(|r| r.len == slice_last - slice_start + 1);
            if let Some(mut read) = read {
                self.metrics.media_slices.inc();
                let copied = match body.direct() {
                    Some(socket) => {
                        let from = pos;
                        let sent = send_cached(
                            socket,
                            &mut read,
                            slice_start,
                            &mut pos,
                            until,
                            &self.metrics,
                        )
                        .await;
                        body.sent_direct(pos - from);
                        sent
                    }
                    None => {
                        copy_cached(
                            session,
                            body,
                            &mut read,
                            slice_start,
                            &mut pos,
                            until,
                            &mut pace,
                            &mut buf,
                            &self.metrics,
                        )
                        .await
                    }
                };
                match copied {
                    Ok(()) => continue,
                    Err(Copy::Client(e)) => return Err(Failed::Cut(e)),
                    Err(Copy::Cache) => {}
                }
            }
            // The rest of this slice, fetched for this viewer.
            let rest = self.deliver(
                session,
                body,
                look.cfg,
                object,
                pos..=until,
                None,
                look.pool,
            );
            Box::pin(rest).await?;
            pos = until + 1;
        }
        Ok(())
    }
}

/// The smallest answer sent with `sendfile`: below it, setting up the
/// socket (a duplicate, its registration, its residency asked) costs more
/// than the copy it saves (about 5 µs of 85 per 16 KiB hit, level at
/// 64 KiB, measured with wrk).
const SENDFILE_MIN: u64 = 64 * 1024;

/// The largest read of a slice file, for a client that keeps up: a
/// quarter of the system calls of 64 KiB reads (about a fifth less CPU per
/// GiB streamed in `make bench-cache`).
const CACHE_READ_MAX: usize = 256 * 1024;

/// How copying from the cache ended short.
enum Copy {
    /// The client went away.
    Client(Box<Error>),
    /// The fill gave up or the file could not be read: fetch the rest.
    Cache,
}

/// Copies bytes `pos..=until` of the object from a slice starting at
/// `slice_start`, a read of the client's pace at a time.
#[allow(clippy::too_many_arguments)]
async fn copy_cached(
    session: &mut Session,
    body: &mut ClientBody,
    read: &mut SliceRead,
    slice_start: u64,
    pos: &mut u64,
    until: u64,
    pace: &mut Pace,
    buf: &mut Vec<u8>,
    metrics: &crate::metrics::Metrics,
) -> Result<(), Copy> {
    while *pos <= until {
        // A client seen to keep up reads the file in larger steps (fewer
        // system calls per GiB); a slow one's buffer shrinks with its pace.
        let pace_size = if pace.keeps_up() {
            CACHE_READ_MAX
        } else {
            pace.read_size()
        };
        let size = pace_size.min((until - *pos + 1) as usize);
        buf.resize(size, 0);
        if buf.capacity() > 2 * pace_size {
            buf.shrink_to(pace_size);
        }
        let n = ready(read, *pos - slice_start, size as u64, metrics).await? as usize;
        if let Err(e) = read.read_ready(*pos - slice_start, &mut buf[..n]) {
            tracing::warn!("cache: a slice file could not be read, fetching instead: {e}");
            metrics.cache_errors.inc();
            return Err(Copy::Cache);
        }
        body.write(session, &buf[..n]).await.map_err(Copy::Client)?;
        pace.wrote(n, std::time::Instant::now());
        *pos += n as u64;
        metrics.total_bytes.inc_by(n as u64);
        metrics.cache_client_bytes.inc_by(n as u64);
    }
    Ok(())
}

/// Sends bytes `pos..=until` of the object from a slice starting at
/// `slice_start` with `sendfile`, as a fill writes them: no buffer of ours,
/// the client's socket paces it.
async fn send_cached(
    socket: &DirectSocket,
    read: &mut SliceRead,
    slice_start: u64,
    pos: &mut u64,
    until: u64,
    metrics: &crate::metrics::Metrics,
) -> Result<(), Copy> {
    while *pos <= until {
        let at = *pos - slice_start;
        let len = ready(read, at, until - *pos + 1, metrics).await?;
        let (file, offset) = read.file_at(at);
        let n = match socket.send_file(file, offset, len as usize).await {
            Ok(n) if n > 0 => n,
            Ok(_) => return Err(Copy::Cache),
            Err(SendFileError::Client(e)) => {
                return Err(Copy::Client(
                    Error::because(ErrorType::WriteError, "sending body", e).into_down(),
                ))
            }
            Err(SendFileError::File(e)) => {
                tracing::warn!("cache: a slice file could not be sent, fetching instead: {e}");
                metrics.cache_errors.inc();
                return Err(Copy::Cache);
            }
        };
        *pos += n as u64;
        metrics.total_bytes.inc_by(n as u64);
        metrics.cache_client_bytes.inc_by(n as u64);
        metrics.cache_sendfile_bytes.inc_by(n as u64);
    }
    Ok(())
}

/// How many bytes of a slice from `at` (at most `max`, at least one) can
/// be read or sent now, off the disk (a cold range is counted); a fill
/// that gave up, the body's end or a disk error: fetch the rest instead.
async fn ready(
    read: &mut SliceRead,
    at: u64,
    max: u64,
    metrics: &crate::metrics::Metrics,
) -> Result<u64, Copy> {
    match read.ready(at, max).await {
        Ok(r) if r.len > 0 => {
            if r.cold {
                metrics.cache_cold_reads.inc();
            }
            Ok(r.len)
        }
        Ok(_) | Err(ReadError::Broken) => Err(Copy::Cache),
        Err(ReadError::Io(e)) => {
            tracing::warn!("cache: a slice file could not be read, fetching instead: {e}");
            metrics.cache_errors.inc();
            Err(Copy::Cache)
        }
    }
}

/// A 304, 412 or 416 answer about the object (no body): the object's
/// headers without its type, as cdn-origin answers them.
fn bodiless(code: u16, object: &Object) -> pingora::Result<ResponseHeader> {
    let mut h = object.headers.clone();
    h.set_status(code)?;
    h.remove_header("content-type");
    if code != 304 {
        h.insert_header("content-length", "0")?;
    }
    if code == 416 {
        h.insert_header("content-range", format!("bytes */{}", object.size))
            .or_err(ErrorType::InternalError, "content-range")?;
    }
    Ok(h)
}

/// The origin request a fill sends for a viewer's request: its path and
/// end-to-end headers, without what is the viewer's alone (range,
/// preconditions; the fill sets its own).
fn fill_template(req: &RequestHeader) -> RequestHeader {
    let mut t = req.clone();
    t.set_method(http::Method::GET);
    for name in HOP_BY_HOP.iter().chain(&[
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    ]) {
        t.remove_header(*name);
    }
    t
}
