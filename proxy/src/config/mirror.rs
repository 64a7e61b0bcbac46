//! A service's mirror (`split.mirror`): a pool that gets copies of a share
//! of the service's requests and never answers the client.

use super::fail;
use super::file::FileMirror;
use crate::error::Error;
use http::{HeaderName, HeaderValue, Method};
use serde_saphyr::Spanned;

/// Largest mirrored request body by default; larger bodies are not mirrored.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// Mirrored requests in flight per service by default; more are dropped.
pub const DEFAULT_QUEUE: usize = 256;

/// Where copies of requests go, and which.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorConfig {
    /// Index of the mirror pool in the service's pools.
    pub pool: usize,
    /// Percent of the eligible requests copied (0–100).
    pub percent: f64,
    /// Methods copied (by default the safe ones: GET, HEAD, OPTIONS).
    pub methods: Vec<Method>,
    /// Headers a request must carry, with these values, to be copied.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Cookies a request must carry, with these values, to be copied.
    pub cookies: Vec<(String, String)>,
    /// Largest request body copied; a request with a larger one is not.
    pub max_body: u64,
    /// Copies in flight at most; a copy past it is dropped and counted.
    pub queue: usize,
}

impl MirrorConfig {
    /// A mirror to `pool` of `percent` % with every other setting at its default.
    pub fn to(pool: usize, percent: f64) -> Self {
        Self {
            pool,
            percent,
            methods: safe_methods(),
            headers: Vec::new(),
            cookies: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
            queue: DEFAULT_QUEUE,
        }
    }
}

fn safe_methods() -> Vec<Method> {
    vec![Method::GET, Method::HEAD, Method::OPTIONS]
}

/// Checks `split.mirror` (at `p`) against the service's pools.
pub(super) fn validate(m: Spanned<FileMirror>, pool_names: &[String], p: &str) -> Result<MirrorConfig, Error> {
    let (at, m) = (m.referenced, m.value);
    let pool = pool_names.iter().position(|n| *n == m.pool.value).ok_or_else(|| {
        let msg = format!("unknown pool `{}` (pools: {})", m.pool.value, pool_names.join(", "));
        fail(format!("{p}.pool"), &m.pool.referenced, msg)
    })?;
    if pool_names.len() < 2 {
        return Err(fail(p, &at, "a mirror needs a pool of its own beside the one that answers"));
    }
    let (percent, percent_at) = m.percent.map_or((100.0, at), |v| (v.value, v.referenced));
    if !(0.0..=100.0).contains(&percent) {
        return Err(fail(format!("{p}.percent"), &percent_at, format!("{percent} is not a percentage (0 to 100)")));
    }
    let methods = match m.methods {
        None => safe_methods(),
        Some(list) => {
            let mut out = Vec::new();
            for name in list.value {
                let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                    .map_err(|_| fail(format!("{p}.methods"), &list.referenced, format!("`{name}` is not a method")))?;
                out.push(method);
            }
            out
        }
    };
    let mut headers = Vec::new();
    for (k, v) in m.matcher.header {
        let name = HeaderName::try_from(k.as_str())
            .map_err(|_| fail(format!("{p}.match.header"), &at, format!("`{k}` is not a valid header name")))?;
        let value = HeaderValue::try_from(v.as_str())
            .map_err(|_| fail(format!("{p}.match.header.{k}"), &at, "not a valid header value"))?;
        headers.push((name, value));
    }
    Ok(MirrorConfig {
        pool,
        percent,
        methods,
        headers,
        cookies: m.matcher.cookie.into_iter().collect(),
        max_body: m.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0),
        queue: m.queue.unwrap_or(DEFAULT_QUEUE).max(1),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(mirror: &str) -> Result<Config, crate::Error> {
        let yaml = format!(
            "listeners: [{{ name: l, bind: \"127.0.0.1:0\" }}]\nservices:\n  - name: web\n    pools:\n      \
             stable: {{ endpoints: [\"127.0.0.1:1\"] }}\n      shadow: {{ endpoints: [\"127.0.0.1:2\"] }}\n    \
             split:\n      weights: {{ stable: 100 }}\n      mirror: {mirror}\n"
        );
        Config::from_yaml(&yaml, std::path::Path::new("."))
    }

    #[test]
    fn defaults_copy_every_safe_request() {
        let c = load("{ pool: shadow }").unwrap();
        let m = c.services[0].split.mirror.clone().unwrap();
        assert_eq!((m.pool, m.percent, m.max_body, m.queue), (0, 100.0, 64 * 1024, 256), "pools in name order");
        assert_eq!(m.methods, [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS]);
    }

    #[test]
    fn bad_mirrors_name_the_field_and_line() {
        let err = |m: &str| load(m).unwrap_err().to_string();
        let e = err("{ pool: nope }");
        assert!(e.contains("services[0].split.mirror.pool (line 9)") && e.contains("unknown pool `nope`"), "{e}");
        let e = err("{ pool: shadow, percent: 150 }");
        assert!(e.contains("split.mirror.percent (line 9)") && e.contains("not a percentage"), "{e}");
        let e = err("{ pool: shadow, methods: [\"GE T\"] }");
        assert!(e.contains("split.mirror.methods") && e.contains("`GE T` is not a method"), "{e}");
        let e = err("{ pool: shadow, max_body: lots }");
        assert!(e.contains("invalid size"), "{e}");
        let e = err("{ pool: shadow, sample: 3 }");
        assert!(e.contains("unknown field `sample`"), "{e}");
    }
}
