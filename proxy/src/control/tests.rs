//! `Control` on its own: a real state store in a temp dir, no listener, no
//! binary. Each change is checked three ways: the snapshot the data path
//! reads, the event in the history, and what a restart finds.

use super::*;
use crate::{Options, Proxy};

const YAML: &str = r#"
listeners: [{ name: l, bind: "127.0.0.1:0" }]
state: { dir: state }
services:
  - name: web
    pools:
      stable: { endpoints: ["127.0.0.1:1"] }
      canary: { endpoints: ["127.0.0.1:2"] }
    split: { weights: { stable: 90, canary: 10 } }
"#;

/// A control path over `YAML` (or the file in `dir`, for reloads) and its state store in `dir`.
fn control(dir: &std::path::Path) -> Arc<Control> {
    let path = dir.join("switchyard.yaml");
    if !path.exists() {
        std::fs::write(&path, YAML).unwrap();
    }
    let config = Config::load(&path).unwrap();
    let options = Options { config_path: Some(path), ..Options::default() };
    Proxy::new(config, options).unwrap().control()
}

/// The weights the data path splits `web` by, as `[stable, canary]`.
fn weights(c: &Control) -> [u32; 2] {
    let snap = c.shared.snapshot.load();
    let svc = snap.service("web").unwrap();
    let of = |name: &str| svc.split.weights()[svc.pools.iter().position(|p| p.name == name).unwrap()];
    [of("stable"), of("canary")]
}

fn history(c: &Control) -> Vec<Event> {
    c.store.as_ref().unwrap().last_events(100).unwrap()
}

#[tokio::test]
async fn a_weight_change_swaps_the_snapshot_records_an_event_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(dir.path());
    let asked: WeightMap = [("stable".into(), 50), ("canary".into(), 50)].into();
    let ev = c.set_weights("web", asked, "ops", Some("half".into())).await.unwrap();
    assert_eq!(weights(&c), [50, 50]);
    assert_eq!((ev.kind.as_str(), ev.actor.as_str(), ev.reason.as_deref()), ("weights", "ops", Some("half")));
    assert_eq!(history(&c).last().map(|e| e.seq), Some(ev.seq), "the answer is the recorded event");
    drop(c);
    let again = control(dir.path());
    assert_eq!(weights(&again), [50, 50], "the store's weights win over the file's after a restart");
}

#[tokio::test]
async fn refused_weight_changes_name_the_problem_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(dir.path());
    let before = history(&c).len();
    let unknown: WeightMap = [("blue".into(), 1)].into();
    let err = c.set_weights("web", unknown, "ops", None).await.unwrap_err();
    assert!(matches!(&err, ControlError::BadRequest(m) if m.contains("unknown pool `blue`")), "{err}");
    let zero: WeightMap = [("stable".into(), 0), ("canary".into(), 0)].into();
    assert!(matches!(c.set_weights("web", zero, "ops", None).await, Err(ControlError::BadRequest(_))));
    let missing = c.set_weights("shop", WeightMap::new(), "ops", None).await.unwrap_err();
    assert!(matches!(missing, ControlError::NotFound(_)), "{missing}");
    assert_eq!(weights(&c), [90, 10], "the snapshot is untouched");
    let refused: Vec<_> = history(&c).into_iter().skip(before).collect();
    assert_eq!(refused.len(), 3, "each refusal is in the history: {refused:?}");
    assert!(refused.iter().all(|e| e.outcome == "refused" && !e.message.is_empty()), "{refused:?}");
}

#[tokio::test]
async fn a_reset_returns_to_the_file_and_a_bad_reload_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(dir.path());
    c.set_weights("web", [("canary".into(), 1)].into(), "ops", None).await.unwrap();
    assert_eq!(weights(&c), [0, 1]);
    c.reset_weights("web", "ops", None).await.unwrap();
    assert_eq!(weights(&c), [90, 10]);

    std::fs::write(dir.path().join("switchyard.yaml"), YAML.replace("canary: 10", "canary: ten")).unwrap();
    let err = c.reload("ops", None).await.unwrap_err();
    assert!(matches!(&err, ControlError::BadRequest(m) if m.contains("line")), "names the line: {err}");
    assert_eq!(weights(&c), [90, 10]);

    std::fs::write(dir.path().join("switchyard.yaml"), YAML.replace("canary: 10", "canary: 30")).unwrap();
    c.reload("ops", None).await.unwrap();
    assert_eq!(weights(&c), [90, 30], "a good reload applies the file's new weights");
}
