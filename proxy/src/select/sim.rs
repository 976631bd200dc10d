//! A deterministic simulation (no sockets, seeded randomness, simulated
//! time): origins of different capacities whose load reports refresh only
//! once a simulated second, and a steady stream of picks. It shows the
//! herding of "argmin on the polled score" and that the tier policy does not herd.

use super::Selection;
use super::{Rating, Tier};
use crate::origins::Origin;
use cdn_types::LoadReport;
use std::sync::Arc;

const CAPACITIES: [f64; 5] = [1.0, 1.0, 2.0, 2.0, 4.0];
/// Requests one unit of capacity completes per tick.
const SERVICE_PER_UNIT: f64 = 10.0;
/// Ticks per simulated second (a tick is 10 ms).
const TICKS_PER_SEC: usize = 100;
const SECONDS: usize = 20;

struct Outcome {
    /// Per tick, after arrivals: max over origins of in-flight/capacity, divided by the mean of it.
    imbalance: Vec<f64>,
    completed: u64,
}

/// Runs the simulation, picking with `pick(origins, ratings, stale_snapshot)`;
/// the ratings are refreshed every 10 ticks (100 simulated ms), as the rater does.
fn simulate(
    load: f64,
    mut pick: impl FnMut(&[Arc<Origin>], &[Arc<Rating>], &[(f64, i64)]) -> usize,
) -> Outcome {
    let origins: Vec<Arc<Origin>> = CAPACITIES
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let o = Origin::new(format!("10.0.0.{i}:80").parse().unwrap(), "sim", c);
            o.health.record_check(Some(true), 1, 1);
            Arc::new(o)
        })
        .collect();
    let total_service: f64 = CAPACITIES.iter().map(|c| c * SERVICE_PER_UNIT).sum();
    let arrivals_per_tick = (total_service * load) as usize;
    // What the polled load report says, refreshed once a second: (cpu, in-flight).
    let mut snapshot = vec![(0.0, 0i64); origins.len()];
    let mut busy_in_second = vec![0.0; origins.len()];
    let mut imbalance = Vec::new();
    let mut completed = 0;
    let ratings: Vec<Arc<Rating>> = origins.iter().map(|_| Arc::default()).collect();
    let cfg = Selection::default();
    for tick in 0..SECONDS * TICKS_PER_SEC {
        if tick % 10 == 0 {
            for (o, r) in origins.iter().zip(&ratings) {
                r.update(o, &cfg, (tick * 10) as u64);
            }
        }
        for _ in 0..arrivals_per_tick {
            let i = pick(&origins, &ratings, &snapshot);
            origins[i].start_request();
        }
        // The load each origin faces this tick: in flight after arrivals, per unit of capacity.
        if tick >= 2 * TICKS_PER_SEC {
            let norm: Vec<f64> = origins
                .iter()
                .map(|o| o.inflight() as f64 / o.capacity())
                .collect();
            let mean = norm.iter().sum::<f64>() / norm.len() as f64;
            let max = norm.iter().cloned().fold(0.0, f64::max);
            imbalance.push(max / mean);
        }
        for (i, o) in origins.iter().enumerate() {
            let can = (CAPACITIES[i] * SERVICE_PER_UNIT) as i64;
            let done = o.inflight().min(can);
            for _ in 0..done {
                o.end_request();
            }
            completed += done as u64;
            busy_in_second[i] += done as f64 / can as f64;
        }
        if (tick + 1) % TICKS_PER_SEC == 0 {
            for (i, o) in origins.iter().enumerate() {
                let cpu = busy_in_second[i] / TICKS_PER_SEC as f64;
                o.set_load(&LoadReport {
                    cpu_utilization: cpu,
                    mem_utilization: 0.3,
                    ..Default::default()
                });
                snapshot[i] = (cpu, o.inflight());
                busy_in_second[i] = 0.0;
            }
        }
    }
    Outcome {
        imbalance,
        completed,
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

/// The original system: every request to the lowest score of the last poll.
fn argmin_on_polled_score(
    origins: &[Arc<Origin>],
    _ratings: &[Arc<Rating>],
    snapshot: &[(f64, i64)],
) -> usize {
    let s = Selection::default();
    let score = |i: usize| {
        let (cpu, inflight) = snapshot[i];
        let streams = (inflight as f64 / (s.ceilings.streams * origins[i].capacity())).min(1.0);
        100.0 * (s.weights.cpu * cpu + s.weights.memory * 0.3 + s.weights.streams * streams)
    };
    (0..origins.len())
        .min_by(|&a, &b| score(a).total_cmp(&score(b)))
        .unwrap()
}

#[test]
fn argmin_on_polled_scores_herds_and_the_tier_policy_does_not() {
    for load in [0.5, 0.8, 0.95] {
        let herd = simulate(load, argmin_on_polled_score);
        let mut rng = fastrand::Rng::with_seed(7);
        let tier = simulate(load, |origins, ratings, _| {
            super::policies_test::pick_once(&Tier, origins, ratings, 0, &|_| true, &mut rng)
                .unwrap()
        });

        let (h50, h99) = (
            percentile(&herd.imbalance, 0.5),
            percentile(&herd.imbalance, 0.99),
        );
        let (t50, t99) = (
            percentile(&tier.imbalance, 0.5),
            percentile(&tier.imbalance, 0.99),
        );
        println!("load {load}: argmin max/mean p50 {h50:.2} p99 {h99:.2}; tier p50 {t50:.2} p99 {t99:.2}");
        // Argmin sends a whole second of traffic to one origin: its queue
        // reaches several times the mean (the most possible with 5 origins is 5).
        assert!(h99 > 3.0, "argmin should herd at load {load}: p99 {h99}");
        assert!(
            h50 > 2.0,
            "argmin should herd most of the time at load {load}: p50 {h50}"
        );
        // The tier policy keeps every origin's in-flight per unit of capacity close to the mean.
        assert!(t99 < 1.5, "tier policy imbalance p99 {t99} at load {load}");
        assert!(
            tier.completed >= herd.completed,
            "and it serves at least as much"
        );
    }
}
