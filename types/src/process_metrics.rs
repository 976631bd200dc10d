//! The `process_*` series (CPU, memory, file descriptors, threads) with
//! `process_cpu_seconds_total` to the nanosecond: the prometheus crate's
//! process collector keeps it in an integer counter of whole seconds, so a
//! process that used 0.9 s of CPU reads 0, and `rate()` of it jumps.

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;

/// The crate's process collector with the CPU time made exact.
pub struct ProcessMetrics(ProcessCollector);

impl ProcessMetrics {
    /// For this process.
    pub fn for_self() -> ProcessMetrics {
        ProcessMetrics(ProcessCollector::for_self())
    }

    /// Puts it in place of the crate's own collector in the default registry.
    pub fn replace_default() -> prometheus::Result<()> {
        // Unregistering matches by the series' descriptions: a fresh
        // collector stands for the one the default registry made.
        let _ = prometheus::unregister(Box::new(ProcessCollector::for_self()));
        prometheus::register(Box::new(ProcessMetrics::for_self()))
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.collect();
        let seconds = crate::own_process::cpu_ns() as f64 / 1e9;
        for family in &mut families {
            if family.name() == "process_cpu_seconds_total" {
                for m in family.mut_metric() {
                    let mut c = prometheus::proto::Counter::default();
                    c.set_value(seconds);
                    m.set_counter(c);
                }
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_have_a_fraction() {
        // Burn a little CPU so the figure is above zero but (most likely) under a second.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let families = ProcessMetrics::for_self().collect();
        let cpu = families
            .iter()
            .find(|f| f.name() == "process_cpu_seconds_total")
            .expect("the CPU series");
        let v = cpu.get_metric()[0].get_counter().value();
        assert!(v > 0.0 && v.fract() != 0.0, "{v}");
    }
}
