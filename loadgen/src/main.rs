//! `cdn-loadgen`: an open-loop load generator for the benchmarks.
//!
//! Requests are sent at a fixed arrival rate whatever the target's speed,
//! each on a connection of its own if every open one is busy, and each
//! latency runs from the request's *scheduled* send time to its last body
//! byte. A closed-loop tool (wrk) waits for an answer before it sends the
//! next request, so a slow target slows the load down and its queueing never
//! shows in the percentiles (coordinated omission); here it does.
//!
//! Prints one JSON object: percentiles, errors, each origin's share (from
//! the `x-origin-name` header cdn-origin sets) and how much the shares move
//! from one second to the next.

mod report;
mod request;

use clap::Parser;
use request::{Outcome, Target};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Open-loop HTTP load: fixed arrival rate, latency from the scheduled send time.
#[derive(Debug, Parser)]
#[command(name = "cdn-loadgen", version)]
struct Args {
    /// The URL to request (http only).
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load sent before measuring, not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Bytes per request, as a Range at a random offset; 0: whole-file GETs.
    #[arg(long, default_value_t = 262_144)]
    range_bytes: u64,
    /// A request not answered in full by then is an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// POST `--fault-body` to `--fault-url` this long into the measured run.
    #[arg(long, value_parser = humantime::parse_duration)]
    fault_at: Option<Duration>,
    /// Where to POST the fault (an origin's /admin/faults).
    #[arg(long)]
    fault_url: Option<String>,
    /// The fault to POST (JSON).
    #[arg(long, default_value = "{}")]
    fault_body: String,
    /// Echoed in the output, to tell runs apart.
    #[arg(long, default_value = "")]
    label: String,
    /// Seed of the range offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let target = Arc::new(Target::new(&args.url, args.range_bytes, args.timeout).await?);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let total = args.warmup + args.duration;
    let start = Instant::now() + Duration::from_millis(50);
    let measured_from = start + args.warmup;
    if let (Some(at), Some(url)) = (args.fault_at, args.fault_url.clone()) {
        let body = args.fault_body.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measured_from + at).await;
            if let Err(e) = request::post_json(&url, &body).await {
                eprintln!("cdn-loadgen: posting the fault to {url} failed: {e}");
            }
        });
    }
    // Tokio's timer wakes up to a millisecond late, which would show in
    // every latency; a thread of its own sleeps to each send time precisely
    // and hands the request over.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (start_std, end) = (start.into_std(), total);
    std::thread::spawn(move || {
        let mut i: u32 = 0;
        loop {
            let due = start_std + interval * i;
            if due >= start_std + end {
                return;
            }
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(Instant::from_std(due)).is_err() {
                return;
            }
            i += 1;
        }
    });
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(due) = rx.recv().await {
        let (target, outcomes) = (target.clone(), outcomes.clone());
        let offset = rng.f64();
        let counted = due >= measured_from;
        tasks.spawn(async move {
            let outcome = target.fetch(offset, due, measured_from).await;
            if counted {
                outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(outcome);
            }
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(report::summarise(&args.label, args.rate, &outcomes))
}
