//! flagd's `fractional` operation: which variant a user falls into.
//!
//! Two generations of the bucketing hash exist, and the proxy must use the
//! one the applications' flagd providers use, or it puts users in other
//! cohorts than the application does ([`Bucketing`]):
//!
//! - [`Bucketing::Cbor`], flagd's hardened hashing (its ADR "Harden hashing
//!   consistency and add support for non-string attributes in fractional
//!   evaluation"): the bucketing value — any JSON value — is normalised
//!   (whole floats within the 64-bit integer range become integers),
//!   encoded as deterministic CBOR (RFC 8949 §4.2: shortest integers and
//!   floats, definite lengths, map keys in canonical order) and hashed with
//!   MurmurHash3 (x86, 32 bits, seed 0). The shorthand (no explicit value)
//!   hashes the array `[flagKey, targetingKey]`; a `null` value or a missing
//!   or empty targeting key is an error: no variant, so the default applies.
//! - [`Bucketing::String`], the earlier hashing: an explicit value must be a
//!   string, hashed as UTF-8 bytes; without one, the shorthand hashes the
//!   string `flagKey + targetingKey`. As in openfeature-flagd-core 1.0.0, a
//!   first argument that is neither a string nor a bucket (`null`, a number:
//!   a missing attribute) makes the distribution malformed: no variant.
//!
//! Both share the distribution: weights are integers (default 1, negative
//! ones count as 0, their sum at most 2³¹ − 1), and the bucket is
//! `hash × total >> 32`.

use ciborium::value::{CanonicalValue, Integer, Value as Cbor};
use datalogic_rs::datavalue::NumberValue;
use datalogic_rs::{bumpalo::Bump, operator::EvalContext, ArenaExt, CustomOperator, DataValue};
use std::io::{Cursor, Read};

/// Which hash `fractional` buckets users with (`flags.bucketing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucketing {
    /// flagd's hardened hashing of deterministic CBOR (the current one).
    #[default]
    Cbor,
    /// The earlier hashing of the value as a string.
    String,
}

impl std::fmt::Display for Bucketing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bucketing::Cbor => "cbor",
            Bucketing::String => "string",
        })
    }
}

impl Bucketing {
    /// Our operator's name for `fractional` with this hashing (targeting is
    /// rewritten to it, so datalogic-rs's built-in one is never used).
    pub(super) fn operator(self) -> &'static str {
        match self {
            Bucketing::Cbor => "switchyard_fractional_cbor",
            Bucketing::String => "switchyard_fractional_string",
        }
    }
}

/// The largest total weight flagd allows.
const MAX_TOTAL_WEIGHT: i64 = i32::MAX as i64;

/// `fractional` with the hashing of one generation.
pub(super) struct Fractional(pub Bucketing);

impl CustomOperator for Fractional {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        let Some(first) = args.first() else { return Ok(arena.null()) };
        let root = ctx.root_input();
        // The hash of what this generation hashes, with the buckets after it;
        // the common shapes borrow from the context rather than copy it.
        let (hash, fractions) = match self.0 {
            Bucketing::Cbor if first.as_array().is_none() => {
                (to_cbor(first).filter(|v| !v.is_null()).and_then(|v| cbor_hash(&v)), &args[1..])
            }
            Bucketing::Cbor => (targeting_key(root).and_then(|key| cbor_hash(&key)), args),
            Bucketing::String => match first.as_str() {
                Some(s) => (Some(s).filter(|s| !s.is_empty()).and_then(|s| murmur(s.as_bytes())), &args[1..]),
                None => {
                    (targeting_key(root).and_then(|(flag, key)| murmur(Cursor::new(flag).chain(key.as_bytes()))), args)
                }
            },
        };
        let Some(hash) = hash else { return Ok(arena.null()) };
        Ok(pick(hash, fractions).unwrap_or_else(|| arena.null()))
    }
}

/// `(flagKey, targetingKey)` from the context; `None` without a non-empty
/// string targeting key (flagd's error for the shorthand).
fn targeting_key<'a>(root: &'a DataValue<'a>) -> Option<(&'a str, &'a str)> {
    fn field<'a>(v: &'a DataValue<'a>, name: &str) -> Option<&'a str> {
        v.as_object()?.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.as_str())
    }
    let key = field(root, "targetingKey").filter(|k| !k.is_empty())?;
    let flagd = root.as_object().and_then(|o| o.iter().find(|(k, _)| *k == "$flagd")).map(|(_, v)| v);
    Some((flagd.and_then(|f| field(f, "flagKey")).unwrap_or(""), key))
}

/// The variant a `hash` falls into among `fractions`; `None` when the
/// distribution is malformed (flagd's error: the default variant applies).
fn pick<'a>(hash: u32, fractions: &[&'a DataValue<'a>]) -> Option<&'a DataValue<'a>> {
    let mut parsed = Vec::with_capacity(fractions.len());
    let mut total: i64 = 0;
    for f in fractions {
        let arr = f.as_array()?;
        let (variant, weight) = match arr {
            [variant] => (variant, 1),
            [variant, DataValue::Number(NumberValue::Integer(w))] => (variant, (*w).max(0)),
            _ => return None,
        };
        total = total.checked_add(weight)?;
        parsed.push((variant, weight));
    }
    if total <= 0 || total > MAX_TOTAL_WEIGHT {
        return None;
    }
    let bucket = (u64::from(hash) * total as u64) >> 32;
    let mut end = 0u64;
    for (variant, weight) in parsed {
        end += weight as u64;
        if bucket < end {
            return Some(variant);
        }
    }
    None
}

/// MurmurHash3 (x86, 32 bits, seed 0) of a value's deterministic CBOR
/// encoding (`(flagKey, targetingKey)` encodes as the two-element array).
fn cbor_hash(value: &impl serde::Serialize) -> Option<u32> {
    let mut bytes = Vec::with_capacity(64);
    ciborium::ser::into_writer(value, &mut bytes).ok()?;
    murmur(bytes.as_slice())
}

/// MurmurHash3 (x86, 32 bits, seed 0) of the bytes `input` reads.
fn murmur(mut input: impl std::io::Read) -> Option<u32> {
    murmur3::murmur3_32(&mut input, 0).ok()
}

/// The CBOR form of a JSON value, normalised as flagd does: a float with no
/// fractional part in [-2⁶³, 2⁶⁴) is an integer; map keys sorted canonically.
fn to_cbor(v: &DataValue<'_>) -> Option<Cbor> {
    Some(match v {
        DataValue::Null => Cbor::Null,
        DataValue::Bool(b) => Cbor::Bool(*b),
        DataValue::Number(NumberValue::Integer(i)) => Cbor::Integer(Integer::from(*i)),
        DataValue::Number(NumberValue::Float(f)) => whole(*f).unwrap_or(Cbor::Float(*f)),
        DataValue::String(s) => Cbor::Text((*s).to_owned()),
        DataValue::Array(items) => Cbor::Array(items.iter().map(to_cbor).collect::<Option<_>>()?),
        DataValue::Object(fields) => {
            let mut entries = fields
                .iter()
                .map(|(k, v)| Some((Cbor::Text((*k).to_owned()), to_cbor(v)?)))
                .collect::<Option<Vec<_>>>()?;
            entries.sort_by_cached_key(|(k, _)| CanonicalValue::from(k.clone()));
            Cbor::Map(entries)
        }
        // Dates and durations never come from JSON input.
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// A whole float within the 64-bit integer range, as an integer.
fn whole(f: f64) -> Option<Cbor> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() != 0.0 || !(-TWO_63..2.0 * TWO_63).contains(&f) {
        return None;
    }
    Some(Cbor::Integer(if f < TWO_63 { Integer::from(f as i64) } else { Integer::from(f as u64) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: &Cbor) -> Vec<u8> {
        let mut b = Vec::new();
        ciborium::ser::into_writer(v, &mut b).unwrap();
        b
    }

    #[test]
    fn encoding_is_deterministic_and_normalised() {
        let float = |f: f64| encoded(&to_cbor(&DataValue::Number(NumberValue::Float(f))).unwrap());
        // Whole floats are integers; others take the shortest exact float.
        assert_eq!(float(1.0), [0x01]);
        assert_eq!(float(-1.0), [0x20]);
        assert_eq!(float(1.5), [0xf9, 0x3e, 0x00]);
        assert_eq!(float(1e20), encoded(&Cbor::Float(1e20)));
        assert_eq!(float(18_446_744_073_709_549_568.0), [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf8, 0x00]);
        // Map keys in canonical order (shorter first, then bytewise), whatever the input order.
        let arena = Bump::new();
        let one = DataValue::Number(NumberValue::Integer(1));
        let two = DataValue::Number(NumberValue::Integer(2));
        let a = arena.object(&[("bb", one), ("a", two)]);
        let b = arena.object(&[("a", two), ("bb", one)]);
        let want = [0xa2, 0x61, b'a', 0x02, 0x62, b'b', b'b', 0x01];
        assert_eq!(encoded(&to_cbor(a).unwrap()), want);
        assert_eq!(encoded(&to_cbor(b).unwrap()), want);
    }
}
