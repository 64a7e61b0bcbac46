//! Cost of recording one request's outcome (latency histogram, status class,
//! error class) on the request path, measured with two threads recording at
//! once, as two workers do.
//!
//! Run: `cargo bench -p switchyard --bench stats`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};
use switchyard::stats::{self, Stats};

fn bench(c: &mut Criterion) {
    let s = Stats::new(Duration::from_secs(30), Duration::from_secs(1));
    let slots = [s.slot("web", "stable"), s.slot("web", "canary")];
    let mut g = c.benchmark_group("stats");
    g.bench_function("record_two_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..2u64 {
                    scope.spawn(move || {
                        for i in 0..iters {
                            let latency = Duration::from_micros(200 + (i * 7919 + t) % 50_000);
                            let status = if i % 100 == 0 { 503 } else { 200 };
                            stats::record(black_box(slots[(i & 1) as usize]), latency, status, None);
                        }
                    });
                }
            });
            // Per request: the wall time of `iters` records done on each of the two threads.
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
