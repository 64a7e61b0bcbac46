//! Feature-flag rules end to end: flagd definitions in a file, evaluated per
//! request, reloaded on change, changed at run time through the admin API.

use serde_json::json;
use std::time::Duration;
use switchyard_test_support::*;

const FLAGS: &str = r#"{
  "$evaluators": { "beta-user": { "ends_with": [{ "var": "email" }, "@beta.example"] } },
  "flags": {
    "beta": { "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "off",
              "targeting": { "if": [{ "$ref": "beta-user" }, "on", "off"] } },
    "theme": { "state": "ENABLED", "variants": { "red": "red", "blue": "blue" }, "defaultVariant": "red",
               "targeting": { "fractional": [["red", 50], ["blue", 50]] } },
    "dark-launch": { "state": "DISABLED", "variants": { "on": true }, "defaultVariant": "on" }
  }
}"#;

async fn flag_proxy() -> (Upstream, Upstream, Proxy) {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let split = "      sticky: { header: x-user-id }\n      rules:\n        \
                 - { match: { flag: dark-launch }, pool: canary }\n        \
                 - { match: { flag: beta }, pool: canary }\n        \
                 - { match: { flag: theme, variant: blue }, pool: canary }\n      \
                 weights: { stable: 100, canary: 0 }\n";
    let svc = service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], split);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("flags.json"), FLAGS).unwrap();
    let yaml = format!(
        "{}flags:\n  file: flags.json\n  context:\n    email: {{ header: x-user-email }}\n",
        admin_config(&svc)
    );
    (stable, canary, Proxy::start_in(dir, &yaml).await)
}

/// The pool for a user (and optional e-mail), by the upstream's answer.
async fn pool(c: &mut Client, user: Option<&str>, email: Option<&str>) -> String {
    let mut h = Vec::new();
    if let Some(u) = user {
        h.push(("x-user-id", u));
    }
    if let Some(e) = email {
        h.push(("x-user-email", e));
    }
    c.get("/", &h).await.2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_rules_route_per_request_like_flagd() {
    let (_s, _c, proxy) = flag_proxy().await;
    let mut c = Client::connect(proxy.addr).await;
    // Targeting on an attribute taken from a header.
    assert_eq!(pool(&mut c, Some("u1"), Some("ann@beta.example")).await, "canary");
    // The theme flag splits users 50/50 with flagd's fractional bucketing; the
    // proxy must agree with flagd's evaluation of the same definition.
    let reference = switchyard::flags::FlagSet::parse(FLAGS, &Default::default(), Default::default()).unwrap();
    let (mut agree, mut blue) = (0, 0);
    for i in 0..200 {
        let user = format!("user-{i}");
        let mut ctx = switchyard::flags::context(Default::default(), &user);
        switchyard::flags::set_flag_key(&mut ctx, "theme");
        let want_blue = reference.resolve("theme", &ctx).unwrap().0 == "blue";
        let got = pool(&mut c, Some(&user), Some("x@example.com")).await;
        agree += usize::from((got == "canary") == want_blue);
        blue += usize::from(want_blue);
        assert_eq!(pool(&mut c, Some(&user), Some("x@example.com")).await, got, "one user, one answer");
    }
    assert_eq!(agree, 200);
    assert!((60..=140).contains(&blue), "{blue} of 200 blue");
    // No targeting key (the sticky header): flag rules fall through to the weights.
    assert_eq!(pool(&mut c, None, Some("ann@beta.example")).await, "stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_reload_bad_file_and_runtime_changes_survive_restart() {
    let (_s, _c, proxy) = flag_proxy().await;
    let mut c = Client::connect(proxy.addr).await;
    let path = proxy.dir.path().join("flags.json");

    // Turn the beta flag off in the file: picked up within a couple of seconds
    // (by a user the theme flag keeps on stable).
    let reference = switchyard::flags::FlagSet::parse(FLAGS, &Default::default(), Default::default()).unwrap();
    let red = (0..)
        .map(|i| format!("u{i}"))
        .find(|u| {
            let mut ctx = switchyard::flags::context(Default::default(), u);
            switchyard::flags::set_flag_key(&mut ctx, "theme");
            reference.resolve("theme", &ctx).unwrap().0 == "red"
        })
        .unwrap();
    std::fs::write(&path, FLAGS.replace(r#""beta": { "state": "ENABLED""#, r#""beta": { "state": "DISABLED""#))
        .unwrap();
    let mut off = false;
    for _ in 0..50 {
        if pool(&mut c, Some(&red), Some("ann@beta.example")).await != "canary" {
            off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll
    }
    assert!(off, "the file change was not picked up");

    // A broken file is refused; the flags in force stay.
    std::fs::write(&path, "{ not json").unwrap();
    let mut refused = false;
    for _ in 0..50 {
        let (_, events) = proxy.admin("GET", "/v1/events", None, None).await;
        if events.as_array().unwrap().iter().any(|e| e["kind"] == "flags-reload" && e["outcome"] == "refused") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll
    }
    assert!(refused);
    let (_, flags) = proxy.admin("GET", "/v1/flags", None, None).await;
    assert_eq!(flags["beta"]["state"], "DISABLED", "still the last good file");
    std::fs::write(&path, FLAGS).unwrap();

    // A run-time change through the admin API, then kill -9: it is still in force.
    let (status, ev) = proxy.admin("PUT", "/v1/flags/dark-launch", Some(TOKEN), Some(r#"{"state": "ENABLED"}"#)).await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(pool(&mut c, Some(&red), None).await, "canary");
    let (status, err) =
        proxy.admin("PUT", "/v1/flags/dark-launch", Some(TOKEN), Some(r#"{"defaultVariant": "nope"}"#)).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(proxy.admin("PUT", "/v1/flags/dark-launch", None, Some(r#"{"state": "DISABLED"}"#)).await.0, 401);
    let proxy = proxy.kill9_and_restart().await;
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(pool(&mut c, Some(&red), None).await, "canary", "the change survived kill -9");
    let (_, flags) = proxy.admin("GET", "/v1/flags", None, None).await;
    assert_eq!(
        (flags["dark-launch"]["state"].clone(), flags["dark-launch"]["source"].clone()),
        (json!("ENABLED"), json!("api"))
    );

    let (ok, out, err) = ctl(proxy.admin.unwrap(), &["flags"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("dark-launch") && l.contains("ENABLED") && l.ends_with("api")), "{out}");
    let (ok, out, err) = ctl(proxy.admin.unwrap(), &["flags", "reset", "dark-launch"]);
    assert!(ok && out.contains("back to the file"), "{out}{err}");
    assert_ne!(pool(&mut c, Some(&red), None).await, "canary", "reset: the file's DISABLED again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_bucketing_is_an_event_and_rebuckets_users() {
    let (_s, _c, proxy) = flag_proxy().await;
    let mut c = Client::connect(proxy.addr).await;
    let expected = |bucketing| {
        let set = switchyard::flags::FlagSet::parse(FLAGS, &Default::default(), bucketing).unwrap();
        (0..200)
            .map(|i| {
                let user = format!("user-{i}");
                let mut ctx = switchyard::flags::context(Default::default(), &user);
                switchyard::flags::set_flag_key(&mut ctx, "theme");
                set.resolve("theme", &ctx).unwrap().0 == "blue"
            })
            .collect::<Vec<_>>()
    };
    let mut route_all = Vec::new();
    for i in 0..200 {
        route_all.push(pool(&mut c, Some(&format!("user-{i}")), Some("x@example.com")).await == "canary");
    }
    assert_eq!(route_all, expected(switchyard::flags::Bucketing::Cbor), "the default is flagd's CBOR hashing");

    let path = proxy.dir.path().join("switchyard.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap()
        .replace("flags:\n  file: flags.json\n", "flags:\n  file: flags.json\n  bucketing: string\n");
    std::fs::write(&path, yaml).unwrap();
    let (status, ev) = proxy.admin("POST", "/v1/config/reload", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{ev}");
    assert!(ev["message"].as_str().unwrap().contains("flag bucketing cbor → string"), "{ev}");
    assert_eq!(
        (ev["old"]["flags_bucketing"].as_str(), ev["new"]["flags_bucketing"].as_str()),
        (Some("cbor"), Some("string"))
    );
    let mut after = Vec::new();
    for i in 0..200 {
        after.push(pool(&mut c, Some(&format!("user-{i}")), Some("x@example.com")).await == "canary");
    }
    assert_eq!(after, expected(switchyard::flags::Bucketing::String));
    let moved = route_all.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(moved > 20, "the generations bucket differently ({moved} of 200 users moved)");
}
