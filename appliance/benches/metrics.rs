//! What recording a request's metrics costs when two worker threads finish requests on the
//! same series: each thread in its own shard (how workers record) against both in one shard
//! (how every series was recorded before sharding: one set of counters both cores write).
//! Prints nanoseconds per recorded request, alone and with some private work between records
//! (a request's own work, which lets the other core take the lines in between).
//! Run: `cargo bench -p appliance --bench metrics`.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use appliance::telemetry::registry::{HttpLabels, Registry, pin_shard, shards};

const RECORDS: u64 = 2_000_000;

/// Private work between two records: arithmetic on the stack, 200 rounds ≈ 0.3 µs, 3,000 ≈ a
/// request's user time in gatehouse.
fn work(rounds: u32) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// Wall time per record for each of `threads` threads, with shards `pins[i]`.
fn run(reg: &Arc<Registry>, pins: &[usize], rounds: u32, records: bool) -> f64 {
    let labels = HttpLabels {
        tenant: "team-a".into(),
        gateway: "public".into(),
        destination_service: "web.team-a.svc".into(),
        response_code: 200,
        response_flags: "-".into(),
        request_protocol: "http",
    };
    let series = reg.http.get(&labels);
    let start = Arc::new(Barrier::new(pins.len() + 1));
    let handles: Vec<_> = pins
        .iter()
        .map(|&pin| {
            let series = series.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                pin_shard(pin);
                start.wait();
                let t = Instant::now();
                for i in 0..RECORDS {
                    work(rounds);
                    if records {
                        series.record(0.4, 0, 600 + (i & 63));
                    }
                }
                t.elapsed()
            })
        })
        .collect();
    start.wait();
    let total: Duration = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .sum();
    total.as_secs_f64() * 1e9 / (pins.len() as f64) / (RECORDS as f64)
}

fn main() {
    let reg = Arc::new(Registry::default());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cores: {cores}, shards per series: {}, {RECORDS} records per thread",
        shards()
    );
    println!();
    println!(
        "| threads, shards | private work between records | ns per record (work subtracted) |"
    );
    println!("|---|---|---|");
    for rounds in [0u32, 200, 3000] {
        let label = if rounds == 0 {
            "none".to_string()
        } else {
            let w = run(&reg, &[0], rounds, false);
            format!("{w:.0} ns")
        };
        for (what, pins) in [
            ("1 thread, its own shard", &[0usize][..]),
            ("2 threads, one shared shard", &[0, 0][..]),
            ("2 threads, a shard each", &[0, 1][..]),
        ] {
            let base = if rounds == 0 {
                0.0
            } else {
                run(&reg, pins, rounds, false)
            };
            let with = run(&reg, pins, rounds, true);
            let ns = with - base;
            println!("| {what} | {label} | {ns:.1} |");
        }
    }
}
