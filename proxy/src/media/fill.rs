//! Filling one slice of the cache from the origins: a task of its own,
//! led by the first viewer who missed it and followed by every viewer who
//! wants it meanwhile (`cache/coalesce.rs`). It asks an origin for the
//! slice (revalidating a stale object with `If-None-Match` /
//! `If-Modified-Since`, or checking a known one with `If-Range`), writes
//! the body to the slice's file as it arrives, resumes from another origin
//! if one fails mid-slice (the same object, checked), and stores the file
//! when whole. It outlives the viewer who started it: a viewer leaving
//! never wastes a fetch others follow.

use super::fetch::{Ask, Fetcher, OpenSlice};
use super::object::Object;
use super::pace::READ_MAX;
use crate::cache::{self, Cache, CacheStatus, Entry, Head, Leader, Meta, ObjectHash, SliceWriter};
use crate::config::Config;
use crate::metrics::Metrics;
use pingora::http::RequestHeader;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long an object that could not be cached (not storable, no
/// validator, not answered with ranges) goes straight to the origins
/// before the cache tries it again (Varnish's hit-for-miss).
pub const PASS_FOR: Duration = Duration::from_secs(30);

/// One slice to fill.
pub struct Fill {
    /// Where it is stored.
    pub cache: Arc<Cache>,
    /// Who fetches it.
    pub fetcher: Arc<Fetcher>,
    /// The configuration the viewer's request started with.
    pub cfg: Arc<Config>,
    /// The origin request's template: the viewer's, without its range and
    /// preconditions.
    pub template: RequestHeader,
    /// The object's cache key and its hash.
    pub key: String,
    /// [`cache::hash_key`] of `key`.
    pub hash: ObjectHash,
    /// The slice.
    pub index: u64,
    /// The object as the cache knows it, if it does.
    pub known: Option<Arc<Entry>>,
    /// `known` is stale: ask whether it is still current.
    pub revalidate: bool,
    /// The pools whose origins may answer (the route's).
    pub pool: u64,
    /// Whole-proxy counters.
    pub metrics: Arc<Metrics>,
}

/// How copying a fill's body ended short.
enum Short {
    /// The origin failed: resume elsewhere.
    Origin(Box<pingora::Error>),
    /// The disk failed: give up (viewers fetch the rest themselves).
    Disk(std::io::Error),
}

impl Fill {
    /// Runs the fill to its end, publishing through `leader`.
    pub async fn run(self, leader: Leader) {
        let cfg = self.cfg.clone();
        let slice = cfg.media.slice_size;
        let start = self.index * slice;
        let mut end = start + slice - 1;
        if let Some(known) = &self.known {
            if start >= known.meta.size {
                return leader.head(Head::Pass);
            }
            end = end.min(known.meta.size - 1);
        }
        let known_object = self.known.as_deref().map(Object::from_entry);
        let mut template = self.template.clone();
        if let (true, Some(k)) = (self.revalidate, &self.known) {
            if let Some(tag) = &k.meta.etag {
                let _ = template.insert_header("if-none-match", tag.as_str());
            } else if let Some(date) = &k.meta.last_modified {
                let _ = template.insert_header("if-modified-since", date.as_str());
            }
        }
        let if_range = known_object
            .as_ref()
            .filter(|_| !self.revalidate)
            .and_then(Object::if_range);
        let ask = Ask {
            client: &template,
            range: format!("bytes={start}-{end}"),
            if_range,
            pool: self.pool,
        };
        let mut tried = SmallVec::new();
        let Ok(open) = Box::pin(self.fetcher.open_any(&cfg, &ask, &mut tried)).await else {
            return leader.head(Head::Failed);
        };
        let now = SystemTime::now();
        match open.resp().status.as_u16() {
            206 => {}
            304 if self.revalidate => return self.not_modified(leader, &open, now),
            500.. => return leader.head(Head::Failed),
            status => {
                // A 200 to If-Range: the object changed under a fresh
                // entry. Forgotten, the next viewer caches the new one.
                if status == 200 && if_range.is_some() {
                    let _ = self.cache.forget(self.hash);
                } else {
                    self.cache.pass(self.hash, PASS_FOR);
                }
                return leader.head(Head::Pass);
            }
        }
        let Some((object, got)) = Object::from_first(open.resp()) else {
            self.cache.pass(self.hash, PASS_FOR);
            return leader.head(Head::Pass);
        };
        let last = end.min(object.size.saturating_sub(1));
        let fresh = cache::judge(&template.headers, &open.resp().headers, now);
        // Without a validator, slices from two fetches could be two versions.
        if got != (start..=last) || !fresh.storable || object.if_range().is_none() {
            self.cache.pass(self.hash, PASS_FOR);
            return leader.head(Head::Pass);
        }
        let Some((entry, status)) = self.entry_for(&object, fresh, now) else {
            return leader.head(Head::Pass);
        };
        let mut writer = match self.cache.writer(&entry, self.index) {
            Ok(w) => w,
            Err(e) => {
                self.disk_failed(&e);
                return leader.head(Head::Pass);
            }
        };
        let len = last - start + 1;
        leader.head(Head::Body {
            entry: entry.clone(),
            file: writer.file(),
            body_offset: writer.body_offset(),
            len,
            status,
        });
        let Some(open) = self
            .copy_resuming(open, &object, &mut writer, &leader, start, last, tried)
            .await
        else {
            return;
        };
        let OpenSlice { body, pool_key, .. } = open;
        if let Some(stream) = Box::pin(body.into_reusable()).await {
            let idle = Some(cfg.timeouts.idle);
            (self.fetcher.connector).release_stream(stream, pool_key, idle);
        }
        if !self.cache.commit(writer) {
            self.metrics.cache_errors.inc();
        }
        // The file is whole for its followers even when it could not be stored.
        leader.end(true);
    }

    /// The entry the slice is stored under, set in the cache when new, and
    /// what viewers' `X-Cache` says.
    fn entry_for(
        &self,
        object: &Object,
        fresh: cache::Freshness,
        now: SystemTime,
    ) -> Option<(Arc<Entry>, CacheStatus)> {
        let text = |v: &Option<http::HeaderValue>| {
            v.as_ref().and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let mut meta = Meta {
            key: self.key.clone(),
            size: object.size,
            etag: text(&object.etag),
            last_modified: text(&object.last_modified),
            headers: object.header_pairs(),
            stored_at_ms: 0,
            fresh_ms: 0,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            must_revalidate: false,
        };
        stamp(&mut meta, fresh, now);
        let new = Arc::new(Entry::new(self.hash, meta)?);
        // Another fill of this object may have set it meanwhile.
        let current = self.cache.entry(self.hash).or_else(|| self.known.clone());
        let status = match &current {
            Some(c) if c.version == new.version && !self.revalidate => {
                return Some((c.clone(), CacheStatus::Miss));
            }
            Some(c) if c.version == new.version => CacheStatus::Revalidated,
            Some(_) if self.known.is_some() => CacheStatus::Expired,
            _ => CacheStatus::Miss,
        };
        if let Err(e) = self.cache.set_entry(new.clone()) {
            self.disk_failed(&e);
            return None;
        }
        Some((new, status))
    }

    /// A 304 to a revalidation: the entry, refreshed by the 304's headers.
    fn not_modified(&self, leader: Leader, open: &OpenSlice, now: SystemTime) {
        let Some(known) = &self.known else {
            return leader.head(Head::Pass);
        };
        // The stored headers, updated with the 304's (RFC 9111 §4.3.4).
        let mut headers = known.headers.clone();
        for name in ["cache-control", "expires", "date", "etag", "last-modified"] {
            if let Some(v) = open.resp().headers.get(name) {
                let _ = headers.insert_header(name, v.clone());
            }
        }
        let fresh = cache::judge(&self.template.headers, &headers.headers, now);
        let mut meta = known.meta.clone();
        meta.headers = super::object::header_pairs(&headers);
        stamp(&mut meta, fresh, now);
        let Some(entry) = Entry::new(self.hash, meta).map(Arc::new) else {
            return leader.head(Head::Pass);
        };
        if let Err(e) = self.cache.set_entry(entry.clone()) {
            self.disk_failed(&e);
        }
        leader.head(Head::NotModified(entry));
        leader.end(true);
    }

    /// Copies the slice's body (`start..=last` of the object) to the file,
    /// from `open` and, when an origin fails, from the next one. Returns
    /// the last fetch, read to its end; `None`: the fill gave up.
    #[allow(clippy::too_many_arguments)]
    async fn copy_resuming(
        &self,
        mut open: OpenSlice,
        object: &Object,
        writer: &mut SliceWriter,
        leader: &Leader,
        start: u64,
        last: u64,
        mut tried: SmallVec<[std::net::SocketAddr; 4]>,
    ) -> Option<OpenSlice> {
        let len = last - start + 1;
        let mut pos = 0;
        loop {
            match self.copy(&mut open, writer, leader, &mut pos, len).await {
                Ok(()) => return Some(open),
                Err(Short::Disk(e)) => {
                    self.disk_failed(&e);
                    return None;
                }
                Err(Short::Origin(e)) => {
                    open.attempt.fail();
                    tracing::info!(origin = %open.attempt.origin.label, at = start + pos, "origin failed mid-fill, resuming elsewhere: {e}");
                }
            }
            drop(open);
            let range = start + pos..=last;
            let ask = Ask {
                client: &self.template,
                range: format!("bytes={}-{}", range.start(), range.end()),
                if_range: object.if_range(),
                pool: self.pool,
            };
            let next = Box::pin(self.fetcher.open_any(&self.cfg, &ask, &mut tried)).await;
            open = next.ok()?;
            if let Err(m) = object.check(open.resp(), &range) {
                tracing::warn!(origin = %open.attempt.origin.label, "fill aborted, not splicing another version: {m}");
                self.metrics.media_aborts.inc();
                return None;
            }
            self.metrics.media_resumes.inc();
        }
    }

    /// Copies `open`'s body to the file until `len` bytes are in it.
    async fn copy(
        &self,
        open: &mut OpenSlice,
        writer: &mut SliceWriter,
        leader: &Leader,
        pos: &mut u64,
        len: u64,
    ) -> Result<(), Short> {
        let origin = open.attempt.origin.clone();
        origin.count_slice();
        while *pos < len {
            open.body.set_read_size(READ_MAX);
            let bytes = match open.body.next().await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    return Err(Short::Origin(pingora::Error::explain(
                        pingora::ErrorType::ConnectionClosed,
                        format!("origin body ended {} bytes short", len - *pos),
                    )))
                }
                Err(e) => return Err(Short::Origin(e)),
            };
            let take = bytes.len().min((len - *pos) as usize);
            // A write to the page cache: microseconds, as the reads.
            writer.write(&bytes[..take]).map_err(Short::Disk)?;
            *pos += take as u64;
            // Counted before the followers can send the bytes on.
            origin.add_bytes(take as u64);
            self.metrics.cache_fill_bytes.inc_by(take as u64);
            leader.wrote(*pos);
        }
        Ok(())
    }

    fn disk_failed(&self, e: &std::io::Error) {
        self.metrics.cache_errors.inc();
        tracing::warn!(key = %self.key, "cache: disk error, serving without storing: {e}");
    }
}

/// Records in `meta` that an origin's answer judged `fresh` arrived at `now`.
fn stamp(meta: &mut Meta, fresh: cache::Freshness, now: SystemTime) {
    meta.stored_at_ms = unix_ms(now);
    meta.fresh_ms = fresh.fresh_for.as_millis() as u64;
    meta.stale_while_revalidate_ms = fresh.stale_while_revalidate.as_millis() as u64;
    meta.stale_if_error_ms = fresh.stale_if_error.as_millis() as u64;
    meta.must_revalidate = fresh.must_revalidate;
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
