//! Measures this origin's load: CPU and memory utilization and request rate,
//! sampled on a short interval into the metrics gauges the load report reads.
//!
//! CPU is the cgroup's usage against its quota when the container has one,
//! else this process's CPU time against the cores available, so several
//! origins on one host each report their own share. Memory is the cgroup's
//! working set against its limit, else resident memory against total memory.

use crate::cgroup::Cgroup;
use crate::metrics::Metrics;
use cdn_types::{own_process, Source};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often utilization and rate are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// Time constant of the request-rate smoothing.
const RATE_TAU_SECS: f64 = 1.0;

/// What the sampler measures against; fixed at start.
pub struct LoadSampler {
    cgroup: Cgroup,
    cores: f64,
    mem_total: u64,
}

/// One reading of the cumulative counters.
#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: u64,
    requests: u64,
}

impl LoadSampler {
    /// Detects the cgroup and the host's cores and memory.
    pub fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        LoadSampler {
            cgroup: Cgroup::detect(),
            cores,
            mem_total: mem_total().unwrap_or(0),
        }
    }

    /// Where CPU utilization comes from.
    pub fn cpu_source(&self) -> Source {
        if self.cgroup.cpu.is_some() {
            Source::Cgroup
        } else {
            Source::Process
        }
    }

    /// Where memory utilization comes from.
    pub fn mem_source(&self) -> Source {
        if self.cgroup.mem.is_some() {
            Source::Cgroup
        } else {
            Source::Process
        }
    }

    /// Sets the figures that need only one reading (memory), so the very
    /// first response already reports them; CPU and rate need two readings.
    pub fn prime(&self, metrics: &Metrics) {
        metrics.mem_utilization.set(self.memory());
    }

    /// Samples forever, updating `metrics`' gauges.
    pub async fn run(self, metrics: Arc<Metrics>) {
        let mut prev = self.read(&metrics);
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.read(&metrics);
            self.update(&metrics, prev, now);
            prev = now;
        }
    }

    fn read(&self, metrics: &Metrics) -> Reading {
        Reading {
            at: Instant::now(),
            cpu_ns: self
                .cgroup
                .cpu_usage_ns()
                .unwrap_or_else(own_process::cpu_ns),
            requests: metrics.requests_total(),
        }
    }

    fn update(&self, metrics: &Metrics, prev: Reading, now: Reading) {
        let dt = now.at.duration_since(prev.at).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let cores = self.cgroup.cpu.as_ref().map_or(self.cores, |c| c.cores);
        let cpu = now.cpu_ns.saturating_sub(prev.cpu_ns) as f64 / 1e9 / dt / cores;
        metrics.cpu_utilization.set(cpu);

        metrics.mem_utilization.set(self.memory());

        let instant_rate = now.requests.saturating_sub(prev.requests) as f64 / dt;
        let alpha = 1.0 - (-dt / RATE_TAU_SECS).exp();
        metrics
            .rps
            .set(metrics.rps.get() + alpha * (instant_rate - metrics.rps.get()));
    }
}

impl LoadSampler {
    fn memory(&self) -> f64 {
        match (&self.cgroup.mem, self.cgroup.mem_working_set()) {
            (Some(limit), Some(used)) => used as f64 / limit.limit as f64,
            _ => match (own_process::rss_bytes(), self.mem_total) {
                (Some(rss), total) if total > 0 => rss as f64 / total as f64,
                _ => 0.0,
            },
        }
    }
}

fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_memory_is_readable_here() {
        assert!(mem_total().unwrap() > 0);
    }

    #[test]
    fn update_computes_rate_and_cpu_against_cores() {
        let s = LoadSampler {
            cgroup: Cgroup::default(),
            cores: 2.0,
            mem_total: 1 << 30,
        };
        let m = Metrics::new("t", Source::Process, Source::Process).unwrap();
        let t0 = Instant::now();
        let prev = Reading {
            at: t0,
            cpu_ns: 0,
            requests: 0,
        };
        let now = Reading {
            at: t0 + Duration::from_secs(1),
            cpu_ns: 1_000_000_000,
            requests: 100,
        };
        s.update(&m, prev, now);
        // One CPU-second in one second on two cores is half the machine.
        assert!((m.cpu_utilization.get() - 0.5).abs() < 1e-9);
        // The rate moves towards 100/s by 1 - e^-1 of the way.
        assert!((m.rps.get() - 100.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-9);
        assert!(m.mem_utilization.get() > 0.0);
    }
}
