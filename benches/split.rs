//! Micro-benchmark of the split decision: ns per assignment, unkeyed and keyed
//! (sticky header and sticky cookie), with two rules that do not match in
//! front, on a realistic set of request headers; and a flag rule (flagd
//! targeting: two attribute conditions, then `fractional`) against a plain
//! header rule, both evaluated in full on every request.
//!
//! Run: `cargo bench -p switchyard --bench split`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use http::{HeaderName, Method};
use std::hint::black_box;
use std::path::Path;
use switchyard::config::AttrSource;
use switchyard::data::split::{RequestView, Split};
use switchyard::flags::FlagSet;
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
    Split::new(&svc.split, &names, vec![], &Default::default())
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

    // A flag rule against a header rule, each the only rule, neither matching.
    let flags = FlagSet::parse(
        r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"and": [{"==": [{"var": "plan"}, "pro"]}, {"starts_with": [{"var": "email"}, "a"]}]},
                                 {"fractional": [["on", 0], ["off", 100]]}, "off"]}}}}"#,
        &Default::default(),
        Default::default(),
    )
    .unwrap();
    let context = [
        ("plan".to_string(), AttrSource::Header(HeaderName::from_static("x-plan"))),
        ("email".to_string(), AttrSource::Header(HeaderName::from_static("x-user-email"))),
    ];
    let mut h2 = h.clone();
    h2.insert("x-plan", HeaderValue::from_static("pro"));
    h2.insert("x-user-email", HeaderValue::from_static("alice@example.com"));
    let one_rule = |rule: &str| {
        let yaml = [
            "listeners: [{ name: l, bind: \"127.0.0.1:0\" }]",
            "services:",
            "  - name: s",
            "    pools:",
            "      stable: { endpoints: [\"127.0.0.1:1\"] }",
            "      canary: { endpoints: [\"127.0.0.1:2\"] }",
            "    split:",
            "      sticky: { header: x-user-id }",
            &format!("      rules: [{{ match: {rule}, pool: canary }}]"),
            "      weights: { stable: 100, canary: 0 }",
            "",
        ]
        .join("\n");
        let yaml = if rule.contains("flag") {
            let dir = std::env::temp_dir().join("switchyard-bench-flags.json");
            std::fs::write(&dir, "{\"flags\": {}}").unwrap();
            format!("{yaml}flags: {{ file: {} }}\n", dir.display())
        } else {
            yaml
        };
        let cfg = Config::from_yaml(&yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let names: Vec<String> = cfg.services[0].pools.iter().map(|p| p.name.clone()).collect();
        Split::new(&cfg.services[0].split, &names, vec![], &Default::default())
    };
    let flag_split = one_rule("{ flag: new-checkout }");
    let header_split = one_rule("{ header: { x-plan: enterprise } }");
    let view = RequestView {
        headers: &h2,
        path: "/checkout",
        method: &Method::GET,
        query: None,
        client: None,
        flags: Some(&flags),
        context: &context,
    };
    assert_eq!(flag_split.assign(&view).0, 1, "the flag rule is evaluated and does not match");
    g.bench_function("flag_rule", |b| b.iter(|| black_box(flag_split.assign(black_box(&view)))));
    g.bench_function("header_rule", |b| b.iter(|| black_box(header_split.assign(black_box(&view)))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
