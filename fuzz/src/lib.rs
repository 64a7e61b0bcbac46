//! Fuzz targets for everything that parses untrusted input, written as plain
//! functions: `cargo fuzz` drives them (`fuzz_targets/`, `scripts/fuzz.sh`)
//! and the tests below replay every kept corpus input and crash reproducer
//! through them. Each target asserts the properties the rest of the proxy
//! relies on, beyond "does not panic".

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use std::collections::BTreeMap;
use std::path::Path;
use switchyard::data::headers::{self, ClientConn};
use switchyard_sdk::RequestBuilder;

/// A request head as it arrives (parsed the way any HTTP/1.1 parser would),
/// through the proxy's checks, path normalisation and header rewriting.
pub fn request_head(data: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut raw);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else { return };
    let (Some(method), Some(target)) = (req.method, req.path) else { return };
    let mut builder = Request::builder().method(method).uri(target);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else { return };
    let (mut parts, ()) = request.into_parts();

    let Ok(checked) = headers::check_request(&parts, 8192, 64 * 1024) else { return };
    let host = checked.host.into_owned();
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase() || b" ,/\\@?#".contains(&b)), "routing host {host:?}");
    let flags = checked.flags;
    let host_header = checked.host_header;

    let path = parts.uri.path().to_owned();
    if let Ok(normal) = switchyard::parse::path::normalize(&path) {
        assert!(normal.starts_with('/'), "{normal:?}");
        assert!(!normal.contains("//") && !normal.split('/').any(|s| s == "." || s == ".."), "{path:?} → {normal:?}");
        let again = switchyard::parse::path::normalize(&normal).expect("a normalised path normalises");
        assert_eq!(again, normal, "normalisation is idempotent");
    }
    let _ = switchyard::parse::path::is_suspicious(&path);

    let conn = ClientConn {
        peer: [192, 0, 2, 1].into(),
        peer_ip: HeaderValue::from_static("192.0.2.1"),
        tls: false,
        trust_forwarded: data.first().is_some_and(|b| b & 1 == 1),
        set_forwarded: data.first().is_some_and(|b| b & 2 == 2),
    };
    headers::to_upstream(&mut parts.headers, (flags, host_header), Some(&host), &conn);
    for hop in ["keep-alive", "proxy-connection", "transfer-encoding", "x-switchyard-pool"] {
        assert!(!parts.headers.contains_key(hop), "{hop} reached the upstream");
    }
    // Only a WebSocket upgrade keeps `Connection`, and then it says just that.
    let connection: Vec<_> = parts.headers.get_all("connection").iter().collect();
    assert!(connection.is_empty() || (flags.websocket && connection == ["upgrade"]), "Connection: {connection:?}");
    assert!(parts.headers.get_all("host").iter().count() <= 1, "one Host upstream");
}

/// A config file: parsed and validated, or refused with a message naming where.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = switchyard::Config::from_yaml(text, Path::new("/nonexistent")) {
        assert!(!e.to_string().is_empty(), "a refusal says why");
    }
}

/// The admin API's JSON bodies: weights, a rollout plan, a flag override.
pub fn admin_bodies(data: &[u8]) {
    if let Ok((weights, _)) = switchyard::admin::parse_weights(data) {
        assert!(!weights.is_empty());
    }
    let pools = ["stable".to_owned(), "canary".to_owned()];
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchyard::config::parse_plan(text, &pools);
    }
    if let Ok(patch) = serde_json::from_slice::<serde_json::Value>(data) {
        let base = r#"{"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}"#;
        let overrides = BTreeMap::from([("f".to_owned(), patch)]);
        if let Ok(set) = switchyard::flags::FlagSet::parse(base, &overrides, Default::default()) {
            let _ = set.resolve("f", &switchyard::flags::context(Default::default(), "user-1"));
        }
    }
}

/// A flag definitions file, then an evaluation of every flag in it with a
/// context taken from the same bytes.
pub fn flags(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (defs, attrs) = text.split_once('\u{0}').unwrap_or((text, "{}"));
    let Ok(set) = switchyard::flags::FlagSet::parse(defs, &BTreeMap::new(), Default::default()) else { return };
    let attributes = serde_json::from_str(attrs).unwrap_or_default();
    let context = switchyard::flags::context(attributes, "user-1");
    let keys: Vec<String> = set.definitions().keys().map(|k| k.to_string()).collect();
    for key in keys {
        let mut ctx = context.clone();
        switchyard::flags::set_flag_key(&mut ctx, &key);
        let _ = set.resolve(&key, &ctx);
    }
}

/// The packed request a router plugin gets: what the host writes decodes to
/// what it was given, and no byte string makes the decoder panic.
pub fn plugin_request(data: &[u8]) {
    let _ = switchyard_sdk::Request::decode(data.to_vec());

    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let method = fields.next().unwrap_or("GET");
    let path = fields.next().unwrap_or("/");
    let key = fields.next().filter(|k| !k.is_empty());
    let mut headers = HeaderMap::new();
    let mut expected_headers = Vec::new();
    let mut expected_cookies = Vec::new();
    for line in fields {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let Some(cookie) = name.strip_prefix("cookie=") {
            expected_cookies.push((cookie.to_owned(), value.to_owned()));
        } else if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            if !headers.contains_key(&n) {
                expected_headers.push((n.as_str().to_owned(), value.to_owned()));
            }
            headers.append(n, v);
        }
    }
    // As the host packs them: the first value of each header the rule lists.
    let mut b = RequestBuilder::new(Vec::new(), method, path, key);
    for (n, _) in &expected_headers {
        if let Some(v) = headers.get(n.as_str()).and_then(|v| std::str::from_utf8(v.as_bytes()).ok()) {
            b.push_header(n, v);
        }
    }
    for (n, v) in &expected_cookies {
        b.push_cookie(n, v);
    }
    let r = switchyard_sdk::Request::decode(b.finish()).expect("the host's encoding decodes");
    assert_eq!((r.method(), r.path(), r.sticky_key()), (method, path, key));
    let got: Vec<(String, String)> = r.headers().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
    assert_eq!(got, expected_headers);
    let cookies: Vec<(String, String)> = r.cookies().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
    assert_eq!(cookies, expected_cookies);
    for (n, _) in &cookies {
        let _ = switchyard::parse::cookie::cookie_value(&headers, n);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Runs every file kept for `target` (its corpus, and the reproducers of
    /// crashes found and fixed) through `f`.
    fn replay(target: &str, f: fn(&[u8])) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap();
                f(&bytes);
                n += 1;
            }
        }
        assert!(n > 0, "no corpus kept for `{target}` (run scripts/fuzz.sh)");
    }

    #[test]
    fn request_head_corpus() {
        replay("request_head", super::request_head);
    }

    #[test]
    fn config_corpus() {
        replay("config", super::config);
    }

    #[test]
    fn admin_bodies_corpus() {
        replay("admin_bodies", super::admin_bodies);
    }

    #[test]
    fn flags_corpus() {
        replay("flags", super::flags);
    }

    #[test]
    fn plugin_request_corpus() {
        replay("plugin_request", super::plugin_request);
    }
}
