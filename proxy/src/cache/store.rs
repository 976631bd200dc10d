//! The cache's files on disk. Each slice is one file, named by the hash of
//! its object's key and its index, holding a header (magic, the object's
//! version, the slice index, the body's length and CRC-32, the full key)
//! and the body. Each object has a small JSON `.meta` beside its slices.
//!
//! A slice is written to a `.part` file and renamed when whole, so a file
//! with a final name is complete unless the disk lied; the length and the
//! checksum catch that. At start every file is checked: partial, corrupt
//! and foreign ones are deleted, never served.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// First bytes of a slice file (format version 1).
const MAGIC: [u8; 8] = *b"CDNSLC01";

/// Bytes of a slice header before the key.
const FIXED_HEADER: usize = 8 + 8 + 8 + 8 + 4 + 4;

/// Longest key stored (longer URLs are not cached).
pub const MAX_KEY: usize = 8 * 1024;

/// An object's name on disk and in the index: the 128-bit hash of its key.
pub type ObjectHash = u128;

/// The hash of a cache key.
pub fn hash_key(key: &str) -> ObjectHash {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// What the cache knows of an object, kept beside its slices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// The cache key (path and query).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Strong entity tag.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// The object's response headers (type, validators, caching), without
    /// per-connection and per-range ones.
    pub headers: Vec<(String, String)>,
    /// When the origin's answer (or its last 304) arrived, Unix milliseconds.
    pub stored_at_ms: u64,
    /// Fresh for this long after `stored_at_ms`.
    pub fresh_ms: u64,
    /// `stale-while-revalidate`, milliseconds.
    pub stale_while_revalidate_ms: u64,
    /// `stale-if-error`, milliseconds.
    pub stale_if_error_ms: u64,
    /// Never served stale.
    pub must_revalidate: bool,
}

impl Meta {
    /// The version its slices are stored under: size and validators, so a
    /// changed file never mixes with slices of the old one.
    pub fn version(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&self.size.to_le_bytes());
        h.update(self.etag.as_deref().unwrap_or("").as_bytes());
        h.update(&[0]);
        h.update(self.last_modified.as_deref().unwrap_or("").as_bytes());
        h.digest()
    }
}

/// A slice file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceHeader {
    /// The object's version ([`Meta::version`]).
    pub version: u64,
    /// The slice's index in its object.
    pub index: u64,
    /// The body's length.
    pub len: u64,
    /// CRC-32 of the body.
    pub crc: u32,
    /// The object's key.
    pub key: String,
}

impl SliceHeader {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED_HEADER + self.key.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.index.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.crc.to_le_bytes());
        b.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        b.extend_from_slice(self.key.as_bytes());
        b
    }

    /// Where the body starts in the file.
    pub fn body_offset(&self) -> u64 {
        (FIXED_HEADER + self.key.len()) as u64
    }

    /// Reads and checks a slice file's header: magic, and a file length
    /// that matches the body's.
    pub fn read(file: &File) -> io::Result<SliceHeader> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        let mut fixed = [0u8; FIXED_HEADER];
        file.read_exact_at(&mut fixed, 0)?;
        if fixed[..8] != MAGIC {
            return Err(bad("not a slice file"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().unwrap_or_default());
        let key_len = u32::from_le_bytes(fixed[36..40].try_into().unwrap_or_default()) as usize;
        if key_len > MAX_KEY {
            return Err(bad("key too long"));
        }
        let mut key = vec![0u8; key_len];
        file.read_exact_at(&mut key, FIXED_HEADER as u64)?;
        let header = SliceHeader {
            version: u64_at(8),
            index: u64_at(16),
            len: u64_at(24),
            crc: u32::from_le_bytes(fixed[32..36].try_into().unwrap_or_default()),
            key: String::from_utf8(key).map_err(|_| bad("key not UTF-8"))?,
        };
        if file.metadata()?.len() != header.body_offset() + header.len {
            return Err(bad("truncated or overlong"));
        }
        Ok(header)
    }

    /// Whether the body's checksum matches (reads the whole body).
    pub fn body_is_intact(&self, file: &File) -> io::Result<bool> {
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < self.len {
            let n = ((self.len - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], self.body_offset() + at)?;
            crc.update(&buf[..n]);
            at += n as u64;
        }
        Ok(crc.finalize() == self.crc)
    }
}

/// Where the cache's files are: `<dir>/v1/<first two hex digits>/`.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `dir`, created if missing.
    pub fn create(dir: &Path) -> io::Result<Layout> {
        let root = dir.join("v1");
        fs::create_dir_all(&root)?;
        Ok(Layout { root })
    }

    fn folder(&self, hash: ObjectHash) -> PathBuf {
        self.root.join(format!("{:02x}", (hash >> 120) as u8))
    }

    /// The object's meta file.
    pub fn meta_path(&self, hash: ObjectHash) -> PathBuf {
        self.folder(hash).join(format!("{hash:032x}.meta"))
    }

    /// A slice's file. The version is in the name, so slices of two
    /// versions of an object never share a file.
    pub fn slice_path(&self, hash: ObjectHash, version: u64, index: u64) -> PathBuf {
        self.folder(hash)
            .join(format!("{hash:032x}-{version:016x}.{index}"))
    }

    /// Writes an object's meta (to a temporary file, renamed).
    pub fn write_meta(&self, hash: ObjectHash, meta: &Meta) -> io::Result<()> {
        fs::create_dir_all(self.folder(hash))?;
        let path = self.meta_path(hash);
        let part = path.with_extension(format!("meta.part{}", fastrand::u32(..)));
        let text = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let written = fs::write(&part, text).and_then(|()| fs::rename(&part, &path));
        if written.is_err() {
            let _ = fs::remove_file(&part);
        }
        written
    }

    /// Deletes an object's meta file (missing is fine).
    pub fn remove_meta(&self, hash: ObjectHash) {
        let _ = fs::remove_file(self.meta_path(hash));
    }

    /// Deletes a slice's file (missing is fine).
    pub fn remove_slice(&self, hash: ObjectHash, version: u64, index: u64) {
        let _ = fs::remove_file(self.slice_path(hash, version, index));
    }

    /// Reads every file under the root: metas and slice headers that
    /// check out; partial, unreadable and foreign files are deleted.
    pub fn scan(&self) -> io::Result<Scanned> {
        let mut found = Scanned::default();
        for folder in fs::read_dir(&self.root)? {
            let folder = folder?.path();
            if !folder.is_dir() {
                let _ = fs::remove_file(&folder);
                continue;
            }
            for file in fs::read_dir(&folder)? {
                let path = file?.path();
                match self.read_file(&path) {
                    Some(Found::Meta(hash, meta)) => found.metas.push((hash, meta)),
                    Some(Found::Slice(hash, header)) => found.slices.push((hash, header)),
                    None => {
                        tracing::info!(file = %path.display(), "cache: discarding a partial, corrupt or foreign file");
                        found.discarded += 1;
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        Ok(found)
    }

    fn read_file(&self, path: &Path) -> Option<Found> {
        let name = path.file_name()?.to_str()?;
        let (stem, ext) = name.split_once('.')?;
        let (hash_hex, version_hex) = stem.split_once('-').unwrap_or((stem, ""));
        let hash = ObjectHash::from_str_radix(hash_hex, 16)
            .ok()
            .filter(|_| hash_hex.len() == 32)?;
        if path.parent()? != self.folder(hash) {
            return None;
        }
        if ext == "meta" && version_hex.is_empty() {
            let mut text = Vec::new();
            File::open(path).ok()?.read_to_end(&mut text).ok()?;
            let meta: Meta = serde_json::from_slice(&text).ok()?;
            return (hash_key(&meta.key) == hash).then_some(Found::Meta(hash, meta));
        }
        let index: u64 = ext.parse().ok()?;
        let version = u64::from_str_radix(version_hex, 16).ok()?;
        let header = SliceHeader::read(&File::open(path).ok()?).ok()?;
        (header.index == index && header.version == version && hash_key(&header.key) == hash)
            .then_some(Found::Slice(hash, header))
    }
}

/// One file found by a scan.
enum Found {
    Meta(ObjectHash, Meta),
    Slice(ObjectHash, SliceHeader),
}

/// What a scan found.
#[derive(Default)]
pub struct Scanned {
    /// Objects' metas.
    pub metas: Vec<(ObjectHash, Meta)>,
    /// Slices' headers.
    pub slices: Vec<(ObjectHash, SliceHeader)>,
    /// Files deleted as partial, corrupt or foreign.
    pub discarded: u64,
}

/// A slice being written: to a `.part` file, renamed when whole; dropped
/// before that, the file is deleted.
pub struct SliceWriter {
    file: std::sync::Arc<File>,
    part: PathBuf,
    path: PathBuf,
    header: SliceHeader,
    crc: crc32fast::Hasher,
    committed: bool,
}

impl SliceWriter {
    /// Starts the file for slice `index` of the object `key`, version `version`.
    pub fn create(layout: &Layout, key: &str, version: u64, index: u64) -> io::Result<SliceWriter> {
        let hash = hash_key(key);
        fs::create_dir_all(layout.folder(hash))?;
        let path = layout.slice_path(hash, version, index);
        let part = path.with_extension(format!("{index}.part{}", fastrand::u32(..)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&part)?;
        let header = SliceHeader {
            version,
            index,
            len: 0,
            crc: 0,
            key: key.to_string(),
        };
        if let Err(e) = file.write_all(&header.encode()) {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        Ok(SliceWriter {
            file: std::sync::Arc::new(file),
            part,
            path,
            header,
            crc: crc32fast::Hasher::new(),
            committed: false,
        })
    }

    /// The key of the object written.
    pub fn key(&self) -> &str {
        &self.header.key
    }

    /// The file, for readers following the write.
    pub fn file(&self) -> std::sync::Arc<File> {
        self.file.clone()
    }

    /// Where the body starts.
    pub fn body_offset(&self) -> u64 {
        self.header.body_offset()
    }

    /// Appends body bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file
            .write_all_at(bytes, self.header.body_offset() + self.header.len)?;
        self.crc.update(bytes);
        self.header.len += bytes.len() as u64;
        Ok(())
    }

    /// Seals the header (length, checksum) and gives the file its final
    /// name. Returns the header.
    pub fn commit(mut self) -> io::Result<SliceHeader> {
        self.header.crc = self.crc.clone().finalize();
        self.file.write_all_at(&self.header.encode(), 0)?;
        fs::rename(&self.part, &self.path)?;
        self.committed = true;
        Ok(self.header.clone())
    }
}

impl Drop for SliceWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> Meta {
        Meta {
            key: key.into(),
            size: 10,
            etag: Some("\"a\"".into()),
            last_modified: None,
            headers: vec![("content-type".into(), "video/mp4".into())],
            stored_at_ms: 1,
            fresh_ms: 2,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            must_revalidate: false,
        }
    }

    #[test]
    fn a_written_slice_and_meta_are_found_again_and_bad_files_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let key = "/videos/a.mp4";
        let hash = hash_key(key);
        layout.write_meta(hash, &meta(key)).unwrap();
        let mut w = SliceWriter::create(&layout, key, 7, 3).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        let header = w.commit().unwrap();
        assert_eq!(header.len, 11);
        // A slice left half-written, one truncated, and a stranger.
        let partial = SliceWriter::create(&layout, key, 7, 4).unwrap();
        let part_path = partial.part.clone();
        std::mem::forget(partial);
        assert!(part_path.exists());
        let mut w = SliceWriter::create(&layout, key, 7, 5).unwrap();
        w.write(b"0123456789").unwrap();
        w.commit().unwrap();
        let truncated = layout.slice_path(hash, 7, 5);
        let f = OpenOptions::new().write(true).open(&truncated).unwrap();
        f.set_len(f.metadata().unwrap().len() - 1).unwrap();
        let stranger = layout.folder(hash).join("notes.txt");
        fs::write(&stranger, "x").unwrap();

        let found = layout.scan().unwrap();
        assert_eq!(found.metas, vec![(hash, meta(key))]);
        assert_eq!(found.slices.len(), 1);
        assert_eq!(found.slices[0].1.index, 3);
        assert_eq!(found.discarded, 3);
        assert!(!part_path.exists() && !truncated.exists() && !stranger.exists());

        let file = File::open(layout.slice_path(hash, 7, 3)).unwrap();
        let h = SliceHeader::read(&file).unwrap();
        assert!(h.body_is_intact(&file).unwrap());
        let mut body = vec![0; 11];
        file.read_exact_at(&mut body, h.body_offset()).unwrap();
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let mut w = SliceWriter::create(&layout, "/k", 1, 0).unwrap();
        w.write(b"abcdef").unwrap();
        let h = w.commit().unwrap();
        let path = layout.slice_path(hash_key("/k"), 1, 0);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all_at(b"X", h.body_offset() + 2).unwrap();
        assert!(!SliceHeader::read(&f).unwrap().body_is_intact(&f).unwrap());
    }

    #[test]
    fn an_unwritten_slice_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let w = SliceWriter::create(&layout, "/k", 1, 0).unwrap();
        let part = w.part.clone();
        drop(w);
        assert!(!part.exists());
    }
}
