//! Feature flags, evaluated the way flagd evaluates them, so one flag
//! definition drives both the application (through a flagd provider) and
//! the proxy's routing.
//!
//! Definitions are flagd's JSON format: `flags` (each with `state`,
//! `variants`, `defaultVariant`, optional `targeting`) and shared
//! `$evaluators` referenced as `{"$ref": "name"}`. Targeting is JsonLogic
//! with flagd's operations (`fractional`, `starts_with`, `ends_with`,
//! `sem_ver`), compiled once by `datalogic-rs`; `fractional` hashes as the
//! configured [`Bucketing`] generation says (`fractional.rs`). The request
//! path reads an immutable [`FlagSet`]; changes (the file, the admin API)
//! build a new one.

mod fractional;

pub use fractional::Bucketing;

use crate::error::Error;
use datalogic_rs::{bumpalo::Bump, operator::EvalContext, ArenaExt, CustomOperator, DataValue, Engine, Logic};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Compiled flags.
pub struct FlagSet {
    flags: HashMap<String, Flag>,
    engine: Arc<Engine>,
    bucketing: Bucketing,
}

struct Flag {
    enabled: bool,
    variants: Map<String, Value>,
    default_variant: String,
    targeting: Option<Logic>,
    /// The effective definition, for the admin API.
    definition: Value,
    /// Changed through the admin API.
    overridden: bool,
}

thread_local! {
    /// Scratch memory for evaluations on this thread, reset after each.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::new());
}

// === impl FlagSet ===

impl std::fmt::Debug for FlagSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.flags.keys()).finish()
    }
}

impl Default for FlagSet {
    fn default() -> Self {
        Self { flags: HashMap::new(), engine: Arc::new(engine()), bucketing: Bucketing::default() }
    }
}

/// Our names for flagd's string operators (datalogic's own coerce numbers).
const STARTS_WITH: &str = "switchyard_starts_with";
const ENDS_WITH: &str = "switchyard_ends_with";

fn engine() -> Engine {
    Engine::builder()
        .add_operator(STARTS_WITH, Affix(true))
        .add_operator(ENDS_WITH, Affix(false))
        .add_operator(Bucketing::Cbor.operator(), fractional::Fractional(Bucketing::Cbor))
        .add_operator(Bucketing::String.operator(), fractional::Fractional(Bucketing::String))
        .build()
}

/// `starts_with` (`true`) or `ends_with` (`false`) as flagd defines them.
struct Affix(bool);

impl CustomOperator for Affix {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(match (args.first().and_then(|a| a.as_str()), args.get(1).and_then(|a| a.as_str())) {
            (Some(s), Some(affix)) if args.len() == 2 => {
                arena.bool(if self.0 { s.starts_with(affix) } else { s.ends_with(affix) })
            }
            _ => arena.null(),
        })
    }
}

impl FlagSet {
    /// Parses a flagd definition file's text, then applies run-time
    /// overrides (each a partial definition merged over the file's);
    /// `fractional` buckets with `bucketing`.
    pub fn parse(text: &str, overrides: &BTreeMap<String, Value>, bucketing: Bucketing) -> Result<Self, Error> {
        let doc: Value = serde_json::from_str(text).map_err(|e| Error::Flags(format!("not JSON: {e}")))?;
        let flags =
            doc.get("flags").and_then(Value::as_object).ok_or_else(|| Error::Flags("no `flags` object".into()))?;
        let evaluators = doc.get("$evaluators").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut defs: BTreeMap<String, (Value, bool)> =
            flags.iter().map(|(k, v)| (k.clone(), (v.clone(), false))).collect();
        for (key, patch) in overrides {
            let entry = defs.entry(key.clone()).or_insert((Value::Object(Map::new()), false));
            merge(&mut entry.0, patch);
            entry.1 = true;
        }
        let engine = Arc::new(engine());
        let mut out = HashMap::new();
        for (key, (def, overridden)) in defs {
            let flag = compile(&engine, &def, &evaluators, overridden, bucketing)
                .map_err(|e| Error::Flags(format!("flag `{key}`: {e}")))?;
            out.insert(key, flag);
        }
        Ok(Self { flags: out, engine, bucketing })
    }

    /// The bucketing generation `fractional` uses.
    pub fn bucketing(&self) -> Bucketing {
        self.bucketing
    }

    /// Resolves flag `key` for an evaluation context: the variant and its
    /// value. `None` when the flag is missing or disabled, or its targeting
    /// names no variant — the caller falls through.
    pub fn resolve(&self, key: &str, context: &Value) -> Option<(&str, &Value)> {
        let flag = self.flags.get(key)?;
        if !flag.enabled {
            return None;
        }
        let variant = match &flag.targeting {
            None => flag.default_variant.clone(),
            Some(logic) => ARENA.with(|arena| {
                let mut arena = arena.borrow_mut();
                // As in flagd: `null`, or an operator failing on its input
                // (which flagd turns into `null`), means the default variant.
                let name = match self.engine.evaluate(logic, context, &arena) {
                    Ok(v) if v.is_null() => Some(flag.default_variant.clone()),
                    Ok(v) => v.as_str().map(str::to_owned).or_else(|| v.as_bool().map(|b| b.to_string())),
                    Err(_) => Some(flag.default_variant.clone()),
                };
                arena.reset();
                name
            })?,
        };
        flag.variants.get_key_value(&variant).map(|(k, v)| (k.as_str(), v))
    }

    /// Every flag's effective definition and whether the admin API changed it.
    pub fn definitions(&self) -> BTreeMap<&str, (&Value, bool)> {
        self.flags.iter().map(|(k, f)| (k.as_str(), (&f.definition, f.overridden))).collect()
    }
}

/// Merges `patch`'s top-level fields over `base`.
fn merge(base: &mut Value, patch: &Value) {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            b.insert(k.clone(), v.clone());
        }
    }
}

fn compile(
    engine: &Engine,
    def: &Value,
    evaluators: &Map<String, Value>,
    overridden: bool,
    bucketing: Bucketing,
) -> Result<Flag, String> {
    let obj = def.as_object().ok_or("a flag is an object")?;
    let enabled = match obj.get("state").and_then(Value::as_str) {
        Some("ENABLED") => true,
        Some("DISABLED") => false,
        _ => return Err("`state` must be \"ENABLED\" or \"DISABLED\"".into()),
    };
    let variants = obj.get("variants").and_then(Value::as_object).cloned().ok_or("`variants` must be an object")?;
    if variants.is_empty() {
        return Err("`variants` is empty".into());
    }
    let default_variant =
        obj.get("defaultVariant").and_then(Value::as_str).ok_or("`defaultVariant` must be a string")?;
    if !variants.contains_key(default_variant) {
        return Err(format!("`defaultVariant` `{default_variant}` is not one of the variants"));
    }
    let targeting = match obj.get("targeting") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) if o.is_empty() => None,
        Some(t) => {
            let resolved = resolve_refs(t, evaluators, 0, bucketing)?;
            Some(engine.compile(&resolved).map_err(|e| format!("targeting: {e}"))?)
        }
    };
    Ok(Flag {
        enabled,
        variants,
        default_variant: default_variant.to_owned(),
        targeting,
        definition: def.clone(),
        overridden,
    })
}

/// Replaces every `{"$ref": "name"}` with the named shared evaluator, and
/// points `starts_with`, `ends_with` and `fractional` (with `bucketing`'s
/// hashing) at our operators.
fn resolve_refs(
    v: &Value,
    evaluators: &Map<String, Value>,
    depth: usize,
    bucketing: Bucketing,
) -> Result<Value, String> {
    if depth > 32 {
        return Err("`$ref`s nest too deep".into());
    }
    Ok(match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("$ref") => {
            let name = o["$ref"].as_str().ok_or("`$ref` takes an evaluator's name")?;
            let target = evaluators.get(name).ok_or_else(|| format!("no evaluator named `{name}`"))?;
            resolve_refs(target, evaluators, depth + 1, bucketing)?
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let k = match k.as_str() {
                        "starts_with" => STARTS_WITH.to_owned(),
                        "ends_with" => ENDS_WITH.to_owned(),
                        "fractional" => bucketing.operator().to_owned(),
                        _ => k.clone(),
                    };
                    Ok((k, resolve_refs(v, evaluators, depth, bucketing)?))
                })
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(a) => {
            Value::Array(a.iter().map(|v| resolve_refs(v, evaluators, depth, bucketing)).collect::<Result<_, _>>()?)
        }
        other => other.clone(),
    })
}

/// The evaluation context of a request: its attributes, the targeting key,
/// and flagd's `$flagd` properties (set `flagKey` with [`set_flag_key`]).
pub fn context(mut attributes: Map<String, Value>, targeting_key: &str) -> Value {
    attributes.insert("targetingKey".into(), Value::String(targeting_key.into()));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut flagd = Map::new();
    flagd.insert("flagKey".into(), Value::Null);
    flagd.insert("timestamp".into(), now.into());
    attributes.insert("$flagd".into(), Value::Object(flagd));
    Value::Object(attributes)
}

/// Points a context's `$flagd.flagKey` at the flag about to be evaluated.
pub fn set_flag_key(context: &mut Value, key: &str) {
    if let Some(k) = context.get_mut("$flagd").and_then(|f| f.get_mut("flagKey")) {
        if k.as_str() != Some(key) {
            *k = Value::String(key.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The flags behind flagd-testbed's targeting scenarios (v2 bucketing),
    /// written here as test data.
    fn testbed(bucketing: Bucketing) -> FlagSet {
        let suits =
            json!({ "clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades", "wild": "wild" });
        let quarter = |seed: Value| json!({ "fractional": [seed, ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]] });
        let two = |a: &str, b: &str| json!({ a: a, b: b });
        let ifelse = |cond: Value, yes: &str, no: Value| json!({ "if": [cond, yes, no] });
        let doc = json!({
            "$evaluators": { "is-ballmer": { "==": [{ "var": "email" }, "ballmer@macrosoft.com"] } },
            "flags": {
                "fractional-flag": { "state": "ENABLED", "variants": suits, "defaultVariant": "wild",
                    "targeting": quarter(json!({ "cat": [{ "var": "$flagd.flagKey" }, { "var": "user.name" }] })) },
                "fractional-flag-shorthand": { "state": "ENABLED", "variants": { "heads": "heads", "tails": "tails", "draw": "draw" },
                    "defaultVariant": "draw", "targeting": { "fractional": [["heads"], ["tails", 1]] } },
                "fractional-flag-A-shared-seed": { "state": "ENABLED", "variants": suits, "defaultVariant": "wild",
                    "targeting": quarter(json!({ "cat": ["shared-seed", { "var": "user.name" }] })) },
                "fractional-flag-B-shared-seed": { "state": "ENABLED",
                    "variants": { "clubs": "ace-of-clubs", "diamonds": "ace-of-diamonds", "hearts": "ace-of-hearts", "spades": "ace-of-spades", "wild": "wild" },
                    "defaultVariant": "wild", "targeting": quarter(json!({ "cat": ["shared-seed", { "var": "user.name" }] })) },
                "fractional-hash-edge-flag": { "state": "ENABLED", "variants": two("lower", "upper"), "defaultVariant": "lower",
                    "targeting": { "fractional": [{ "var": "targetingKey" }, ["lower", 50], ["upper", 50]] } },
                "starts-ends-flag": { "state": "ENABLED", "variants": { "prefix": "prefix", "postfix": "postfix", "none": "none" }, "defaultVariant": "none",
                    "targeting": ifelse(json!({ "starts_with": [{ "var": "id" }, "abc"] }), "prefix",
                        ifelse(json!({ "ends_with": [{ "var": "id" }, "xyz"] }), "postfix",
                            ifelse(json!({ "ends_with": [{ "var": "id" }, 3] }), "fail", json!("none")))) },
                "equal-greater-lesser-version-flag": { "state": "ENABLED",
                    "variants": { "equal": "equal", "greater": "greater", "lesser": "lesser", "none": "none" }, "defaultVariant": "none",
                    "targeting": ifelse(json!({ "sem_ver": [{ "var": "version" }, "=", "2.0.0"] }), "equal",
                        ifelse(json!({ "sem_ver": [{ "var": "version" }, ">", "2.0.0"] }), "greater",
                            ifelse(json!({ "sem_ver": [{ "var": "version" }, "<", "2.0.0"] }), "lesser",
                                ifelse(json!({ "sem_ver": [{ "var": "version" }, "=", "2.0.0.0"] }), "fail", json!("none"))))) },
                "major-minor-version-flag": { "state": "ENABLED", "variants": { "minor": "minor", "major": "major", "none": "none" }, "defaultVariant": "none",
                    "targeting": ifelse(json!({ "sem_ver": [{ "var": "version" }, "~", "3.0.0"] }), "minor",
                        ifelse(json!({ "sem_ver": [{ "var": "version" }, "^", "3.0.0"] }), "major", json!("none"))) },
                "semver-v-prefix-flag": { "state": "ENABLED", "variants": two("match", "no-match"), "defaultVariant": "no-match",
                    "targeting": ifelse(json!({ "sem_ver": [{ "var": "version" }, "=", "v1.0.0"] }), "match", json!("no-match")) },
                "semver-partial-version-flag": { "state": "ENABLED", "variants": two("match", "no-match"), "defaultVariant": "no-match",
                    "targeting": ifelse(json!({ "sem_ver": [{ "var": "version" }, "^", "1"] }), "match", json!("no-match")) },
                "semver-build-metadata-flag": { "state": "ENABLED", "variants": two("match", "no-match"), "defaultVariant": "no-match",
                    "targeting": ifelse(json!({ "sem_ver": [{ "var": "version" }, "=", "1.0.0+build"] }), "match", json!("no-match")) },
                "some-email-targeted-flag": { "state": "ENABLED", "variants": { "hi": "hi", "bye": "bye" }, "defaultVariant": "bye",
                    "targeting": { "if": [{ "$ref": "is-ballmer" }, "hi", null] } },
                "disabled-flag": { "state": "DISABLED", "variants": { "on": true, "off": false }, "defaultVariant": "on" }
            }
        });
        FlagSet::parse(&doc.to_string(), &BTreeMap::new(), bucketing).unwrap()
    }

    fn value(flags: &FlagSet, key: &str, ctx: Value) -> String {
        let mut ctx = ctx;
        ctx["$flagd"] = json!({ "flagKey": key });
        flags.resolve(key, &ctx).map_or("fallback".into(), |(_, v)| v.as_str().unwrap_or("?").to_owned())
    }

    /// flagd-testbed's `@fractional-v3` vectors: the hardened (CBOR) hashing.
    #[test]
    fn flagd_testbed_fractional_v3() {
        let f = testbed(Bucketing::Cbor);
        for (name, want) in
            [("jack", "diamonds"), ("queen", "diamonds"), ("ten", "clubs"), ("nine", "clubs"), ("3", "spades")]
        {
            assert_eq!(value(&f, "fractional-flag", json!({ "user": { "name": name } })), want, "{name}");
        }
        for (key, want) in [("jon@company.com", "tails"), ("jane@company.com", "tails")] {
            assert_eq!(value(&f, "fractional-flag-shorthand", json!({ "targetingKey": key })), want, "{key}");
        }
        for (name, a, b) in [
            ("seven", "hearts", "ace-of-hearts"),
            ("eight", "hearts", "ace-of-hearts"),
            ("nine", "diamonds", "ace-of-diamonds"),
            ("two", "diamonds", "ace-of-diamonds"),
        ] {
            assert_eq!(value(&f, "fractional-flag-A-shared-seed", json!({ "user": { "name": name } })), a, "{name}");
            assert_eq!(value(&f, "fractional-flag-B-shared-seed", json!({ "user": { "name": name } })), b, "{name}");
        }
        // A missing bucketing value or targeting key is an error: the default variant.
        assert_eq!(value(&f, "fractional-flag-shorthand", json!({})), "draw");
        assert_eq!(value(&f, "fractional-flag-shorthand", json!({ "targetingKey": "" })), "draw");
    }

    /// flagd-testbed's `@fractional-v2` vectors: the string hashing.
    #[test]
    fn flagd_testbed_fractional_v2() {
        let f = testbed(Bucketing::String);
        for (name, want) in
            [("jack", "hearts"), ("queen", "spades"), ("ten", "clubs"), ("nine", "diamonds"), ("3", "clubs")]
        {
            assert_eq!(value(&f, "fractional-flag", json!({ "user": { "name": name } })), want, "{name}");
        }
        for (key, want) in [("jon@company.com", "heads"), ("jane@company.com", "tails")] {
            assert_eq!(value(&f, "fractional-flag-shorthand", json!({ "targetingKey": key })), want, "{key}");
        }
        for (name, a, b) in [
            ("seven", "hearts", "ace-of-hearts"),
            ("eight", "diamonds", "ace-of-diamonds"),
            ("nine", "clubs", "ace-of-clubs"),
            ("two", "spades", "ace-of-spades"),
        ] {
            assert_eq!(value(&f, "fractional-flag-A-shared-seed", json!({ "user": { "name": name } })), a);
            assert_eq!(value(&f, "fractional-flag-B-shared-seed", json!({ "user": { "name": name } })), b);
        }
        // Keys whose MurmurHash3 is 0, 1, i32::MAX, 2^31 and u32::MAX.
        for (key, want) in
            [("ejOoVL", "lower"), ("bY9fO-", "lower"), ("SI7p-", "lower"), ("6LvT0", "upper"), ("ceQdGm", "upper")]
        {
            assert_eq!(value(&f, "fractional-hash-edge-flag", json!({ "targetingKey": key })), want, "{key}");
        }
    }

    #[test]
    fn flagd_testbed_string_and_semver_operators() {
        let f = testbed(Bucketing::Cbor);
        for (id, want) in
            [("abcdef", "prefix"), ("uvwxyz", "postfix"), ("abcxyz", "prefix"), ("lmnopq", "none"), ("3", "none")]
        {
            assert_eq!(value(&f, "starts-ends-flag", json!({ "id": id })), want, "{id}");
        }
        for (v, want) in [
            ("2.0.0", "equal"),
            ("2.1.0", "greater"),
            ("1.9.0", "lesser"),
            ("2.0.0-alpha", "lesser"),
            ("2.0.0.0", "none"),
        ] {
            assert_eq!(value(&f, "equal-greater-lesser-version-flag", json!({ "version": v })), want, "{v}");
        }
        for (v, want) in [("3.0.1", "minor"), ("3.1.0", "major"), ("4.0.0", "none")] {
            assert_eq!(value(&f, "major-minor-version-flag", json!({ "version": v })), want, "{v}");
        }
        for (v, want) in [("1.0.0", "match"), ("v1.0.0", "match"), ("V1.0.0", "match"), ("2.0.0", "no-match")] {
            assert_eq!(value(&f, "semver-v-prefix-flag", json!({ "version": v })), want, "{v}");
        }
        for (v, want) in [
            (json!("1.5.0"), "match"),
            (json!("1.0.0"), "match"),
            (json!("1.0"), "match"),
            (json!("1"), "match"),
            (json!(1), "match"),
            (json!("2.0.0"), "no-match"),
        ] {
            assert_eq!(value(&f, "semver-partial-version-flag", json!({ "version": v })), want, "{v}");
        }
        for (v, want) in [("1.0.0", "match"), ("1.0.0+other", "match"), ("2.0.0", "no-match")] {
            assert_eq!(value(&f, "semver-build-metadata-flag", json!({ "version": v })), want, "{v}");
        }
    }

    #[test]
    fn evaluator_refs_null_targeting_disabled_flags_and_overrides() {
        let f = testbed(Bucketing::Cbor);
        assert_eq!(value(&f, "some-email-targeted-flag", json!({ "email": "ballmer@macrosoft.com" })), "hi");
        assert_eq!(value(&f, "some-email-targeted-flag", json!({ "email": "x@y.z" })), "bye", "null → default variant");
        assert_eq!(value(&f, "disabled-flag", json!({})), "fallback", "disabled flags resolve to nothing");
        assert_eq!(value(&f, "missing", json!({})), "fallback");
        let odd = r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "nope", {"sem_ver": [{"var": "v"}, "=", "1.0.0"]}]}}}}"#;
        let odd = FlagSet::parse(odd, &BTreeMap::new(), Bucketing::Cbor).unwrap();
        assert!(
            odd.resolve("f", &json!({ "x": 1 })).is_none(),
            "a variant that does not exist is an error: fall through"
        );
        assert_eq!(
            odd.resolve("f", &json!({ "v": "not-a-version" })).map(|(v, _)| v),
            Some("a"),
            "an operator error: default"
        );

        let bad = r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"$ref": "nope"}}}}"#;
        assert!(FlagSet::parse(bad, &BTreeMap::new(), Bucketing::Cbor)
            .unwrap_err()
            .to_string()
            .contains("no evaluator named `nope`"));
        let bad = r#"{"flags": {"f": {"state": "ON", "variants": {"a": 1}, "defaultVariant": "a"}}}"#;
        assert!(FlagSet::parse(bad, &BTreeMap::new(), Bucketing::Cbor).unwrap_err().to_string().contains("state"));
        assert!(FlagSet::parse("{", &BTreeMap::new(), Bucketing::Cbor).is_err());

        let file = r#"{"flags": {"f": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}"#;
        let overrides: BTreeMap<String, Value> = [("f".to_string(), json!({ "state": "ENABLED" }))].into();
        let f = FlagSet::parse(file, &overrides, Bucketing::Cbor).unwrap();
        assert_eq!(f.resolve("f", &json!({})).map(|(v, _)| v), Some("on"), "the override enabled it");
        assert!(f.definitions()["f"].1);
    }
}
