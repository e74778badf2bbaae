//! `cargo bench -p spillway-sim --features bound --bench bound`: the fire case's policies
//! against offline lower bounds on mean completion time — the exact optimum on small traces
//! and the time-indexed linear relaxation on the whole trace — each at the policy's own Lambda
//! spend. Deterministic figures; the solver's time varies.

use std::time::Instant;

use spillway_sim::compare;
use spillway_sim::scenario::FireCase;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let t = Instant::now();
    let mut limits = compare::small_limits(FireCase::thesis(true), &[2, 3, 4]);
    let small = t.elapsed().as_secs_f64();
    let full = [
        (FireCase::thesis(false), "scenario 1, as the thesis ran it"),
        (FireCase::thesis(true), "scenario 2, as the thesis ran it"),
        (
            compare::curve_case(),
            "scenario 2, both at 5 s, RM every 1 s",
        ),
    ];
    for (case, label) in full {
        match compare::full_limits(case, label) {
            Ok(l) => limits.extend(l),
            Err(e) => println!("{label}: no bound: {e}"),
        }
    }
    println!("{}", compare::limits_table(&limits));
    println!(
        "exact optima in {small:.2} s; {} linear relaxations in {:.1} s (Clarabel)",
        2 * full.len(),
        t.elapsed().as_secs_f64() - small
    );
}
