//! Unit tests of each policy's contract, on in-memory origins.

use super::Selection;
use super::*;
use cdn_types::LoadReport;
use std::collections::HashMap;

fn origins(capacities: &[f64]) -> Vec<Arc<Origin>> {
    capacities
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let o = Origin::new(format!("10.0.0.{}:80", i + 1).parse().unwrap(), "test", c);
            o.health.record_check(Some(true), 1, 1);
            Arc::new(o)
        })
        .collect()
}

/// Ratings of `origins` as the rater would leave them now.
pub(super) fn rate(origins: &[Arc<Origin>]) -> Vec<Arc<Rating>> {
    let ratings: Vec<Arc<Rating>> = origins.iter().map(|_| Arc::default()).collect();
    rating::rate_round(
        origins,
        &ratings,
        &Selection::default(),
        crate::clock::now_ms(),
    );
    ratings
}

/// One pick by `policy` (tests call policies directly, without Pingora).
pub(super) fn pick_once(
    policy: &dyn Policy,
    origins: &[Arc<Origin>],
    ratings: &[Arc<Rating>],
    seed: u64,
    usable: &dyn Fn(usize) -> bool,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let cfg = Selection::default();
    policy.pick(&mut Pick {
        origins,
        ratings,
        view: None,
        cfg: &cfg,
        seed,
        usable,
        rng,
    })
}

fn counts(
    p: &dyn Policy,
    os: &[Arc<Origin>],
    n: usize,
    usable: &dyn Fn(usize) -> bool,
) -> HashMap<usize, usize> {
    let mut rng = fastrand::Rng::with_seed(42);
    let ratings = rate(os);
    let mut c = HashMap::new();
    for _ in 0..n {
        *c.entry(pick_once(p, os, &ratings, 0, usable, &mut rng).unwrap())
            .or_insert(0) += 1;
    }
    c
}

#[test]
fn round_robin_takes_turns_and_skips_unusable_origins() {
    let os = origins(&[1.0, 1.0, 1.0]);
    let rr = RoundRobin::default();
    let c = counts(&rr, &os, 300, &|_| true);
    assert_eq!((c[&0], c[&1], c[&2]), (100, 100, 100));
    let c = counts(&rr, &os, 300, &|i| i != 1);
    assert_eq!(c.get(&1), None);
    assert_eq!(c[&0] + c[&2], 300);
}

#[test]
fn random_is_proportional_to_capacity() {
    let os = origins(&[1.0, 3.0]);
    let c = counts(&Random, &os, 40_000, &|_| true);
    let share = c[&1] as f64 / 40_000.0;
    assert!(
        (share - 0.75).abs() < 0.02,
        "capacity 3 of 4 should get ~75%, got {share}"
    );
    assert_eq!(counts(&Random, &os, 100, &|i| i == 0)[&0], 100);
}

#[test]
fn least_conn_picks_fewest_in_flight_per_capacity() {
    let os = origins(&[1.0, 1.0, 4.0]);
    for _ in 0..3 {
        os[0].start_request();
    }
    for _ in 0..2 {
        os[1].start_request();
    }
    for _ in 0..6 {
        os[2].start_request();
    }
    // In flight per capacity: 3, 2, 1.5 → the big one.
    let c = counts(&LeastConn, &os, 50, &|_| true);
    assert_eq!(c[&2], 50);
    // Among equals, ties are spread rather than always the first.
    let os = origins(&[1.0, 1.0, 1.0]);
    let c = counts(&LeastConn, &os, 300, &|_| true);
    assert!(c.len() == 3 && c.values().all(|&n| n > 50), "{c:?}");
}

#[test]
fn least_conn_splits_ties_evenly_whatever_their_position() {
    // Origin 0 is busy; 1 and 2 tie. Taking the first minimum from a random
    // start gave origin 1 (right after the busy one) two thirds of the ties.
    let os = origins(&[1.0, 1.0, 1.0]);
    os[0].start_request();
    let c = counts(&LeastConn, &os, 6000, &|_| true);
    assert_eq!(c.get(&0), None);
    let share = c[&1] as f64 / 6000.0;
    assert!((0.46..0.54).contains(&share), "{c:?}");
}

#[test]
fn consistent_hashing_bounds_the_load_of_a_hot_key() {
    let os = origins(&[1.0, 1.0, 1.0, 1.0]);
    let ch = Consistent::new(&os);
    let ratings = rate(&os);
    let mut rng = fastrand::Rng::with_seed(3);
    let seed = ch.seed(b"/videos/hot.mp4");
    // 400 viewers of one video, none finishing: the video's home takes its
    // bound, then the ring passes the key on.
    for _ in 0..400 {
        let i = pick_once(&ch, &os, &ratings, seed, &|_| true, &mut rng).unwrap();
        os[i].start_request();
    }
    let loads: Vec<i64> = os.iter().map(|o| o.inflight()).collect();
    let bound = (1.25_f64 * 400.0 / 4.0).ceil() as i64;
    assert!(loads.iter().all(|&n| n <= bound), "{loads:?} over {bound}");
    assert!(
        loads.iter().all(|&n| n > 0),
        "every origin helps: {loads:?}"
    );
}

#[test]
fn consistent_hashing_moves_only_the_keys_of_an_origin_that_joins() {
    let five = origins(&[1.0, 1.0, 1.0, 1.0, 1.0]);
    let four = &five[..4];
    let (ch4, ch5) = (Consistent::new(four), Consistent::new(&five));
    let (r4, r5) = (rate(four), rate(&five));
    let mut rng = fastrand::Rng::with_seed(5);
    let mut moved = 0;
    for k in 0..1000 {
        let key = format!("/videos/clip-{k}.mp4");
        let a = pick_once(
            &ch4,
            four,
            &r4,
            ch4.seed(key.as_bytes()),
            &|_| true,
            &mut rng,
        );
        let b = pick_once(
            &ch5,
            &five,
            &r5,
            ch5.seed(key.as_bytes()),
            &|_| true,
            &mut rng,
        );
        if a != b {
            assert_eq!(b, Some(4), "{key} moved between old origins");
            moved += 1;
        }
    }
    assert!((100..300).contains(&moved), "about a fifth move: {moved}");
}

#[test]
fn tier_picks_from_the_view_probes_once_and_skips_unusable_draws() {
    let os = origins(&[1.0, 1.0, 1.0, 1.0]);
    let ratings = rate(&os);
    // Origin 3 reports full CPU: tier 1.
    os[3].set_load(&LoadReport {
        cpu_utilization: 1.0,
        ..Default::default()
    });
    rating::rate_round(&os, &ratings, &Selection::default(), crate::clock::now_ms());
    assert_eq!(ratings[3].tier(), 1);
    let view = TierView::build(&os, &ratings);
    assert_eq!(view.above_lowest().collect::<Vec<_>>(), vec![3]);
    view.set_probe(3);
    let cfg = Selection::default();
    let mut rng = fastrand::Rng::with_seed(9);
    let tier = Tier::default();
    let mut pick = |usable: &dyn Fn(usize) -> bool| {
        tier.pick(&mut Pick {
            origins: &os,
            ratings: &ratings,
            view: Some(&view),
            cfg: &cfg,
            seed: 0,
            usable,
            rng: &mut rng,
        })
    };
    assert_eq!(pick(&|_| true), Some(3), "the probe goes first");
    let mut c = [0; 4];
    for _ in 0..300 {
        c[pick(&|_| true).unwrap()] += 1;
    }
    assert_eq!(c[3], 0, "then tier 1 gets nothing: {c:?}");
    assert!(c[..3].iter().all(|&n| n > 60), "{c:?}");
    // Origins 0 and 1 tried already: 2 every time, never a tried one.
    for _ in 0..50 {
        assert_eq!(pick(&|i| i >= 2), Some(2));
    }
    // Only the tier-1 origin usable: found by the scan.
    assert_eq!(pick(&|i| i == 3), Some(3));
}

#[test]
fn p2c_ewma_prefers_the_cheaper_of_two() {
    let os = origins(&[1.0, 1.0]);
    let decay = std::time::Duration::from_secs(10);
    let now = crate::clock::now_ms();
    os[0].observe_ttfb(std::time::Duration::from_millis(100), now, decay);
    os[1].observe_ttfb(std::time::Duration::from_millis(5), now, decay);
    // With two origins both are always compared: the faster one wins.
    let c = counts(&P2cEwma, &os, 200, &|_| true);
    assert_eq!(c.get(&1), Some(&200));
    // Enough in flight on the fast one flips it: 5 ms × 31 > 100 ms × 1.
    for _ in 0..30 {
        os[1].start_request();
    }
    let c = counts(&P2cEwma, &os, 200, &|_| true);
    assert_eq!(c.get(&0), Some(&200));
}

#[test]
fn consistent_hashing_is_sticky_and_moves_only_what_it_must() {
    let os = origins(&[1.0, 1.0, 1.0, 1.0]);
    let ch = Consistent::new(&os);
    let mut rng = fastrand::Rng::with_seed(1);
    let ratings = rate(&os);
    let pick = |key: &str, usable: &dyn Fn(usize) -> bool, rng: &mut fastrand::Rng| {
        pick_once(&ch, &os, &ratings, ch.seed(key.as_bytes()), usable, rng).unwrap()
    };
    let keys: Vec<String> = (0..400).map(|i| format!("/videos/clip-{i}.mp4")).collect();
    let home: Vec<usize> = keys.iter().map(|k| pick(k, &|_| true, &mut rng)).collect();
    // Sticky: the same key, the same origin.
    assert!(keys
        .iter()
        .zip(&home)
        .all(|(k, &h)| pick(k, &|_| true, &mut rng) == h));
    // Spread over all four.
    let mut per = [0; 4];
    home.iter().for_each(|&h| per[h] += 1);
    assert!(per.iter().all(|&n| n > 40), "{per:?}");
    // Origin 2 unusable: only its keys move.
    for (k, &h) in keys.iter().zip(&home) {
        let now = pick(k, &|i| i != 2, &mut rng);
        if h == 2 {
            assert_ne!(now, 2);
        } else {
            assert_eq!(now, h, "{k} moved although its origin is usable");
        }
    }
}

#[test]
fn tier_policy_sends_nothing_to_a_higher_tier_while_a_lower_one_is_usable() {
    let os = origins(&[1.0, 1.0, 1.0]);
    // Origin 0 reports full CPU and memory, its peers none: score 40 → tier 1.
    os[0].set_load(&LoadReport {
        cpu_utilization: 1.0,
        mem_utilization: 1.0,
        ..Default::default()
    });
    let c = counts(&Tier::default(), &os, 300, &|_| true);
    assert_eq!(c.get(&0), None, "{c:?}");
    assert!(
        c[&1] > 100 && c[&2] > 100,
        "the two light origins share the traffic: {c:?}"
    );
    // When it is the only one left, it is used.
    assert_eq!(counts(&Tier::default(), &os, 10, &|i| i == 0)[&0], 10);
}

#[tokio::test]
async fn the_selector_works_under_pingoras_load_balancer() {
    use pingora::lb::discovery::Static;
    use pingora::lb::{Backends, LoadBalancer};
    let os = origins(&[1.0, 1.0, 1.0]);
    os[1].health.set_operator_drain(true);
    let backends = os
        .iter()
        .map(|o| {
            let mut b = Backend::new(&o.addr.to_string()).unwrap();
            b.ext.insert(o.clone());
            b
        })
        .collect();
    let settings: SettingsSource = Arc::new(|| Arc::new(Selection::default()));
    let shared = Shared {
        settings,
        ratings: Arc::new(Ratings::default()),
    };
    let lb = LoadBalancer::<Selector>::from_backends_with_config(
        Backends::new(Static::new(backends)),
        Some(shared),
    );
    lb.update().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let b = lb.select(b"/videos/a.mp4", 256).expect("an origin");
        seen.insert(origin_of(&b).expect("the origin rides along").addr);
    }
    assert_eq!(
        seen,
        [os[0].addr, os[2].addr].into(),
        "both up origins, never the drained one"
    );
}
