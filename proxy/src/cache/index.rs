//! The cache's index in memory: each object's entry (its meta, as
//! [`Entry`]) and the slices stored for it, with the slices in an LRU
//! (Pingora's `pingora-lru`, weighted by bytes) that keeps the disk within
//! its budget. Rebuilt from the files at start.

use super::store::{Layout, Meta, ObjectHash, Scanned, SliceHeader};
use pingora::http::ResponseHeader;
use pingora_lru::Lru;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Shards of the LRU. One: the LRU is then exact (with several, Pingora's
/// evicts from the longer of two random shards), and it is touched once
/// per slice read (a megabyte), not per byte, so its lock is cold.
const SHARDS: usize = 1;

/// A cached object: its meta and the header built from it once.
#[derive(Debug)]
pub struct Entry {
    /// Its name in the index and on disk.
    pub hash: ObjectHash,
    /// What the origin said of it.
    pub meta: Meta,
    /// [`Meta::version`].
    pub version: u64,
    /// The object's response headers as a 200, ready to clone.
    pub headers: ResponseHeader,
}

impl Entry {
    /// The entry for `meta`; `None` if its headers are not valid HTTP.
    pub fn new(hash: ObjectHash, meta: Meta) -> Option<Entry> {
        let mut headers = ResponseHeader::build(200, Some(meta.headers.len())).ok()?;
        for (name, value) in &meta.headers {
            headers.append_header(name.clone(), value.as_str()).ok()?;
        }
        Some(Entry {
            hash,
            version: meta.version(),
            meta,
            headers,
        })
    }

    /// How long past its freshness it is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Option<Duration> {
        let age = self.age(now);
        let fresh = Duration::from_millis(self.meta.fresh_ms);
        (age >= fresh).then(|| age - fresh)
    }

    /// Its age at `now`: time since it arrived or was last revalidated.
    pub fn age(&self, now: SystemTime) -> Duration {
        let stored = SystemTime::UNIX_EPOCH + Duration::from_millis(self.meta.stored_at_ms);
        now.duration_since(stored).unwrap_or_default()
    }
}

/// A stored slice, as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Body bytes.
    pub len: u64,
    /// Where the body starts in the file.
    pub body_offset: u64,
    /// Checked against its checksum since this process started (slices
    /// found at start are checked on their first read).
    pub verified: bool,
}

/// One object in the index.
struct Slot {
    entry: Arc<Entry>,
    slices: HashMap<u64, Stored>,
}

/// A slice's identity in the LRU: the object, the version, the index.
type LruItem = (ObjectHash, u64, u64);

/// Counts the index keeps (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counts {
    /// Slices evicted to stay within the budget.
    pub evictions: AtomicU64,
}

/// The objects and slices on disk.
pub struct Index {
    layout: Layout,
    slots: Mutex<HashMap<ObjectHash, Slot>>,
    lru: Lru<LruItem, SHARDS>,
    /// What happened, for metrics.
    pub counts: Counts,
}

fn lru_key((hash, version, index): LruItem) -> u64 {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&hash.to_le_bytes());
    b[16..24].copy_from_slice(&version.to_le_bytes());
    b[24..].copy_from_slice(&index.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

impl Index {
    /// An index of what `scanned` found, within `budget` bytes (evicting
    /// at once if it is over); slices without a matching meta are deleted.
    pub fn rebuild(layout: Layout, scanned: Scanned, budget: u64) -> Index {
        let index = Index {
            layout,
            slots: Mutex::new(HashMap::new()),
            lru: Lru::with_capacity(budget as usize, 1024),
            counts: Counts::default(),
        };
        {
            let mut slots = index.lock();
            for (hash, meta) in scanned.metas {
                match Entry::new(hash, meta) {
                    Some(entry) => {
                        slots.insert(
                            hash,
                            Slot {
                                entry: Arc::new(entry),
                                slices: HashMap::new(),
                            },
                        );
                    }
                    None => index.layout.remove_meta(hash),
                }
            }
        }
        for (hash, header) in scanned.slices {
            if !index.insert(hash, &header, false) {
                index
                    .layout
                    .remove_slice(hash, header.version, header.index);
            }
        }
        // Objects with no slice left are of no use.
        let empty: Vec<ObjectHash> = index
            .lock()
            .iter()
            .filter(|(_, s)| s.slices.is_empty())
            .map(|(h, _)| *h)
            .collect();
        for hash in empty {
            index.lock().remove(&hash);
            index.layout.remove_meta(hash);
        }
        index.evict();
        index
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectHash, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The files' layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The object's entry, if it is cached.
    pub fn entry(&self, hash: ObjectHash) -> Option<Arc<Entry>> {
        self.lock().get(&hash).map(|s| s.entry.clone())
    }

    /// Sets an object's entry (written to disk first). A new version
    /// drops every slice of the old one: two versions never mix.
    pub fn set_entry(&self, entry: Arc<Entry>) -> std::io::Result<()> {
        self.layout.write_meta(entry.hash, &entry.meta)?;
        let dropped: Vec<LruItem> = {
            let mut slots = self.lock();
            match slots.get_mut(&entry.hash) {
                Some(slot) => {
                    let old = std::mem::replace(&mut slot.entry, entry.clone());
                    if old.version == entry.version {
                        Vec::new()
                    } else {
                        slot.slices
                            .drain()
                            .map(|(i, _)| (entry.hash, old.version, i))
                            .collect()
                    }
                }
                None => {
                    slots.insert(
                        entry.hash,
                        Slot {
                            entry,
                            slices: HashMap::new(),
                        },
                    );
                    Vec::new()
                }
            }
        };
        for item in dropped {
            self.lru.remove(lru_key(item));
            self.layout.remove_slice(item.0, item.1, item.2);
        }
        Ok(())
    }

    /// Slice `index` of the object, if stored under `version` (and marks it used).
    pub fn slice(&self, hash: ObjectHash, version: u64, index: u64) -> Option<Stored> {
        let stored = {
            let slots = self.lock();
            let slot = slots.get(&hash)?;
            if slot.entry.version != version {
                return None;
            }
            *slot.slices.get(&index)?
        };
        self.lru.promote(lru_key((hash, version, index)));
        Some(stored)
    }

    /// Records that a slice's checksum was checked.
    pub fn mark_verified(&self, hash: ObjectHash, index: u64) {
        if let Some(s) = self
            .lock()
            .get_mut(&hash)
            .and_then(|s| s.slices.get_mut(&index))
        {
            s.verified = true;
        }
    }

    /// Adds a slice whose file was just committed, then evicts to the
    /// budget. `false` (and the file deleted): its object is not cached
    /// under that version any more.
    pub fn add(&self, hash: ObjectHash, header: &SliceHeader) -> bool {
        let added = self.insert(hash, header, true);
        if !added {
            self.layout.remove_slice(hash, header.version, header.index);
        }
        self.evict();
        added
    }

    fn insert(&self, hash: ObjectHash, header: &SliceHeader, verified: bool) -> bool {
        {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(&hash) else {
                return false;
            };
            if slot.entry.version != header.version {
                return false;
            }
            slot.slices.insert(
                header.index,
                Stored {
                    len: header.len,
                    body_offset: header.body_offset(),
                    verified,
                },
            );
        }
        let item = (hash, header.version, header.index);
        let weight = (header.body_offset() + header.len) as usize;
        self.lru.admit(lru_key(item), item, weight);
        true
    }

    /// Forgets an object and deletes its meta and slices; `false`: it was
    /// not cached.
    pub fn forget(&self, hash: ObjectHash) -> bool {
        let Some(slot) = self.lock().remove(&hash) else {
            return false;
        };
        for (i, _) in slot.slices {
            self.lru.remove(lru_key((hash, slot.entry.version, i)));
            self.layout.remove_slice(hash, slot.entry.version, i);
        }
        self.layout.remove_meta(hash);
        true
    }

    /// Forgets every object whose key `matches`; returns how many.
    pub fn forget_where(&self, matches: impl Fn(&str) -> bool) -> usize {
        let hashes: Vec<ObjectHash> = (self.lock().iter())
            .filter(|(_, s)| matches(&s.entry.meta.key))
            .map(|(h, _)| *h)
            .collect();
        for &hash in &hashes {
            self.forget(hash);
        }
        hashes.len()
    }

    /// Forgets a slice and deletes its file (found corrupt).
    pub fn remove(&self, hash: ObjectHash, version: u64, index: u64) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&hash) {
            if slot.entry.version == version {
                slot.slices.remove(&index);
            }
        }
        drop(slots);
        self.lru.remove(lru_key((hash, version, index)));
        self.layout.remove_slice(hash, version, index);
    }

    /// Evicts least recently used slices until within the budget; an
    /// object whose last slice goes is forgotten.
    fn evict(&self) {
        for ((hash, version, index), _) in self.lru.evict_to_limit() {
            self.counts.evictions.fetch_add(1, Relaxed);
            let emptied = {
                let mut slots = self.lock();
                match slots.get_mut(&hash) {
                    Some(slot) if slot.entry.version == version => {
                        slot.slices.remove(&index);
                        let empty = slot.slices.is_empty();
                        if empty {
                            slots.remove(&hash);
                        }
                        empty
                    }
                    _ => false,
                }
            };
            self.layout.remove_slice(hash, version, index);
            if emptied {
                self.layout.remove_meta(hash);
            }
        }
    }

    /// Changes the budget (on reload), evicting if it shrank.
    pub fn set_budget(&self, budget: u64) {
        self.lru.set_weight_limit(budget as usize);
        self.evict();
    }

    /// Bytes on disk (slice files), objects and slices.
    pub fn usage(&self) -> (u64, u64, u64) {
        let slots = self.lock();
        let slices = slots.values().map(|s| s.slices.len() as u64).sum();
        (self.lru.weight() as u64, slots.len() as u64, slices)
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::{hash_key, SliceWriter};
    use super::*;

    fn meta(key: &str, etag: &str) -> Meta {
        Meta {
            key: key.into(),
            size: 100,
            etag: Some(etag.into()),
            last_modified: None,
            headers: vec![],
            stored_at_ms: 0,
            fresh_ms: 0,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            must_revalidate: false,
        }
    }

    fn put(index: &Index, key: &str, entry: &Entry, i: u64, len: usize) -> SliceHeader {
        let mut w = SliceWriter::create(index.layout(), key, entry.version, i).unwrap();
        w.write(&vec![7u8; len]).unwrap();
        let h = w.commit().unwrap();
        assert!(index.add(hash_key(key), &h));
        h
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_slice() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        // Room for two slices of 1000 bytes and their headers, not three.
        let index = Index::rebuild(layout, Scanned::default(), 2200);
        let key = "/a";
        let hash = hash_key(key);
        let entry = Arc::new(Entry::new(hash, meta(key, "\"1\"")).unwrap());
        index.set_entry(entry.clone()).unwrap();
        put(&index, key, &entry, 0, 1000);
        put(&index, key, &entry, 1, 1000);
        assert!(index.slice(hash, entry.version, 0).is_some()); // 0 is now the most recent
        put(&index, key, &entry, 2, 1000);
        assert!(index.slice(hash, entry.version, 1).is_none(), "1 evicted");
        assert!(index.slice(hash, entry.version, 0).is_some());
        assert!(!index.layout().slice_path(hash, entry.version, 1).exists());
        assert_eq!(index.counts.evictions.load(Relaxed), 1);
        assert_eq!(index.usage().2, 2);
    }

    #[test]
    fn a_new_version_drops_the_old_slices() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::rebuild(
            Layout::create(dir.path()).unwrap(),
            Scanned::default(),
            1 << 20,
        );
        let key = "/a";
        let hash = hash_key(key);
        let v1 = Arc::new(Entry::new(hash, meta(key, "\"1\"")).unwrap());
        index.set_entry(v1.clone()).unwrap();
        put(&index, key, &v1, 0, 10);
        let v2 = Arc::new(Entry::new(hash, meta(key, "\"2\"")).unwrap());
        index.set_entry(v2.clone()).unwrap();
        assert!(index.slice(hash, v1.version, 0).is_none());
        assert!(index.slice(hash, v2.version, 0).is_none());
        assert!(!index.layout().slice_path(hash, v1.version, 0).exists());
        // A late slice of the old version is refused.
        let mut w = SliceWriter::create(index.layout(), key, v1.version, 1).unwrap();
        w.write(b"old").unwrap();
        let h = w.commit().unwrap();
        assert!(!index.add(hash, &h));
        assert!(!index.layout().slice_path(hash, v1.version, 1).exists());
    }

    #[test]
    fn a_rebuild_keeps_slices_with_their_meta_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = "/a";
        let hash = hash_key(key);
        let version;
        {
            let index = Index::rebuild(
                Layout::create(dir.path()).unwrap(),
                Scanned::default(),
                1 << 20,
            );
            let e = Arc::new(Entry::new(hash, meta(key, "\"1\"")).unwrap());
            version = e.version;
            index.set_entry(e.clone()).unwrap();
            put(&index, key, &e, 0, 10);
            put(&index, key, &e, 1, 10);
            // An orphan: a slice of an object whose meta is gone.
            let mut w = SliceWriter::create(index.layout(), "/b", 5, 0).unwrap();
            w.write(b"x").unwrap();
            w.commit().unwrap();
        }
        let layout = Layout::create(dir.path()).unwrap();
        let scanned = layout.scan().unwrap();
        let index = Index::rebuild(layout, scanned, 1 << 20);
        let s = index.slice(hash, version, 1).unwrap();
        assert_eq!(s.len, 10);
        assert!(!s.verified, "checked on first read");
        assert_eq!(index.usage().1, 1);
        assert!(!index.layout().slice_path(hash_key("/b"), 5, 0).exists());
    }
}
