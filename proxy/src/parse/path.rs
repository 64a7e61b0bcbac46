//! Request path normalisation, run before a service is matched.
//!
//! The proxy matches services on the normalised path and forwards that same
//! path, so the service chosen always equals what the upstream resolves:
//! percent-encoded unreserved characters are decoded (`%2e` → `.`, `%41` → `A`),
//! repeated slashes merged, `.` and `..` segments removed (RFC 3986 §5.2.4).
//! Shapes with no single meaning — a backslash, an encoded `/`, `\` or NUL, a
//! broken `%` escape — are refused (400).
//!
//! [`is_suspicious`] finds shapes that some upstreams decode further than
//! RFC 3986 does, and so could reach a path the proxy routed elsewhere: a
//! dot segment with path parameters (`..;`, which Tomcat reads as `..`), an
//! overlong UTF-8 escape (`%c0%ae`, a `.` in disguise), and a double-encoded
//! dot, slash, backslash or NUL (`%252e`). Services refuse them unless they
//! say `strict_paths: false`.

use std::borrow::Cow;

/// The path cannot be normalised unambiguously.
#[derive(Debug, PartialEq, Eq)]
pub struct AmbiguousPath;

/// Normalises an origin-form path (without the query). Borrows when the path
/// is already normal, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(AmbiguousPath);
    }
    if !needs_work(b) {
        return Ok(Cow::Borrowed(path));
    }

    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => return Err(AmbiguousPath),
            b'%' => {
                let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) else {
                    return Err(AmbiguousPath);
                };
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c);
                } else if matches!(c, b'/' | b'\\' | 0) {
                    return Err(AmbiguousPath);
                } else {
                    decoded.extend_from_slice(&[b'%', b[i + 1].to_ascii_uppercase(), b[i + 2].to_ascii_uppercase()]);
                }
                i += 3;
            }
            c => {
                decoded.push(c);
                i += 1;
            }
        }
    }

    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split(|c| *c == b'/').skip(1) {
        trailing_slash = matches!(seg, b"" | b"." | b"..");
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push(b'/');
    }
    // Only ASCII bytes were added or decoded, so the bytes stay valid UTF-8.
    String::from_utf8(out).map(Cow::Owned).map_err(|_| AmbiguousPath)
}

/// Whether the raw (not yet normalised) path has a shape some upstreams
/// decode into a different path (see the module's documentation).
pub fn is_suspicious(path: &str) -> bool {
    let b = path.as_bytes();
    if !b.iter().any(|c| matches!(c, b';' | b'%')) {
        return false;
    }
    let escape = |i: usize| match (b.get(i), b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
        (Some(b'%'), Some(h), Some(l)) => Some(h * 16 + l),
        _ => None,
    };
    for i in 0..b.len() {
        match escape(i) {
            // Lead bytes that only start overlong forms: C0, C1; E0 80-9F; F0 80-8F.
            Some(0xc0 | 0xc1) => return true,
            Some(0xe0) if escape(i + 3).is_some_and(|n| n < 0xa0) => return true,
            Some(0xf0) if escape(i + 3).is_some_and(|n| n < 0x90) => return true,
            // `%25` then an escape of `.`, `/`, `\` or NUL: decoded twice, a path separator or dot.
            Some(0x25)
                if escape(i + 2).is_none()
                    && (b.get(i + 3..i + 5)).is_some_and(|hx| {
                        let v = hex(&hx[0]).zip(hex(&hx[1])).map(|(h, l)| h * 16 + l);
                        matches!(v, Some(b'.' | b'/' | b'\\' | 0))
                    }) =>
            {
                return true
            }
            _ => {}
        }
    }
    // A dot segment carrying path parameters: `/..;x/`, `/.;/`.
    path.split('/').any(|seg| {
        seg.split_once(';').is_some_and(|(name, _)| {
            let name = name.replace("%2e", ".").replace("%2E", ".");
            name == "." || name == ".."
        })
    })
}

fn needs_work(b: &[u8]) -> bool {
    b.iter().any(|c| matches!(c, b'%' | b'\\')) || b.windows(2).any(|w| w[0] == b'/' && matches!(w[1], b'/' | b'.'))
}

fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, AmbiguousPath> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn normal_paths_borrow() {
        assert!(matches!(normalize("/api/v1/items?"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("//admin//x").unwrap(), "/admin/x");
        assert_eq!(n("/a/").unwrap(), "/a/");
        assert_eq!(n("/.well-known/x").unwrap(), "/.well-known/x");
        assert_eq!(n("/..").unwrap(), "/");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(n("/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/a%2Fb"), Err(AmbiguousPath));
        assert_eq!(n("/a%5cb"), Err(AmbiguousPath));
        assert_eq!(n("/a%00"), Err(AmbiguousPath));
        assert_eq!(n("/a%zz"), Err(AmbiguousPath));
        assert_eq!(n("/a%4"), Err(AmbiguousPath));
    }

    #[test]
    fn suspicious_shapes() {
        for p in [
            "/public/..;/admin",
            "/a/.;x/b",
            "/a/%2e%2e;/b",
            "/%c0%ae%c0%ae/admin",
            "/%C1%9C",
            "/%e0%80%ae",
            "/%f0%80%80%ae",
            "/a/%252e%252e/admin",
            "/a%252Fb",
            "/a%255cb",
        ] {
            assert!(is_suspicious(p), "{p}");
        }
        for p in
            ["/a;b/c", "/matrix;param=1", "/100%25", "/a%2541", "/caf%c3%a9", "/%e2%82%ac", "/plain/path", "/a%25zz"]
        {
            assert!(!is_suspicious(p), "{p}");
        }
    }

    #[test]
    fn refused_shapes() {
        assert_eq!(n("/a\\b"), Err(AmbiguousPath));
        assert_eq!(n("*"), Err(AmbiguousPath));
        assert_eq!(n(""), Err(AmbiguousPath));
    }
}
