//! Times `MPI_Allreduce` of f32 sums over a range of sizes, fits the ring cost model to the
//! times and predicts data-parallel efficiency on other networks and node counts.
//!
//!     mpirun -np 2 target/release/allreduce-bench [--compute-ms-per-step MS] [--gradient-values N]
//!
//! Rank 0 prints one JSON document: the measurements, the fitted model, the predictions.

use std::time::Instant;

use kiln::train::Collective;
use kiln_dist::cost_model::{efficiency, RingModel};
use kiln_dist::MpiGroup;

/// All-reduces timed per size, after a few untimed ones.
const REPEATS: usize = 30;
const WARM_UP: usize = 5;

/// Networks to predict for: (name, per-message latency in seconds, gigabits per second).
/// The latencies are typical figures, not measured here: TCP over 10 GbE, and RDMA
/// (InfiniBand or RoCE) at 100 Gb/s.
const NETWORKS: [(&str, f64, f64); 2] = [
    ("10 Gb/s Ethernet (TCP, 25 us)", 25e-6, 10.0),
    ("100 Gb/s RDMA (3 us)", 3e-6, 100.0),
];

fn main() {
    let group = MpiGroup::init().unwrap_or_else(|e| panic!("MPI: {e}"));
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{name} {v}: not a number"))
            })
    };
    // The reference MLP: 407,050 gradients; one rank's step of batch 64 on one thread.
    let gradient_values = option("--gradient-values", 407_050.0);
    let compute_ms = option("--compute-ms-per-step", 1.0);

    let mut measured = Vec::new();
    for power in (10..=22).step_by(2) {
        let values = 1usize << power; // 1 Ki to 4 Mi values (4 KiB to 16 MiB)
        measured.push(((values * 4) as f64, median_all_reduce_seconds(&group, values)));
    }
    if group.rank() != 0 {
        return;
    }
    let ranks = group.size();
    let fitted = RingModel::fit(ranks, &measured).expect("two sizes or more, two ranks or more");
    let gradient_bytes = gradient_values * 4.0;
    let compute = compute_ms / 1e3;
    let predictions: Vec<serde_json::Value> = NETWORKS
        .iter()
        .flat_map(|&(name, latency, gbps)| {
            let model = RingModel::network(latency, gbps);
            [2usize, 8, 64].map(|nodes| {
                let t = model.all_reduce_seconds(nodes, gradient_bytes);
                serde_json::json!({
                    "network": name,
                    "nodes": nodes,
                    "all_reduce_ms": t * 1e3,
                    "efficiency": efficiency(compute, t),
                })
            })
        })
        .collect();
    let measured_json: Vec<serde_json::Value> = measured
        .iter()
        .map(|(b, s)| {
            serde_json::json!({
                "bytes": b,
                "median_seconds": s,
                "model_seconds": fitted.all_reduce_seconds(ranks, *b),
            })
        })
        .collect();
    let report = serde_json::json!({
        "ranks": ranks,
        "library": MpiGroup::library_version().lines().next().unwrap_or("").trim(),
        "measured": measured_json,
        "fitted": {
            "latency_us": fitted.latency * 1e6,
            "gigabits_per_second": fitted.gigabits_per_second(),
        },
        "gradient_bytes": gradient_bytes,
        "fitted_all_reduce_ms_for_gradient": fitted.all_reduce_seconds(ranks, gradient_bytes) * 1e3,
        "compute_ms_per_step": compute_ms,
        "predictions": predictions,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
}

/// The median over repeats of the slowest rank's time to all-reduce `values` floats.
fn median_all_reduce_seconds(group: &MpiGroup, values: usize) -> f64 {
    let mut buffer = vec![1.0f32; values];
    let mut times = Vec::new();
    for i in 0..WARM_UP + REPEATS {
        group.barrier();
        let start = Instant::now();
        group.all_reduce_sum(&mut buffer);
        if i >= WARM_UP {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    slowest_over_ranks(group, &mut times);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Replaces each time with its maximum over the ranks (a collective is as slow as its
/// slowest member).
fn slowest_over_ranks(group: &MpiGroup, times: &mut [f64]) {
    // Each rank fills its own row of zeros; the sum then holds every rank's times.
    let (ranks, n) = (group.size(), times.len());
    let mut all = vec![0.0f64; n * ranks];
    all[group.rank() * n..(group.rank() + 1) * n].copy_from_slice(times);
    group.all_reduce_sum_f64(&mut all);
    for (i, t) in times.iter_mut().enumerate() {
        *t = (0..ranks).map(|r| all[r * n + i]).fold(0.0, f64::max);
    }
}
