//! Graceful drain on SIGTERM, the drain timeout, and `switchyard check`.

use http::Response;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use switchyard_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(1500)).await; // slow upstream
        Response::new(full("finished"))
    })
    .await;
    let mut proxy = Proxy::start(&config(&service("s", "", &[("p", &[slow.addr])], ""))).await;
    let addr = proxy.addr;
    let mut inflight = Vec::new();
    for _ in 0..5 {
        inflight.push(tokio::spawn(async move { get(addr, "/", &[]).await }));
    }
    assert!(
        eventually(Duration::from_secs(5), || slow.hits() == 5).await,
        "all requests reached the upstream before the signal"
    );
    proxy.signal("TERM");
    for r in inflight {
        let (status, _, body) = r.await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "finished"));
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_shutdown() {
    let hung = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await; // hung upstream
        Response::new(full("never"))
    })
    .await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\nserver: {{ drain_timeout: 500ms }}\nservices:\n{}",
        service("s", "", &[("p", &[hung.addr])], "")
    );
    let mut proxy = Proxy::start(&yaml).await;
    let addr = proxy.addr;
    let stuck = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let r = c.send(http::Request::get("/").header("host", "x").body(full("")).unwrap()).await;
        match r {
            Ok(resp) => resp.into_body().collect().await.is_ok(),
            Err(_) => false,
        }
    });
    assert!(eventually(Duration::from_secs(5), || hung.hits() > 0).await, "the request is in flight");
    let t = Instant::now();
    proxy.signal("TERM");
    let exit = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait()).await.unwrap().unwrap();
    assert!(exit.success());
    assert!(t.elapsed() < Duration::from_secs(5), "exited {:?} after SIGTERM", t.elapsed());
    assert!(!stuck.await.unwrap(), "the hung request cannot have completed");
}

fn check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    // The example's flag file, which `check` loads too.
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/flags.json"), dir.path().join("flags.json"))
        .unwrap();
    let out = std::process::Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn check_names_the_field_and_line() {
    let good =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/checkout.yaml")).unwrap().replace(
            "../target/plugins/wasm32-unknown-unknown/plugin/canary_judge.wasm",
            switchyard_test_support::plugins::wasm("canary-judge").to_str().unwrap(),
        );
    let (ok, out) = check(&good);
    assert!(ok, "{out}");

    let cases = [
        (
            "      canary: { endpoints: [127.0.0.1:9002] }",
            "      canary: { endpoints: [127.0.0.1:9002], weight: 3 }",
            "services[0].pools.canary",
            "line 12",
        ),
        ("weights: { stable: 95, canary: 5 }", "weights: { stable: 95, canry: 5 }", "unknown pool `canry`", "line 18"),
        ("weights: { stable: 95, canary: 5 }", "weights: { stable: 0, canary: 0 }", "must not all be zero", "line 18"),
        ("pool: canary }", "pool: blue }", "services[0].split.rules[1].pool", "line 17"),
        ("bind: 0.0.0.0:8080", "bind: 0.0.0.0:http-alt-x", "listeners[0].bind", "line 5"),
        ("path_prefix: / }", "path_prefix: api }", "services[0].match.path_prefix", "line 9"),
        ("services:", "servics:", "unknown field `servics`", "line 7"),
        (
            "# policy: { plugin: canary-judge, config: { alpha: 0.01 } }",
            "policy: { plugin: canary-jduge }",
            "services[0].rollout.analysis.policy.plugin (line 34): no plugin named `canary-jduge`",
            "line 34",
        ),
        ("- { name: canary-judge, path:", "- { name: canary-judge, pth:", "unknown field `pth`", "line 45"),
    ];
    for (from, to, expect, line) in cases {
        assert!(good.contains(from), "{from}");
        let (ok, out) = check(&good.replacen(from, to, 1));
        assert!(!ok, "accepted: {to}");
        assert!(out.contains(expect) && out.contains(line), "for `{to}` expected {expect} at {line}, got: {out}");
    }
    // Plugin files are compiled and tried by `check`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.wasm"), "not wasm").unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/flags.json"), dir.path().join("flags.json"))
        .unwrap();
    let yaml = good.replace(switchyard_test_support::plugins::wasm("canary-judge").to_str().unwrap(), "bad.wasm");
    let (ok, err) = check_yaml(dir.path(), &yaml, &[]);
    assert!(!ok && err.contains("plugins[0] (`canary-judge`): not a valid component"), "{err}");
    // TLS files are loaded by `check`, not only looked for.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("c.key"), "not a key").unwrap();
    let yaml = good
        .replace("    # tls: { cert: certs/site.pem, key: certs/site.key }", "    tls: { cert: c.pem, key: c.key }");
    std::fs::write(dir.path().join("tls.yaml"), yaml).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/flags.json"), dir.path().join("flags.json"))
        .unwrap();
    let out = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(dir.path().join("tls.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener `public`") && err.contains("c.pem"), "{err}");

    let (ok, out) = check("listeners: [\n");
    assert!(!ok);
    assert!(out.contains("config:"), "{out}");
    let out = std::process::Command::new(binary())
        .args(["check", "--config", "/nonexistent/switchyard.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

/// Log lines to a file or a pipe carry no terminal colour codes.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "listeners: []\nservices: []\n").unwrap();
    let out = std::process::Command::new(switchyard_test_support::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ERROR"), "the refusal is logged: {text}");
    assert!(!text.contains('\u{1b}'), "no escape codes: {text:?}");
}
