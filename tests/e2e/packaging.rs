//! Packaging, checked without a container engine or a cluster (none runs
//! here): the configs the image, the Kubernetes manifests and the systemd
//! unit ship pass `switchyard check`; the manifests agree with their config
//! (ports, probes, mounts, names); the Dockerfile copies what its build
//! makes and runs as non-root; the unit passes `systemd-analyze verify` and
//! its security review.

use serde_json::Value;
use std::path::Path;
use switchyard_test_support::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{DEPLOY}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `switchyard check` on `config` with `token` beside it, as deployed.
fn check(config: &str, token: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), token).unwrap();
    check_yaml(dir.path(), config, args)
}

fn port_of(bind: &Value) -> u64 {
    bind.as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn the_kubernetes_manifests_agree_with_their_config_which_passes_check() {
    let docs = |f: &str| read(&format!("kubernetes/{f}")).split("\n---\n").map(yaml).collect::<Vec<_>>();
    let kustomization = yaml(&read("kubernetes/kustomization.yaml"));
    for r in kustomization["resources"].as_array().unwrap() {
        assert!(Path::new(&format!("{DEPLOY}/kubernetes/{}", r.as_str().unwrap())).exists(), "{r}");
    }
    let configmap = &docs("configmap.yaml")[0];
    let secret = &docs("secret.yaml")[0];
    let config_text = configmap["data"]["switchyard.yaml"].as_str().unwrap();
    let token = secret["stringData"]["admin.token"].as_str().unwrap();
    let config = yaml(config_text);

    // Service names resolve only in the cluster: checked for form here.
    let (ok, said) = check(config_text, token, &["--no-dns"]);
    assert!(ok, "{said}");
    let (ok, said) = check(config_text, token, &[]);
    assert!(!ok && said.contains(".endpoints[0]") && said.contains("svc.cluster.local"), "{said}");

    let deployment = &docs("deployment.yaml")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let port = |name: &str| {
        c["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["containerPort"].clone()
    };
    assert_eq!(port("http").as_u64(), Some(port_of(&config["listeners"][0]["bind"])));
    assert_eq!(port("admin").as_u64(), Some(port_of(&config["admin"]["bind"])));
    assert_eq!(c["readinessProbe"]["httpGet"], yaml("{ path: /health/ready, port: admin }"));
    assert_eq!(c["livenessProbe"]["httpGet"], yaml("{ path: /health/live, port: admin }"));
    assert_eq!(c["args"], yaml("[serve, --config, /etc/switchyard/switchyard.yaml]"));
    let mount = |name: &str| {
        c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["mountPath"].clone()
    };
    assert_eq!(mount("config"), "/etc/switchyard");
    assert_eq!(mount("state"), config["state"]["dir"], "the state store on the volume");
    let sources = pod["volumes"][0]["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["configMap"]["name"], configmap["metadata"]["name"]);
    assert_eq!(sources[1]["secret"]["name"], secret["metadata"]["name"]);
    assert_eq!(config["admin"]["token_file"], "admin.token", "the Secret's key, beside the config");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    let drain = humantime::parse_duration(config["server"]["drain_timeout"].as_str().unwrap()).unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > drain.as_secs(), "drained before killed");
    let pvc = &docs("pvc.yaml")[0];
    assert_eq!(pod["volumes"][1]["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"]);
    for svc in docs("service.yaml") {
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert!(["http", "admin"].contains(&p["targetPort"].as_str().unwrap()), "{p}");
        }
        assert_eq!(svc["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    }
}

#[test]
fn the_image_runs_as_non_root_and_copies_what_its_build_makes() {
    let (ok, said) = check(&read("switchyard.yaml"), "ops:0123456789abcdef0123\n", &[]);
    assert!(ok, "deploy/switchyard.yaml, the image's config: {said}");
    let dockerfile = read("container/Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let text = lines.join("\n");
    let user = lines.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "{user}");
    assert!(text.contains("FROM gcr.io/distroless/cc-debian12:nonroot"), "a minimal runtime image");
    // What the runtime stage copies out of /out is made by the build's RUN.
    for copied in ["/out/switchyard", "/out/plugins/", "/out/state/"] {
        assert!(
            text.contains(&format!("--from=build {copied}"))
                || text.contains(&format!("--from=build --chown=nonroot:nonroot {copied}")),
            "{copied}"
        );
    }
    assert!(text.contains("cargo build --release --locked -p switchyard --bin switchyard"));
    assert!(text.contains("cp target/release/switchyard /out/"));
    // The plugins' glob matches what scripts/build-plugins.sh (run before these tests) builds.
    let plugins = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins/wasm32-unknown-unknown/plugin");
    let built = std::fs::read_dir(plugins)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "wasm"))
        .count();
    assert!(
        text.contains("cp target/plugins/wasm32-unknown-unknown/plugin/*.wasm /out/plugins/") && built >= 3,
        "{built}"
    );
    assert!(text.contains("COPY deploy/switchyard.yaml /etc/switchyard/switchyard.yaml"));
    assert!(text.contains(
        r#"ENTRYPOINT ["/usr/local/bin/switchyard", "serve", "--config", "/etc/switchyard/switchyard.yaml"]"#
    ));
    let config = yaml(&read("switchyard.yaml"));
    assert!(text.contains(&format!("VOLUME [\"{}\"]", config["state"]["dir"].as_str().unwrap())));
    assert!(text.contains(&format!(
        "EXPOSE {} {}",
        port_of(&config["listeners"][0]["bind"]),
        port_of(&config["admin"]["bind"])
    )));
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read("systemd/switchyard.service");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.service");
    // Verified against the binary these tests run (verify checks the path exists).
    std::fs::write(&path, unit.replace("/usr/local/bin/switchyard", binary().to_str().unwrap())).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("systemd-analyze")
            .args(args)
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd; scripts/deps.sh --tests installs it)");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = run(&["verify"]);
    assert!(ok && said.trim().is_empty(), "{said}");
    let (_, said) = run(&["security", "--offline=true"]);
    let level: f64 = said
        .lines()
        .find_map(|l| l.split("Overall exposure level for switchyard.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(level <= 2.5, "exposure {level} (0 best, 10 worst):\n{said}");
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -USR2 $MAINPID"));
    assert!(!unit.contains("MemoryDenyWriteExecute=yes"), "wasmtime compiles plugins to machine code");
}
