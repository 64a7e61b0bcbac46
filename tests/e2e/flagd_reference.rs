//! Flag evaluation agrees with flagd's in-process reference evaluator
//! (`openfeature-flagd-core` from PyPI, installed by `scripts/test.sh` into
//! `target/flagd-reference/VERSION`): every flag of `tests/flagd/flags.json`
//! — fractional in every form, on strings, numbers, booleans, objects and
//! lists, `$ref`, `if`, `in`, `sem_ver`, `starts_with`, `ends_with` — for
//! 1,200 generated users, with each bucketing generation against the
//! reference version that uses it.

use serde_json::Value;
use std::path::PathBuf;
use switchyard::flags::{self, Bucketing, FlagSet};

const USERS: &str = "1200";
const SEED: &str = "20261201";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The reference's users and variants (`null`: no variant, or an error).
fn reference(version: &str) -> Value {
    let dir = std::env::var_os("SWITCHYARD_FLAGD_REFERENCE")
        .map_or_else(|| root().join("target/flagd-reference"), PathBuf::from)
        .join(version);
    assert!(dir.is_dir(), "no reference evaluator at {} (`bash scripts/test.sh` installs it)", dir.display());
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/flagd/reference.py"))
        .arg(root().join("tests/flagd/flags.json"))
        .args([USERS, SEED])
        .env("PYTHONPATH", &dir)
        .output()
        .expect("python3");
    assert!(out.status.success(), "reference evaluator failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn agree_with(version: &str, bucketing: Bucketing) {
    let reference = reference(version);
    let text = std::fs::read_to_string(root().join("tests/flagd/flags.json")).unwrap();
    let set = FlagSet::parse(&text, &Default::default(), bucketing).unwrap();
    let users = reference["users"].as_array().unwrap();
    let mut mismatches = Vec::new();
    let mut evaluations = 0;
    for (flag, want) in reference["results"].as_object().unwrap() {
        for (user, want) in users.iter().zip(want.as_array().unwrap()) {
            let attributes = user["attributes"].as_object().unwrap().clone();
            let mut ctx = flags::context(attributes, user["targetingKey"].as_str().unwrap_or(""));
            if user["targetingKey"].is_null() {
                ctx.as_object_mut().unwrap().remove("targetingKey");
            }
            flags::set_flag_key(&mut ctx, flag);
            let got = set.resolve(flag, &ctx).map(|(variant, _)| variant);
            evaluations += 1;
            if got != want.as_str() {
                mismatches.push(format!("{flag} for {user}: reference {want}, proxy {got:?}"));
            }
        }
    }
    eprintln!(
        "{bucketing} bucketing vs openfeature-flagd-core {version}: {evaluations} evaluations, {} differ",
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {evaluations} differ:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
}

#[test]
fn cbor_bucketing_agrees_with_openfeature_flagd_core_2() {
    agree_with("2.0.0", Bucketing::Cbor);
}

#[test]
fn string_bucketing_agrees_with_openfeature_flagd_core_1() {
    agree_with("1.0.0", Bucketing::String);
}
