//! Reading one cookie's value from the `Cookie` request headers without allocating.

use http::{header::COOKIE, HeaderMap};

/// The value of cookie `name`, looked up across all `Cookie` headers (RFC 6265 §5.4 form
/// `a=1; b=2`). Surrounding double quotes are removed.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().find_map(|h| {
        h.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            (k.trim_ascii() == name.as_bytes()).then(|| {
                let v = v.trim_ascii();
                v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_cookies() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; session=xyz;b=2"));
        h.append(COOKIE, HeaderValue::from_static("q=\"quoted\""));
        assert_eq!(cookie_value(&h, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie_value(&h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(&h, "q"), Some(&b"quoted"[..]));
        assert_eq!(cookie_value(&h, "sess"), None);
        assert_eq!(cookie_value(&h, "missing"), None);
    }
}
