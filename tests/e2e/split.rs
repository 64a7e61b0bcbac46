//! Split accuracy, stickiness, rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use switchyard_test_support::*;

/// Sends `n` GETs over `conns` keep-alive connections; `headers(i)` gives request i's
/// extra headers. Returns the body of each response, by request index.
async fn many(addr: SocketAddr, n: usize, conns: usize, headers: fn(usize) -> Vec<(String, String)>) -> Vec<String> {
    let mut tasks = Vec::new();
    for c in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut out = Vec::new();
            for i in (c..n).step_by(conns) {
                let h = headers(i);
                let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (status, _, body) = client.get("/", &h).await;
                assert_eq!(status, 200, "request {i}: {body}");
                out.push((i, body));
            }
            out
        }));
    }
    let mut all = vec![String::new(); n];
    for t in tasks {
        for (i, b) in t.await.unwrap() {
            all[i] = b;
        }
    }
    all
}

async fn two_pools(split: &str) -> (Upstream, Upstream, Proxy) {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let yaml = config(&service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], split));
    let proxy = Proxy::start(&yaml).await;
    (stable, canary, proxy)
}

fn count(bodies: &[String], pool: &str) -> usize {
    bodies.iter().filter(|b| *b == pool).count()
}

// Tolerance: at 10 % of n = 10,000 the count is binomial with sd = 30; ±150 is
// five sd (a false failure about once in 1.7 million runs) and still catches
// any real skew of 1.5 points or more.
const N: usize = 10_000;
const TOL: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_split_follows_weights() {
    let (stable, canary, proxy) = two_pools("      weights: { stable: 90, canary: 10 }\n").await;
    let bodies = many(proxy.addr, N, 8, |_| vec![]).await;
    let c = count(&bodies, "canary");
    assert!(c.abs_diff(N / 10) <= TOL, "canary got {c} of {N}");
    assert_eq!(count(&bodies, "stable") + c, N);
    assert_eq!(stable.hits() + canary.hits(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_split_follows_weights_and_sticks() {
    let split = "      sticky: { header: x-user-id }\n      weights: { stable: 90, canary: 10 }\n";
    let (_s, _c, proxy) = two_pools(split).await;
    let first = many(proxy.addr, N, 8, |i| vec![("x-user-id".into(), format!("user-{i}"))]).await;
    let c = count(&first, "canary");
    assert!(c.abs_diff(N / 10) <= TOL, "canary got {c} of {N} keys");
    // The same users again, in another order over other connections: same pools.
    let again = many(proxy.addr, N, 5, |i| vec![("x-user-id".into(), format!("user-{i}"))]).await;
    assert_eq!(first, again, "a sticky key changed pool while weights were unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sticky_and_fallback_without_key() {
    let split = "      sticky: { cookie: session }\n      weights: { stable: 50, canary: 50 }\n";
    let (_s, _c, proxy) = two_pools(split).await;
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut client = Client::connect(proxy.addr).await;
    for round in 0..3 {
        for u in 0..50 {
            let cookie = format!("theme=dark; session=s{u}");
            let (_, _, body) = client.get("/", &[("cookie", &cookie)]).await;
            let prev = seen.entry(cookie).or_insert(body.clone());
            assert_eq!(*prev, body, "round {round}: user s{u} moved");
        }
    }
    // Without the cookie: the unkeyed weighted choice, so both pools appear.
    let bodies = many(proxy.addr, 400, 4, |_| vec![]).await;
    let c = count(&bodies, "canary");
    assert!((120..=280).contains(&c), "{c} of 400 on canary without a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_cookie_rules_come_first_in_order() {
    let split = "      sticky: { header: x-user-id }\n      rules:\n        \
                 - { match: { header: { x-canary: always } }, pool: canary }\n        \
                 - { match: { cookie: { beta: \"yes\" }, header: { x-region: eu } }, pool: canary }\n        \
                 - { match: { header: { x-canary: never } }, pool: stable }\n      \
                 weights: { stable: 100, canary: 0 }\n";
    let (_s, _c, proxy) = two_pools(split).await;
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/", &[]).await.2, "stable");
    assert_eq!(c.get("/", &[("x-canary", "always")]).await.2, "canary");
    assert_eq!(
        c.get("/", &[("x-canary", "always"), ("x-user-id", "u1")]).await.2,
        "canary",
        "rules beat sticky weights"
    );
    assert_eq!(c.get("/", &[("cookie", "beta=yes")]).await.2, "stable", "all conditions of a rule must hold");
    assert_eq!(c.get("/", &[("cookie", "a=1; beta=yes"), ("x-region", "eu")]).await.2, "canary");
    assert_eq!(c.get("/", &[("x-canary", "never")]).await.2, "stable");
    assert_eq!(c.get("/", &[("x-canary", "ALWAYS")]).await.2, "stable", "header values match exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_header_when_enabled_and_access_log_lines() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let split = "      rules: [{ match: { header: { x-canary: always } }, pool: canary }]\n      weights: { stable: 1, canary: 0 }\n";
    let yaml = config(
        &[
            service(
                "shown",
                "    match: { path_prefix: /shown }\n    expose_pool: true\n",
                &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
                split,
            ),
            service(
                "hidden",
                "    match: { path_prefix: /hidden }\n",
                &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
                split,
            ),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&yaml).await;
    let (_, h, _) = get(proxy.addr, "/shown", &[("x-canary", "always")]).await;
    assert_eq!(h["x-switchyard-pool"], "canary");
    let (_, h, _) = get(proxy.addr, "/hidden", &[]).await;
    assert!(h.get("x-switchyard-pool").is_none(), "off by default");
    let (status, _, _) = get(proxy.addr, "/hidden", &[("x-switchyard-pool", "canary")]).await;
    assert_eq!(status, 200);
    assert!(stable.last().headers.get("x-switchyard-pool").is_none(), "client-sent internal headers are stripped");

    // One access line per request, with service, pool, status and latency.
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = proxy.lines.lock().unwrap().iter().filter(|l| l["target"] == "switchyard::access").cloned().collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // poll
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["service"], "shown");
    assert_eq!(lines[0]["pool"], "canary");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["path"], "/shown");
    assert!(lines[0]["latency_us"].as_u64().is_some());
    assert_eq!(lines[1]["pool"], "stable");
}
