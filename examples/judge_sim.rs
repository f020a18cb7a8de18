//! Thousands of simulated rollouts through the rollout judge, from a fixed
//! seed: how often an identical canary is rolled back, how often a bad one
//! is caught by the end of the second step, and how often a rollout holds
//! undecided for an operator (the bound).
//!
//! ```sh
//! cargo run --release --example judge_sim            # 2000 rollouts a row, seed 1
//! cargo run --release --example judge_sim -- 5000 42 # count, seed
//! ```
//!
//! Each rollout draws its requests per window n log-uniformly from 50 to
//! 5000; every window brings n requests to the canary and n to the stable
//! (at 100 % to the canary alone, judged against the stable's pooled
//! counts of the earlier steps). Latencies are lognormal (median 10 ms,
//! sigma 0.5), counted in the proxy's histogram buckets; 5xx answers are
//! independent draws. The plan is the default one with steps 5, 25, 50,
//! 100 and min_requests 50: confidence 0.99, max_error_rate_increase 0.01,
//! max_p99_increase 0.5, p99_tolerance 10 ms, failure_limit 1. Each look
//! is judged exactly as the runner does (`switchyard::rollout::judge::sim`).

use switchyard::config::RolloutConfig;
use switchyard::model::api::{RolloutRequest, StepSpec};
use switchyard::rollout::judge::sim::{run, Behaviour, Outcome};
use switchyard::rollout::plan::plan_from;

struct Row {
    name: &'static str,
    stable: Behaviour,
    canary: Behaviour,
    /// Identical (count rollbacks) or bad (count catches by step 2).
    bad: bool,
}

const BANDS: [(u64, u64); 3] = [(50, 199), (200, 999), (1000, 5000)];

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let req = RolloutRequest {
        canary: Some("green".into()),
        steps: Some([5, 25, 50, 100].map(StepSpec::Percent).to_vec()),
        min_requests: Some(50),
        ..Default::default()
    };
    let plan = match plan_from(&RolloutConfig::default(), &req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("judge_sim: {e}");
            std::process::exit(2);
        }
    };
    let at = |error_rate, median| Behaviour {
        error_rate,
        median,
        sigma: 0.5,
    };
    let rows = [
        Row {
            name: "identical, 0% 5xx",
            stable: at(0.0, 0.01),
            canary: at(0.0, 0.01),
            bad: false,
        },
        Row {
            name: "identical, 5% 5xx",
            stable: at(0.05, 0.01),
            canary: at(0.05, 0.01),
            bad: false,
        },
        Row {
            name: "at the limit, +1 point 5xx (0% -> 1%)",
            stable: at(0.0, 0.01),
            canary: at(0.01, 0.01),
            bad: false,
        },
        Row {
            name: "at the limit, +1 point 5xx (5% -> 6%)",
            stable: at(0.05, 0.01),
            canary: at(0.06, 0.01),
            bad: false,
        },
        Row {
            name: "+5 points 5xx (0% -> 5%)",
            stable: at(0.0, 0.01),
            canary: at(0.05, 0.01),
            bad: true,
        },
        Row {
            name: "+5 points 5xx (5% -> 10%)",
            stable: at(0.05, 0.01),
            canary: at(0.10, 0.01),
            bad: true,
        },
        Row {
            name: "2x slower median, 0% 5xx",
            stable: at(0.0, 0.01),
            canary: at(0.0, 0.02),
            bad: true,
        },
        Row {
            name: "2x slower median, 5% 5xx",
            stable: at(0.05, 0.01),
            canary: at(0.05, 0.02),
            bad: true,
        },
    ];
    println!("{count} rollouts a row, seed {seed}, steps {:?}, n = 50..5000 requests per window and side\n", plan.steps);
    println!("| canary | counted | all | n 50-199 | n 200-999 | n 1000-5000 | bound reached | windows per rollout | goal |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let outcomes = run(
            seed + i as u64,
            count,
            &plan,
            (50, 5000),
            &row.stable,
            &row.canary,
        );
        let hit = |o: &Outcome| match o.failed_at {
            Some(step) if row.bad => step <= 1,
            Some(_) => true,
            None => false,
        };
        let share = |lo: u64, hi: u64| {
            let of: Vec<_> = outcomes
                .iter()
                .filter(|(n, _)| (lo..=hi).contains(n))
                .collect();
            let k = of.iter().filter(|(_, o)| hit(o)).count();
            format!(
                "{:.1}% ({k}/{})",
                100.0 * k as f64 / of.len().max(1) as f64,
                of.len()
            )
        };
        let held = outcomes.iter().filter(|(_, o)| o.held_at.is_some()).count();
        let windows: f64 = outcomes
            .iter()
            .map(|(_, o)| f64::from(o.windows))
            .sum::<f64>()
            / count.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1}% ({held}/{count}) | {windows:.1} | {} |",
            row.name,
            if row.bad {
                "caught by step 2"
            } else {
                "rolled back"
            },
            share(0, u64::MAX),
            share(BANDS[0].0, BANDS[0].1),
            share(BANDS[1].0, BANDS[1].1),
            share(BANDS[2].0, BANDS[2].1),
            100.0 * held as f64 / count.max(1) as f64,
            if row.bad { ">= 95%" } else { "<= 1%" }
        );
    }
}
