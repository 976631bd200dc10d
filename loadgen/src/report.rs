//! The summary of a run: latency percentiles, errors by kind, each origin's
//! share, and how far the shares move from one second to the next.

use crate::request::Outcome;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The JSON summary of `outcomes`.
pub fn summarise(label: &str, rate: f64, outcomes: &[Outcome]) -> Value {
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1] * 1000.0
    };
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut shares: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_second: Vec<BTreeMap<&str, u64>> = Vec::new();
    for o in outcomes {
        match &o.result {
            Ok(origin) => {
                *shares.entry(origin).or_default() += 1;
                let s = o.at as usize;
                if per_second.len() <= s {
                    per_second.resize(s + 1, BTreeMap::new());
                }
                *per_second[s].entry(origin).or_default() += 1;
            }
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
    }
    let ok: u64 = shares.values().sum();
    let fractions = |counts: &BTreeMap<&str, u64>| -> BTreeMap<String, f64> {
        let n: u64 = counts.values().sum();
        shares
            .keys()
            .map(|k| {
                (
                    k.to_string(),
                    *counts.get(k).unwrap_or(&0) as f64 / n.max(1) as f64,
                )
            })
            .collect()
    };
    // Total-variation distance between consecutive seconds' shares: 0 when
    // nothing moves, 1 when all traffic changes origin.
    let seconds: Vec<BTreeMap<String, f64>> = per_second.iter().map(fractions).collect();
    let moves: Vec<f64> = seconds
        .windows(2)
        .map(|w| 0.5 * w[0].iter().map(|(k, a)| (a - w[1][k]).abs()).sum::<f64>())
        .collect();
    let mean_move = moves.iter().sum::<f64>() / moves.len().max(1) as f64;
    let max_move = moves.iter().cloned().fold(0.0, f64::max);
    let per_second_json: Vec<Value> = seconds
        .iter()
        .map(|s| {
            Value::Object(
                s.iter()
                    .map(|(k, v)| (k.clone(), json!(round(*v, 4))))
                    .collect::<Map<_, _>>(),
            )
        })
        .collect();
    json!({
        "label": label,
        "rate": rate,
        "sent": outcomes.len(),
        "ok": ok,
        "errors": outcomes.len() as u64 - ok,
        "error_kinds": errors,
        "p50_ms": round(pct(0.50), 3),
        "p99_ms": round(pct(0.99), 3),
        "p999_ms": round(pct(0.999), 3),
        "max_ms": round(pct(1.0), 3),
        "shares": fractions(&shares).into_iter().map(|(k, v)| (k, round(v, 4))).collect::<BTreeMap<_, _>>(),
        "share_move_mean": round(mean_move, 4),
        "share_move_max": round(max_move, 4),
        "per_second": per_second_json,
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
