//! A deterministic simulation (no sockets, seeded randomness, simulated
//! time): origins of different capacities serving queues, whose load
//! reports refresh only once a simulated second, and a steady stream of
//! picks. It shows the herding of "argmin on the polled score", that the
//! tier policy does not herd, that it moves traffic off a slow origin, and
//! that a stall hitting every origin alike reshuffles nothing.

use super::rating::rate_round;
use super::{Pick, Policy, Rating, Selection, Tier, TierView};
use crate::origins::Origin;
use cdn_types::LoadReport;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

const CAPACITIES: [f64; 5] = [1.0, 1.0, 2.0, 2.0, 4.0];
/// Requests one unit of capacity completes per tick.
const SERVICE_PER_UNIT: f64 = 10.0;
/// Ticks per simulated second (a tick is 10 ms).
const TICKS_PER_SEC: usize = 100;
const TICK_MS: u64 = 10;
const SECONDS: usize = 20;

/// What can go wrong in a run.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// This origin answers this many ticks later than the others.
    slow: Option<(usize, usize)>,
    /// No origin completes anything from this tick for this many ticks.
    stall: Option<(usize, usize)>,
}

struct Outcome {
    /// Per tick after the first two seconds: max over origins of
    /// in-flight/capacity, divided by the mean of it.
    imbalance: Vec<f64>,
    completed: u64,
    /// Picks per origin in each simulated second.
    picks: Vec<[u64; CAPACITIES.len()]>,
    /// The highest tier each origin reached after the first two seconds.
    max_tier: [u8; CAPACITIES.len()],
}

/// How a run picks: `(origins, ratings, view, polled (cpu, in-flight))`.
type Picker<'a> = dyn FnMut(&[Arc<Origin>], &[Arc<Rating>], &TierView, &[(f64, i64)]) -> usize + 'a;

/// Runs the simulation; the ratings and the tier view are refreshed every
/// 10 ticks (100 simulated ms), as the rater does.
fn simulate(load: f64, faults: Faults, pick: &mut Picker<'_>) -> Outcome {
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
    let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); origins.len()];
    // What the polled load report says, refreshed once a second: (cpu, in-flight).
    let mut snapshot = vec![(0.0, 0i64); origins.len()];
    let mut busy_in_second = vec![0.0; origins.len()];
    let mut out = Outcome {
        imbalance: Vec::new(),
        completed: 0,
        picks: Vec::new(),
        max_tier: [0; CAPACITIES.len()],
    };
    let ratings: Vec<Arc<Rating>> = origins.iter().map(|_| Arc::default()).collect();
    let cfg = Selection::default();
    let mut view = TierView::build(&origins, &ratings);
    for tick in 0..SECONDS * TICKS_PER_SEC {
        let now_ms = tick as u64 * TICK_MS;
        if tick % 10 == 0 {
            rate_round(&origins, &ratings, &cfg, now_ms);
            view = TierView::build(&origins, &ratings);
            if tick >= 2 * TICKS_PER_SEC {
                for (m, r) in out.max_tier.iter_mut().zip(&ratings) {
                    *m = (*m).max(r.tier());
                }
            }
        }
        if tick % TICKS_PER_SEC == 0 {
            out.picks.push([0; CAPACITIES.len()]);
        }
        for _ in 0..arrivals_per_tick {
            let i = pick(&origins, &ratings, &view, &snapshot);
            origins[i].start_request();
            queues[i].push_back(tick);
            out.picks.last_mut().unwrap()[i] += 1;
        }
        // The load each origin faces this tick: in flight after arrivals, per unit of capacity.
        if tick >= 2 * TICKS_PER_SEC {
            let norm: Vec<f64> = origins
                .iter()
                .map(|o| o.inflight() as f64 / o.capacity())
                .collect();
            let mean = norm.iter().sum::<f64>() / norm.len() as f64;
            let max = norm.iter().cloned().fold(0.0, f64::max);
            out.imbalance.push(max / mean);
        }
        let stalled = faults
            .stall
            .is_some_and(|(from, len)| (from..from + len).contains(&tick));
        for (i, o) in origins.iter().enumerate() {
            let can = (CAPACITIES[i] * SERVICE_PER_UNIT) as usize;
            let delay = faults.slow.filter(|s| s.0 == i).map_or(0, |s| s.1);
            let mut done = 0;
            while done < can && !stalled {
                match queues[i].front() {
                    Some(&arrived) if arrived + delay <= tick => {
                        queues[i].pop_front();
                        let ttfb = Duration::from_millis((tick - arrived + 1) as u64 * TICK_MS);
                        o.observe_ttfb(ttfb, now_ms, cfg.ewma_decay);
                        o.end_request();
                        done += 1;
                    }
                    _ => break,
                }
            }
            out.completed += done as u64;
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
    out
}

/// Mean total-variation distance between consecutive seconds' shares:
/// 0 when no share moves, 1 when all traffic changes origin.
fn share_movement(picks: &[[u64; CAPACITIES.len()]]) -> f64 {
    let shares: Vec<Vec<f64>> = picks
        .iter()
        .map(|s| {
            let all = s.iter().sum::<u64>().max(1) as f64;
            s.iter().map(|&n| n as f64 / all).collect()
        })
        .collect();
    let moves: Vec<f64> = shares
        .windows(2)
        .map(|w| {
            0.5 * w[0]
                .iter()
                .zip(&w[1])
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
        })
        .collect();
    moves.iter().sum::<f64>() / moves.len() as f64
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
    _view: &TierView,
    snapshot: &[(f64, i64)],
) -> usize {
    let score = |i: usize| {
        let (cpu, inflight) = snapshot[i];
        let streams = (inflight as f64 / (100.0 * origins[i].capacity())).min(1.0);
        100.0 * (0.30 * cpu + 0.25 * 0.3 + 0.15 * streams)
    };
    (0..origins.len())
        .min_by(|&a, &b| score(a).total_cmp(&score(b)))
        .unwrap()
}

/// The tier policy as the proxy runs it, over the rater's view.
fn tier_picker(rng: &mut fastrand::Rng) -> Box<Picker<'_>> {
    let cfg = Selection::default();
    let tier = Tier::default();
    Box::new(
        move |origins: &[Arc<Origin>],
              ratings: &[Arc<Rating>],
              view: &TierView,
              _: &[(f64, i64)]| {
            tier.pick(&mut Pick {
                origins,
                ratings,
                view: Some(view),
                cfg: &cfg,
                seed: 0,
                usable: &|_| true,
                rng,
            })
            .unwrap()
        },
    )
}

#[test]
fn argmin_on_polled_scores_herds_and_the_tier_policy_does_not() {
    for load in [0.5, 0.8, 0.95] {
        let herd = simulate(load, Faults::default(), &mut argmin_on_polled_score);
        let mut rng = fastrand::Rng::with_seed(7);
        let tier = simulate(load, Faults::default(), &mut *tier_picker(&mut rng));

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
        assert_eq!(tier.max_tier, [0; 5], "a healthy fleet stays in tier 0");
        // Shares hold still from one second to the next (random picks of
        // this many requests move about 0.03; argmin moves them wholesale).
        let (tm, hm) = (
            share_movement(&tier.picks[2..]),
            share_movement(&herd.picks[2..]),
        );
        println!("load {load}: share movement tier {tm:.4}, argmin {hm:.4}");
        assert!(tm < 0.01, "tier shares move {tm} a second at load {load}");
    }
}

#[test]
fn the_tier_policy_moves_traffic_off_a_slow_origin() {
    // Origin 2 (capacity 2 of 10) answers 20 ms later than the others.
    let mut rng = fastrand::Rng::with_seed(11);
    let out = simulate(
        0.6,
        Faults {
            slow: Some((2, 2)),
            ..Faults::default()
        },
        &mut *tier_picker(&mut rng),
    );
    let late: u64 = out.picks[5..].iter().map(|s| s[2]).sum();
    let all: u64 = out.picks[5..].iter().flat_map(|s| s.iter()).sum();
    let share = late as f64 / all as f64;
    println!("slow origin: share {share:.4}, tiers {:?}", out.max_tier);
    assert!(out.max_tier[2] >= 1, "{:?}", out.max_tier);
    // Its capacity share is 0.2; only probes reach it.
    assert!(share < 0.01, "slow origin's share {share}");
    assert_eq!(out.max_tier.iter().filter(|&&t| t > 0).count(), 1);
}

#[test]
fn a_stall_that_hits_every_origin_alike_reshuffles_nothing() {
    // Every origin stops for 280 ms at 10 s.
    let mut rng = fastrand::Rng::with_seed(13);
    let stall = simulate(
        0.6,
        Faults {
            stall: Some((10 * TICKS_PER_SEC, 28)),
            ..Faults::default()
        },
        &mut *tier_picker(&mut rng),
    );
    assert_eq!(stall.max_tier, [0; 5], "nobody changes tier");
    // Each second's shares stay at the capacity shares (0.1, 0.1, 0.2, 0.2, 0.4).
    for (s, picks) in stall.picks.iter().enumerate().skip(2) {
        let all: u64 = picks.iter().sum();
        for (i, &n) in picks.iter().enumerate() {
            let share = n as f64 / all as f64;
            let want = CAPACITIES[i] / 10.0;
            assert!(
                (share - want).abs() < 0.05,
                "second {s}: origin {i} share {share:.3}, capacity share {want}"
            );
        }
    }
}
