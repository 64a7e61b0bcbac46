//! The admin API matches its OpenAPI document: schemathesis (installed by
//! `scripts/test.sh`) generates requests from the document the proxy serves —
//! valid ones, invalid ones, and sequences of calls — and fails on any 5xx,
//! an undocumented status or content type, a body that does not match its
//! schema, or invalid data accepted.

use crate::plugins::plugins_section;
use switchyard_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_matches_its_openapi_document() {
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\nviewer:{READ_TOKEN}:read\n")).unwrap();
    std::fs::write(
        dir.path().join("flags.json"),
        r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}"#,
    )
    .unwrap();
    let svc = service(
        "checkout",
        "    rollout:\n      steps: [{ weight: 10, hold: 1m }]\n",
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 90, canary: 10 }\n      rules:\n        - { plugin: cohort, config: { header: { name: x-cohort, values: [beta] } } }\n",
    );
    let yaml = format!(
        "{}flags: {{ file: flags.json }}\nstate: {{ dir: state }}\n{}",
        admin_config(&svc),
        plugins_section(&["cohort-router"]).replace("name: cohort-router", "name: cohort")
    );
    let proxy = Proxy::start_in(dir, &yaml).await;
    let admin = proxy.admin.unwrap();

    let st = std::env::var("SWITCHYARD_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    let seed = std::env::var("SWITCHYARD_CONTRACT_SEED").unwrap_or_else(|_| "20261201".into());
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/contract/schemathesis.toml");
    let out = tokio::process::Command::new(&st)
        .args(["--config-file", config, "run", &format!("http://{admin}/v1/openapi.yaml")])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "40", "--workers", "1", "--seed", &seed])
        .args(["--request-timeout", "10", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(proxy.dir.path())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run schemathesis (`{st}`): {e}; `bash scripts/test.sh` installs it"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the admin API does not match its OpenAPI document:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    eprintln!(
        "{}",
        report.lines().filter(|l| l.contains("generated") || l.contains("passed")).collect::<Vec<_>>().join("\n")
    );
}
