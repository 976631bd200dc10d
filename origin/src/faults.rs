//! Fault injection for tests, benchmarks and demos: latency, a bandwidth
//! cap, a concurrency limit with a queue, a 5xx rate, CPU burners, hang, and
//! bodies cut short.
//! All off unless set by flags or, with `--fault-admin`, by
//! `POST /admin/faults` from loopback.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Most CPU-burning threads one origin may run.
pub const MAX_BURN_THREADS: usize = 64;

/// The fault settings; every field's zero value means "off".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSettings {
    /// Added latency before the first byte of every media response, in milliseconds.
    #[arg(long = "fault-latency-ms", value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Per-stream bandwidth cap in bytes per second (0: none).
    #[arg(
        long = "fault-bandwidth",
        value_name = "BYTES_PER_SEC",
        default_value_t = 0
    )]
    pub bandwidth_bytes_per_sec: u64,
    /// Media requests served at once; more wait in a queue (0: no limit).
    #[arg(long = "fault-concurrency", value_name = "N", default_value_t = 0)]
    pub concurrency_limit: usize,
    /// Fraction (0.0–1.0) of media requests answered with `error_status`.
    #[arg(
        long = "fault-error-rate",
        value_name = "FRACTION",
        default_value_t = 0.0
    )]
    pub error_rate: f64,
    /// Status of injected errors (500–599).
    #[arg(
        long = "fault-error-status",
        value_name = "STATUS",
        default_value_t = 503
    )]
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    /// Threads that burn CPU in a busy loop (0–64); shows in cpu_utilization.
    #[arg(long = "fault-cpu-burn", value_name = "THREADS", default_value_t = 0)]
    pub cpu_burn_threads: usize,
    /// The CPU utilisation (0.0–1.0) the load report gives at least, as if
    /// the process were that busy: load-aware balancing shown or tested
    /// without burning a core (0: the measured figure).
    #[arg(
        long = "fault-cpu-report",
        value_name = "FRACTION",
        default_value_t = 0.0
    )]
    pub cpu_report_floor: f64,
    /// Accept connections but never answer (except /admin/faults).
    #[arg(long = "fault-hang", default_value_t = false)]
    pub hang: bool,
    /// Cut every media body after this many bytes by closing the
    /// connection, as a crashing or restarted origin does (0: never).
    #[arg(long = "fault-cut-after", value_name = "BYTES", default_value_t = 0)]
    pub cut_after_bytes: u64,
}

fn default_error_status() -> u16 {
    503
}

impl FaultSettings {
    /// Checks ranges; the message names the field and the allowed values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error_rate must be between 0.0 and 1.0, got {}",
                self.error_rate
            ));
        }
        if !(500..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be 500-599, got {}",
                self.error_status
            ));
        }
        if !(0.0..=1.0).contains(&self.cpu_report_floor) {
            return Err(format!(
                "cpu_report_floor must be between 0.0 and 1.0, got {}",
                self.cpu_report_floor
            ));
        }
        if self.cpu_burn_threads > MAX_BURN_THREADS {
            return Err(format!(
                "cpu_burn_threads must be at most {MAX_BURN_THREADS}, got {}",
                self.cpu_burn_threads
            ));
        }
        Ok(())
    }
}

/// A partial update from `POST /admin/faults`: absent fields stay as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPatch {
    latency_ms: Option<u64>,
    bandwidth_bytes_per_sec: Option<u64>,
    concurrency_limit: Option<usize>,
    error_rate: Option<f64>,
    error_status: Option<u16>,
    cpu_burn_threads: Option<usize>,
    cpu_report_floor: Option<f64>,
    hang: Option<bool>,
    cut_after_bytes: Option<u64>,
    /// Turn everything off first, then apply the other fields.
    #[serde(default)]
    reset: bool,
}

impl FaultPatch {
    fn apply(&self, base: FaultSettings) -> FaultSettings {
        let mut s = if self.reset {
            FaultSettings {
                error_status: 503,
                ..Default::default()
            }
        } else {
            base
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            latency_ms,
            bandwidth_bytes_per_sec,
            concurrency_limit,
            error_rate,
            error_status,
            cpu_burn_threads,
            cpu_report_floor,
            hang,
            cut_after_bytes
        );
        s
    }
}

/// The settings in force plus what they need at run time.
pub struct Active {
    /// The settings.
    pub settings: FaultSettings,
    /// Present when a concurrency limit is set.
    pub limiter: Option<Arc<Semaphore>>,
}

/// The origin's fault state, read lock-free on every request.
pub struct Faults {
    active: ArcSwap<Active>,
    /// Serializes updates so the burner and the settings agree.
    update: Mutex<()>,
    burn_target: Arc<AtomicUsize>,
    burners_started: Mutex<usize>,
    admin_enabled: bool,
}

impl Faults {
    /// Starts with `settings` (already validated); `admin_enabled` opens `/admin/faults`.
    pub fn new(settings: FaultSettings, admin_enabled: bool) -> Self {
        let f = Faults {
            active: ArcSwap::from_pointee(Active {
                settings,
                limiter: None,
            }),
            update: Mutex::new(()),
            burn_target: Arc::new(AtomicUsize::new(0)),
            burners_started: Mutex::new(0),
            admin_enabled,
        };
        f.install(settings);
        f
    }

    /// Whether `POST /admin/faults` is enabled.
    pub fn admin_enabled(&self) -> bool {
        self.admin_enabled
    }

    /// The settings in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<Active>> {
        self.active.load()
    }

    /// Applies a patch; on a validation error nothing changes.
    pub fn patch(&self, patch: &FaultPatch) -> Result<FaultSettings, String> {
        let _serial = self.update.lock().unwrap_or_else(|p| p.into_inner());
        let next = patch.apply(self.active.load().settings);
        next.validate()?;
        self.install(next);
        Ok(next)
    }

    fn install(&self, s: FaultSettings) {
        let old = self.active.load();
        let limiter = if s.concurrency_limit == 0 {
            None
        } else if old.settings.concurrency_limit == s.concurrency_limit && old.limiter.is_some() {
            old.limiter.clone()
        } else {
            Some(Arc::new(Semaphore::new(s.concurrency_limit)))
        };
        self.set_burners(s.cpu_burn_threads);
        self.active.store(Arc::new(Active {
            settings: s,
            limiter,
        }));
    }

    /// Threads are started on first need and then idle (sleeping) when not wanted.
    fn set_burners(&self, n: usize) {
        self.burn_target.store(n, Ordering::Relaxed);
        let mut started = self
            .burners_started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *started < n {
            let index = *started;
            let target = self.burn_target.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fault-burn-{index}"))
                .spawn(move || burn(index, &target));
            if spawned.is_err() {
                tracing::warn!("could not start CPU burner thread {index}");
                break;
            }
            *started += 1;
        }
    }
}

fn burn(index: usize, target: &AtomicUsize) {
    loop {
        if index < target.load(Ordering::Relaxed) {
            let until = Instant::now() + Duration::from_millis(10);
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_merges_validates_and_resets() {
        let f = Faults::new(
            FaultSettings {
                error_status: 503,
                ..Default::default()
            },
            true,
        );
        let p: FaultPatch =
            serde_json::from_str(r#"{"latency_ms": 50, "concurrency_limit": 2}"#).unwrap();
        let s = f.patch(&p).unwrap();
        assert_eq!((s.latency_ms, s.concurrency_limit), (50, 2));
        assert_eq!(f.current().limiter.as_ref().unwrap().available_permits(), 2);

        let bad: FaultPatch = serde_json::from_str(r#"{"error_rate": 1.5}"#).unwrap();
        assert!(f.patch(&bad).unwrap_err().contains("error_rate"));
        assert_eq!(
            f.current().settings.latency_ms,
            50,
            "a rejected patch changes nothing"
        );

        let reset: FaultPatch = serde_json::from_str(r#"{"reset": true, "hang": true}"#).unwrap();
        let s = f.patch(&reset).unwrap();
        assert!(s.hang);
        assert_eq!(
            (s.latency_ms, s.concurrency_limit, s.error_status),
            (0, 0, 503)
        );
        assert!(f.current().limiter.is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<FaultPatch>(r#"{"latency": 5}"#).is_err());
    }
}
