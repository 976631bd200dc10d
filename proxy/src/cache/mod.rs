//! The edge cache: slices of media objects on the edge's disk, so repeat
//! views cost the origins nothing.
//!
//! A slice of the media path (`media/`) is the unit: each is a file
//! (`store.rs`), found through an in-memory index with an LRU over a byte
//! budget (`index.rs`); a missing slice is fetched once however many
//! viewers want it, and they all stream from the file while it arrives
//! (`coalesce.rs`); what may be stored and for how long follows RFC 9111
//! (`freshness.rs`). The OS page cache is the memory tier.
//!
//! pingora-cache is not used: its storage holds whole objects, strips
//! Range on a miss, and holds readers until an object is whole; a slice
//! store with its own coalescing fits 200 MB videos and slow viewers.

mod coalesce;
mod freshness;
mod index;
mod residency;
mod store;

pub use coalesce::{Broken, Follower, Head, Joined, Leader, SliceId};
pub use freshness::{judge, Freshness};
pub use index::Entry;
pub use store::{hash_key, Meta, ObjectHash, SliceWriter, MAX_KEY};

use coalesce::Fills;
use index::Index;
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the cache did for a response (the `X-Cache` header's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache, fresh.
    Hit,
    /// Not cached: fetched from an origin (and stored).
    Miss,
    /// Cached but stale, and the origin had a new version.
    Expired,
    /// Cached but stale, and the origin confirmed it (a 304).
    Revalidated,
    /// Served stale: while it is revalidated in the background
    /// (`stale-while-revalidate`), or because no origin answered
    /// (`stale-if-error`).
    Stale,
    /// Not cacheable, or the cache is off for its route: proxied.
    Bypass,
}

impl CacheStatus {
    /// Every status, in the order of [`CacheStatus::index`].
    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Expired,
        CacheStatus::Revalidated,
        CacheStatus::Stale,
        CacheStatus::Bypass,
    ];

    /// The header value (Varnish's and Fastly's words).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// Its position in [`CacheStatus::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The cache key of a request: its path and query, then, for each of
/// `parts` (`cache.key_headers`), a line `name: value` (empty when the
/// request has no such header; `host` is the `Host` header or the HTTP/2
/// authority). By default there are no parts and the Host is left out: the
/// origins behind one edge serve one catalogue, whatever name a viewer used.
pub fn key(req: &RequestHeader, parts: &[http::HeaderName]) -> String {
    let mut key = req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    for name in parts {
        let value = req.headers.get(name).map(|v| v.as_bytes()).or_else(|| {
            (name == http::header::HOST)
                .then(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
                .flatten()
        });
        key.push('\n');
        key.push_str(name.as_str());
        key.push_str(": ");
        key.push_str(&String::from_utf8_lossy(value.unwrap_or_default()));
    }
    key
}

/// The slice cache.
pub struct Cache {
    index: Index,
    fills: Arc<Fills>,
    /// Objects that could not be cached, until when they go straight to
    /// the origins (so a viewer of one costs one origin request, not a
    /// failed fill and then a fetch).
    passes: Mutex<HashMap<ObjectHash, Instant>>,
}

/// Most objects remembered as not cacheable (past it, the oldest marks go).
const MAX_PASSES: usize = 64 * 1024;

/// Why reading a slice's bytes failed.
#[derive(Debug)]
pub enum ReadError {
    /// The fill being followed gave up: fetch the rest elsewhere.
    Broken,
    /// The file could not be read.
    Io(std::io::Error),
}

/// What `SliceRead::ready` found.
pub struct Ready {
    /// Bytes that can be read now.
    pub len: u64,
    /// They were not in the page cache (read from disk first).
    pub cold: bool,
}

/// One slice's bytes, from a stored file or one being filled.
pub struct SliceRead {
    file: Arc<File>,
    body_offset: u64,
    /// The body's whole length.
    pub len: u64,
    follow: Option<Follower>,
}

impl SliceRead {
    /// A slice being filled, followed.
    pub fn following(file: Arc<File>, body_offset: u64, len: u64, follower: Follower) -> SliceRead {
        SliceRead {
            file,
            body_offset,
            len,
            follow: Some(follower),
        }
    }

    /// Body bytes from `at`, at most `max`, that can be read or sent now
    /// without waiting for the disk: it waits for a fill to write some,
    /// and reads a cold range into the page cache on the blocking pool
    /// first (`residency.rs`), so no runtime thread waits for the disk.
    /// A length of 0: none past `at` (the body's end).
    pub async fn ready(&mut self, at: u64, max: u64) -> Result<Ready, ReadError> {
        let available = match &mut self.follow {
            Some(f) => f.available(at).await.map_err(|Broken| ReadError::Broken)?,
            None => self.len,
        };
        let len = available.saturating_sub(at).min(max);
        let offset = self.body_offset + at;
        let cold = !residency::resident(&self.file, offset, len);
        if cold {
            residency::warm(self.file.clone(), offset, len)
                .await
                .map_err(ReadError::Io)?;
        }
        Ok(Ready { len, cold })
    }

    /// Reads body bytes from `at` into `buf`, all of them `ready` (a
    /// `pread` from the page cache, as nginx reads its cache).
    pub fn read_ready(&self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, self.body_offset + at)
    }

    /// The slice's file and the offset of body byte `at` in it (for
    /// `sendfile`; bytes past `ready` are not there yet).
    pub fn file_at(&self, at: u64) -> (&File, u64) {
        (&self.file, self.body_offset + at)
    }
}

impl Cache {
    /// Opens the cache in `dir` (created if missing) with a budget of
    /// `budget` bytes, rebuilding its index from the files there.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<Cache> {
        let layout = store::Layout::create(dir)?;
        let scanned = layout.scan()?;
        let discarded = scanned.discarded;
        let index = Index::rebuild(layout, scanned, budget);
        let (bytes, objects, slices) = index.usage();
        tracing::info!(
            dir = %dir.display(),
            objects,
            slices,
            bytes,
            discarded,
            "cache opened"
        );
        Ok(Cache {
            index,
            fills: Arc::new(Fills::default()),
            passes: Mutex::new(HashMap::new()),
        })
    }

    /// The object's entry, if cached.
    pub fn entry(&self, hash: ObjectHash) -> Option<Arc<Entry>> {
        self.index.entry(hash)
    }

    /// Sets an object's entry; a new version drops the old one's slices.
    pub fn set_entry(&self, entry: Arc<Entry>) -> std::io::Result<()> {
        self.index.set_entry(entry)
    }

    /// Slice `index` of `entry`'s version, if stored and intact. A slice
    /// found at start is checked against its checksum on its first read; a
    /// corrupt one is deleted and reads as missing.
    pub fn stored(&self, entry: &Entry, index: u64) -> Option<SliceRead> {
        let stored = self.index.slice(entry.hash, entry.version, index)?;
        let path = self
            .index
            .layout()
            .slice_path(entry.hash, entry.version, index);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                self.index.remove(entry.hash, entry.version, index);
                return None;
            }
        };
        if !stored.verified {
            let intact = store::SliceHeader::read(&file)
                .and_then(|h| Ok(h.len == stored.len && h.body_is_intact(&file)?));
            if !matches!(intact, Ok(true)) {
                tracing::warn!(file = %path.display(), "cache: a corrupt slice file, deleted");
                self.index.remove(entry.hash, entry.version, index);
                return None;
            }
            self.index.mark_verified(entry.hash, index);
        }
        Some(SliceRead {
            file: Arc::new(file),
            body_offset: stored.body_offset,
            len: stored.len,
            follow: None,
        })
    }

    /// Joins the fill of a slice, or leads it.
    pub fn join(&self, id: SliceId) -> Joined {
        self.fills.join(id)
    }

    /// Starts writing a slice of `entry`.
    pub fn writer(&self, entry: &Entry, index: u64) -> std::io::Result<SliceWriter> {
        SliceWriter::create(self.index.layout(), &entry.meta.key, entry.version, index)
    }

    /// Stores a written slice. `false`: its object changed meanwhile, or
    /// the file could not be sealed; it is not stored.
    pub fn commit(&self, writer: SliceWriter) -> bool {
        let hash = hash_key(writer.key());
        match writer.commit() {
            Ok(header) => self.index.add(hash, &header),
            Err(e) => {
                tracing::warn!("cache: a slice could not be stored: {e}");
                false
            }
        }
    }

    /// Sends the object straight to the origins for `period`.
    pub fn pass(&self, hash: ObjectHash, period: Duration) {
        let now = Instant::now();
        let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        if passes.len() >= MAX_PASSES {
            passes.retain(|_, until| *until > now);
        }
        if passes.len() < MAX_PASSES {
            passes.insert(hash, now + period);
        }
    }

    /// Whether the object goes straight to the origins for now.
    pub fn passing(&self, hash: ObjectHash) -> bool {
        let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        match passes.get(&hash) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                passes.remove(&hash);
                false
            }
            None => false,
        }
    }

    /// Forgets an object and deletes its files; `false`: it was not cached.
    pub fn forget(&self, hash: ObjectHash) -> bool {
        self.index.forget(hash)
    }

    /// Purges the objects of one path and query (whatever their other key
    /// parts); returns how many.
    pub fn purge_url(&self, url: &str) -> usize {
        self.passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash_key(url));
        let with_parts = format!("{url}\n");
        self.index
            .forget_where(|key| key == url || key.starts_with(&with_parts))
    }

    /// Purges every object whose key starts with `prefix`; returns how many.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        self.index.forget_where(|key| key.starts_with(prefix))
    }

    /// Changes the byte budget (on reload).
    pub fn set_budget(&self, budget: u64) {
        self.index.set_budget(budget);
    }

    /// Bytes stored, objects, slices, evictions so far, fills in flight.
    pub fn usage(&self) -> Usage {
        let (bytes, objects, slices) = self.index.usage();
        Usage {
            bytes,
            objects,
            slices,
            evictions: self.index.counts.evictions.load(Relaxed),
            fills: self.fills.in_flight() as u64,
        }
    }
}

/// The cache's size and activity, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of slice files.
    pub bytes: u64,
    /// Objects with at least one slice.
    pub objects: u64,
    /// Slices stored.
    pub slices: u64,
    /// Slices evicted since start.
    pub evictions: u64,
    /// Slice fills in flight.
    pub fills: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_path_and_query_then_the_chosen_headers() {
        let mut req = RequestHeader::build("GET", b"/videos/a.mp4?q=1", None).unwrap();
        req.insert_header("host", "edge.example").unwrap();
        req.insert_header("accept-language", "fr").unwrap();
        assert_eq!(key(&req, &[]), "/videos/a.mp4?q=1");
        let parts = [
            http::header::HOST,
            http::header::ACCEPT_LANGUAGE,
            http::HeaderName::from_static("x-absent"),
        ];
        assert_eq!(
            key(&req, &parts),
            "/videos/a.mp4?q=1\nhost: edge.example\naccept-language: fr\nx-absent: "
        );
        // HTTP/2: the authority stands for Host.
        let mut h2 = RequestHeader::build("GET", b"/a.mp4", None).unwrap();
        h2.set_uri(http::Uri::from_static("https://edge.example/a.mp4"));
        assert_eq!(key(&h2, &parts[..1]), "/a.mp4\nhost: edge.example");
    }
}
