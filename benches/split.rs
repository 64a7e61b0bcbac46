//! Micro-benchmark of the split decision: ns per assignment, unkeyed and keyed
//! (sticky header and sticky cookie), with two rules that do not match in
//! front, on a realistic set of request headers.
//!
//! Run: `cargo bench -p switchyard --bench split`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use std::hint::black_box;
use std::path::Path;
use switchyard::split::{RequestView, Split};
use switchyard::Config;

fn split(sticky: &str) -> Split {
    let yaml = format!(
        r#"
listeners: [{{ name: l, bind: "127.0.0.1:0" }}]
services:
  - name: checkout
    pools:
      stable: {{ endpoints: ["127.0.0.1:9001"] }}
      canary: {{ endpoints: ["127.0.0.1:9002"] }}
    split:
{sticky}      rules:
        - {{ match: {{ header: {{ x-canary: always }} }}, pool: canary }}
        - {{ match: {{ cookie: {{ beta: "yes" }} }}, pool: canary }}
      weights: {{ stable: 90, canary: 10 }}
"#
    );
    let cfg = Config::from_yaml(&yaml, Path::new(".")).unwrap();
    let svc = &cfg.services[0];
    let names: Vec<String> = svc.pools.iter().map(|p| p.name.clone()).collect();
    Split::new(&svc.split, &names)
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-user-id", "7f3c2a9e-5d1b-4c8e-9a0f-123456789abc"),
        ("cookie", "theme=dark; session=8d7f6e5a4b3c2d1e; consent=1"),
        ("x-request-id", "a1b2c3d4"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let h = headers();
    let unkeyed = split("");
    let by_header = split("      sticky: { header: x-user-id }\n");
    let by_cookie = split("      sticky: { cookie: session }\n");
    let mut g = c.benchmark_group("split");
    g.bench_function("unkeyed", |b| b.iter(|| black_box(unkeyed.assign(black_box(&RequestView::headers(&h))))));
    g.bench_function("sticky_header", |b| b.iter(|| black_box(by_header.assign(black_box(&RequestView::headers(&h))))));
    g.bench_function("sticky_cookie", |b| b.iter(|| black_box(by_cookie.assign(black_box(&RequestView::headers(&h))))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
