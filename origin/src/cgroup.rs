//! The container's resource limits and usage, from cgroup v2 or v1 files.
//!
//! Only what the load report needs: CPU quota and usage, memory limit and
//! working set. Absent files or "no limit" mean `None`, and the caller falls
//! back to process figures.

use std::fs;
use std::path::{Path, PathBuf};

/// Limits above this are "unlimited" (cgroup v1 writes a huge page-aligned number).
const UNLIMITED: u64 = 1 << 60;

/// The CPU side of a cgroup that has a quota.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuLimit {
    /// File holding cumulative usage.
    usage_file: PathBuf,
    /// cgroup v2 reports microseconds in `cpu.stat`; v1 nanoseconds in `cpuacct.usage`.
    v2: bool,
    /// The quota in cores (quota / period).
    pub cores: f64,
}

/// The memory side of a cgroup that has a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct MemLimit {
    dir: PathBuf,
    v2: bool,
    /// The limit in bytes.
    pub limit: u64,
}

/// This process's cgroup limits, where there are any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cgroup {
    /// Set when the cgroup has a CPU quota.
    pub cpu: Option<CpuLimit>,
    /// Set when the cgroup has a memory limit.
    pub mem: Option<MemLimit>,
}

impl Cgroup {
    /// Detects this process's cgroup under `/sys/fs/cgroup`.
    pub fn detect() -> Self {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::detect_in(Path::new("/sys/fs/cgroup"), &own)
    }

    /// Detects limits given the cgroup mount root and the text of `/proc/self/cgroup`.
    pub fn detect_in(root: &Path, proc_self_cgroup: &str) -> Self {
        let mut cg = Cgroup::default();
        for line in proc_self_cgroup.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                // cgroup v2 unified hierarchy.
                for dir in candidates(root, path) {
                    if cg.cpu.is_none() {
                        cg.cpu = v2_cpu(&dir);
                    }
                    if cg.mem.is_none() {
                        cg.mem = v2_mem(&dir);
                    }
                }
                continue;
            }
            let names: Vec<&str> = controllers.split(',').collect();
            if names.contains(&"cpu") && cg.cpu.is_none() {
                cg.cpu = ["cpu,cpuacct", "cpuacct,cpu", "cpu"]
                    .iter()
                    .flat_map(|m| candidates(&root.join(m), path))
                    .find_map(|d| v1_cpu(root, &d, path));
            }
            if names.contains(&"memory") && cg.mem.is_none() {
                cg.mem = candidates(&root.join("memory"), path)
                    .into_iter()
                    .find_map(|d| v1_mem(&d));
            }
        }
        cg
    }

    /// Cumulative CPU time used by the cgroup, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        let cpu = self.cpu.as_ref()?;
        let text = fs::read_to_string(&cpu.usage_file).ok()?;
        if cpu.v2 {
            stat_value(&text, "usage_usec").map(|us| us * 1000)
        } else {
            text.trim().parse().ok()
        }
    }

    /// The cgroup's working set in bytes: usage less inactive file cache,
    /// the figure kubelet and `docker stats` use (a video server's page cache
    /// would otherwise read as full memory).
    pub fn mem_working_set(&self) -> Option<u64> {
        let mem = self.mem.as_ref()?;
        let (usage, stat, key) = if mem.v2 {
            ("memory.current", "memory.stat", "inactive_file")
        } else {
            (
                "memory.usage_in_bytes",
                "memory.stat",
                "total_inactive_file",
            )
        };
        let usage: u64 = read_u64(&mem.dir.join(usage))?;
        let inactive = fs::read_to_string(mem.dir.join(stat))
            .ok()
            .and_then(|s| stat_value(&s, key))
            .unwrap_or(0);
        Some(usage.saturating_sub(inactive))
    }
}

/// The cgroup's own folder, then the mount root (inside a container with a
/// cgroup namespace, `/proc/self/cgroup` may name a path the mount does not have).
fn candidates(root: &Path, path: &str) -> Vec<PathBuf> {
    let own = root.join(path);
    if path.is_empty() || own == root {
        vec![root.to_path_buf()]
    } else {
        vec![own, root.to_path_buf()]
    }
}

fn v2_cpu(dir: &Path) -> Option<CpuLimit> {
    let text = fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?; // "max" fails to parse: no quota
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0 && dir.join("cpu.stat").exists()).then(|| CpuLimit {
        usage_file: dir.join("cpu.stat"),
        v2: true,
        cores: quota / period,
    })
}

fn v2_mem(dir: &Path) -> Option<MemLimit> {
    let limit: u64 = read_u64(&dir.join("memory.max"))?; // "max" fails to parse: no limit
    (limit > 0 && limit < UNLIMITED).then(|| MemLimit {
        dir: dir.to_path_buf(),
        v2: true,
        limit,
    })
}

fn v1_cpu(root: &Path, dir: &Path, path: &str) -> Option<CpuLimit> {
    let quota: i64 = fs::read_to_string(dir.join("cpu.cfs_quota_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let period: i64 = fs::read_to_string(dir.join("cpu.cfs_period_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if quota <= 0 || period <= 0 {
        return None;
    }
    // Usage lives in the cpuacct controller, which is often co-mounted with cpu.
    let usage_file = [dir.to_path_buf()]
        .into_iter()
        .chain(candidates(&root.join("cpuacct"), path))
        .map(|d| d.join("cpuacct.usage"))
        .find(|f| f.exists())?;
    Some(CpuLimit {
        usage_file,
        v2: false,
        cores: quota as f64 / period as f64,
    })
}

fn v1_mem(dir: &Path) -> Option<MemLimit> {
    let limit = read_u64(&dir.join("memory.limit_in_bytes"))?;
    (limit > 0 && limit < UNLIMITED).then(|| MemLimit {
        dir: dir.to_path_buf(),
        v2: false,
        limit,
    })
}

fn read_u64(file: &Path) -> Option<u64> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v2_with_limits() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("kubepods/pod1");
        write(&d, "cpu.max", "150000 100000\n");
        write(&d, "cpu.stat", "usage_usec 2500\nuser_usec 2000\n");
        write(&d, "memory.max", "1073741824\n");
        write(&d, "memory.current", "600000000\n");
        write(&d, "memory.stat", "anon 1\ninactive_file 100000000\n");
        let cg = Cgroup::detect_in(t.path(), "0::/kubepods/pod1\n");
        assert_eq!(cg.cpu.as_ref().unwrap().cores, 1.5);
        assert_eq!(cg.cpu_usage_ns(), Some(2_500_000));
        assert_eq!(cg.mem.as_ref().unwrap().limit, 1 << 30);
        assert_eq!(cg.mem_working_set(), Some(500_000_000));
    }

    #[test]
    fn v2_namespaced_root_and_no_limits() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cpu.max", "max 100000\n");
        write(t.path(), "cpu.stat", "usage_usec 1\n");
        write(t.path(), "memory.max", "max\n");
        // The path in /proc/self/cgroup does not exist under the mount: the root is used.
        let cg = Cgroup::detect_in(t.path(), "0::/some/where\n");
        assert_eq!(cg, Cgroup::default());
    }

    #[test]
    fn v1_with_limits() {
        let t = tempfile::tempdir().unwrap();
        let cpu = t.path().join("cpu,cpuacct/docker/abc");
        write(&cpu, "cpu.cfs_quota_us", "50000\n");
        write(&cpu, "cpu.cfs_period_us", "100000\n");
        write(&cpu, "cpuacct.usage", "123456789\n");
        let mem = t.path().join("memory/docker/abc");
        write(&mem, "memory.limit_in_bytes", "2147483648\n");
        write(&mem, "memory.usage_in_bytes", "1000\n");
        write(&mem, "memory.stat", "total_inactive_file 400\n");
        let cg = Cgroup::detect_in(
            t.path(),
            "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
        );
        assert_eq!(cg.cpu.as_ref().unwrap().cores, 0.5);
        assert_eq!(cg.cpu_usage_ns(), Some(123_456_789));
        assert_eq!(cg.mem_working_set(), Some(600));
    }

    #[test]
    fn v1_unlimited() {
        let t = tempfile::tempdir().unwrap();
        let cpu = t.path().join("cpu");
        write(&cpu, "cpu.cfs_quota_us", "-1\n");
        write(&cpu, "cpu.cfs_period_us", "100000\n");
        write(
            &t.path().join("memory"),
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let cg = Cgroup::detect_in(t.path(), "2:cpu:/\n4:memory:/\n");
        assert_eq!(cg, Cgroup::default());
    }
}
