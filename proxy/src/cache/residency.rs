//! Cold slices are read on the blocking pool. A hit whose bytes are not in
//! the page cache would make its `sendfile` or `pread` wait for the disk
//! on a runtime thread, stalling every other viewer on that thread for as
//! long (a millisecond or more per slice on an SSD). So before a range of
//! a slice file is sent or read, its residency is asked of the kernel; a
//! cold range is first read into the page cache on the blocking pool, as
//! cdn-origin reads cold files and nginx does with `aio threads`.
//!
//! Residency comes from `cachestat` (Linux 6.5), which counts the cached
//! pages of a range in one call. On older kernels a range is taken as
//! resident when its first, middle and last bytes are, each asked with a
//! one-byte `preadv2(RWF_NOWAIT)`, which reads only from the page cache.

use rustix::io::{Errno, ReadWriteFlags};
use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// The page size residency is counted in (4 KiB on the platforms served).
const PAGE: u64 = 4096;

/// `cachestat` is missing (an older kernel, or a seccomp filter): probe.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// Are bytes `offset..offset + len` of `file` in the page cache? A
/// question the kernel cannot answer is taken as yes (the read then runs
/// where it is, as it did before this check).
pub fn resident(file: &File, offset: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    if !NO_CACHESTAT.load(Relaxed) {
        match cached_pages(file, offset, len) {
            Ok(cached) => {
                let pages = (offset + len).div_ceil(PAGE) - offset / PAGE;
                return cached >= pages;
            }
            Err(e) if e == Errno::NOSYS || e == Errno::PERM => NO_CACHESTAT.store(true, Relaxed),
            Err(_) => return true,
        }
    }
    probed(file, offset, len)
}

/// Residency without `cachestat`: the first, middle and last bytes of the
/// range (pages of a slice are read, and age, together).
fn probed(file: &File, offset: u64, len: u64) -> bool {
    let last = offset + len - 1;
    [offset, offset + len / 2, last]
        .into_iter()
        .all(|at| byte_resident(file, at))
}

/// Reads bytes `offset..offset + len` of `file` into the page cache on the
/// blocking pool (sent to `/dev/null`: no copy into user memory).
pub async fn warm(file: Arc<File>, offset: u64, len: u64) -> io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let null = dev_null()?;
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let want = (end - at) as usize;
            let n = rustix::fs::sendfile(null, &*file, Some(&mut at), want)?;
            if n == 0 {
                break; // the file is shorter: the read after says so
            }
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// `/dev/null`, opened once.
fn dev_null() -> io::Result<&'static File> {
    static NULL: OnceLock<File> = OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f);
    }
    let f = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    Ok(NULL.get_or_init(|| f))
}

/// Is the byte at `at` in the page cache? (A read that must not wait.)
fn byte_resident(file: &File, at: u64) -> bool {
    let mut byte = [0u8; 1];
    let read = rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(&mut byte)],
        at,
        ReadWriteFlags::NOWAIT,
    );
    !matches!(read, Err(Errno::AGAIN))
}

/// `struct cachestat_range` (linux/mman.h).
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` (linux/mman.h).
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// The number of `cachestat`, the same on every architecture (it came
/// after the tables were unified).
const SYS_CACHESTAT: libc::c_long = 451;

/// Pages of the range in the page cache, by `cachestat(2)`.
fn cached_pages(file: &File, offset: u64, len: u64) -> Result<u64, Errno> {
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: the descriptor is open (borrowed from `file`), and both
    // pointers are to live values of the layouts the kernel expects.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd() as libc::c_uint,
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0 as libc::c_uint,
        )
    };
    if r != 0 {
        return Err(Errno::from_raw_os_error(
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(stat.nr_cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn an_evicted_range_is_cold_until_warmed() {
        // On disk, not tmpfs: tmpfs pages cannot be evicted.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("slice");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = Arc::new(File::open(&path).unwrap());
        // Both ways of asking: cachestat where the kernel has it, probes.
        let ways: [fn(&File, u64, u64) -> bool; 2] = [resident, probed];
        for is_resident in ways {
            assert!(is_resident(&f, 0, 1 << 20), "just written");
            // The kernel may keep a page a moment (still on a CPU's LRU
            // batch, or brought back by a probe's read-ahead): evict again
            // until the range is seen cold, up to a deadline.
            for (offset, len) in [(0, 1 << 20), (4096, 100_000)] {
                testkit::wait_until("the range seen evicted", Duration::from_secs(10), || {
                    rustix::fs::fadvise(&*f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
                    std::future::ready((!is_resident(&f, offset, len)).then_some(()))
                })
                .await;
            }
            warm(f.clone(), 0, 1 << 20).await.unwrap();
            assert!(is_resident(&f, 0, 1 << 20), "warmed");
        }
        assert!(resident(&f, 0, 0));
    }
}
