//! The dashboard in a real browser: Debian's Chromium, headless, driven by
//! `tests/ui/dashboard.mjs` (Playwright's CDP client) against this proxy
//! with live traffic. Screenshots land in `target/dashboard/`.

use std::time::Duration;
use switchyard_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_figures_and_its_buttons_drive_the_rollout() {
    let ui = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ui");
    assert!(
        std::path::Path::new(ui).join("node_modules/playwright-core").is_dir(),
        "the browser driver is missing: run `npm ci --prefix tests/ui` (scripts/test.sh does)"
    );
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let svc = format!(
        "  - name: web\n    rollout:\n      steps: [{{ weight: 20, hold: 1h }}, {{ weight: 50, hold: 1h }}, {{ weight: 100, hold: 1h }}]\n    \
         pools:\n      stable: {{ endpoints: [\"{}\"], version: v1 }}\n      canary: {{ endpoints: [\"{}\"], version: v2 }}\n    \
         split: {{ weights: {{ stable: 100, canary: 0 }} }}\n",
        stable.addr, canary.addr
    );
    let p = start_with_admin(&svc).await;
    // The same service behind an admin API without tokens (loopback only).
    let open = Proxy::start(&format!(
        "{}admin: {{ bind: \"127.0.0.1:0\" }}\nstats: {{ window: 5s, resolution: 100ms }}\n",
        config(&svc)
    ))
    .await;
    let open_admin = open.admin.unwrap();
    let load = steady_traffic(p.addr, Duration::from_secs(120));
    let admin = p.admin.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(format!("{ui}/dashboard.mjs"))
            .env("ADMIN", format!("http://{admin}"))
            .env("OPEN_ADMIN", format!("http://{open_admin}"))
            .env("TOKEN", TOKEN)
            .env("READ_TOKEN", READ_TOKEN)
            .env("SHOTS", concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dashboard"))
            .output()
            .expect("node (Node.js) runs the browser driver")
    })
    .await
    .unwrap();
    load.abort();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser checks failed:\n{said}");
    assert!(said.contains("ok: Abort stops the rollout"), "{said}");

    // What the buttons did is in the durable history, made by the token's holder.
    let (_, events) = p.admin("GET", "/v1/events?limit=100", Some(TOKEN), None).await;
    let by_ci: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "ci" && e["outcome"] == "applied")
        .map(|e| format!("{} {} ({})", e["kind"].as_str().unwrap(), e["message"].as_str().unwrap(), e["reason"]))
        .collect();
    for wanted in ["rollout-start", "at 50%", "abort"] {
        assert!(by_ci.iter().any(|e| e.contains(wanted)), "no `{wanted}` by ci in {by_ci:#?}");
    }
    for shot in ["read-only", "rollout", "phone"] {
        let path = format!("{}/../target/dashboard/{shot}.png", env!("CARGO_MANIFEST_DIR"));
        assert!(std::fs::metadata(&path).map(|m| m.len() > 10_000).unwrap_or(false), "{path}");
    }
}

/// What the page asks before it enables its buttons, and the headers that
/// keep it from being framed or fed someone else's script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_says_what_a_token_may_do_and_the_page_is_locked_down() {
    let (_s, _c, p) = two_pool_proxy("environment: staging\n").await;
    let (status, me) = p.admin("GET", "/v1/whoami", Some(TOKEN), None).await;
    assert_eq!(
        (status, &me["token"], &me["can_write"], &me["environment"]),
        (200, &"ci".into(), &true.into(), &"staging".into())
    );
    let (_, me) = p.admin("GET", "/v1/whoami", Some(READ_TOKEN), None).await;
    assert_eq!((&me["token"], &me["can_write"]), (&"viewer".into(), &false.into()));
    let (_, me) = p.admin("GET", "/v1/whoami", None, None).await;
    assert_eq!(
        (&me["token"], &me["can_write"], &me["tokens_required"]),
        (&serde_json::Value::Null, &false.into(), &true.into())
    );
    let (status, me) = p.admin("GET", "/v1/whoami", Some("not-a-token"), None).await;
    assert_eq!(status, 401, "{me}");

    let (status, headers, body) = get(p.admin.unwrap(), "/ui", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("<script src=\"/ui/app.js\">"), "{body}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(get(p.admin.unwrap(), "/ui/uplot.js", &[]).await.0, 200);
    assert_eq!(get(p.admin.unwrap(), "/ui/secrets", &[]).await.0, 404);
    // The service view says whether there is a rollout to fetch.
    let (_, svc) = p.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(svc["rollout"], serde_json::Value::Null);
}
