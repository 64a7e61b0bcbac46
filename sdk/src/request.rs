//! The request a router sees, and its packed encoding (see `route` in the WIT).
//!
//! The host packs the request into one buffer — one copy into the plugin
//! instead of a string allocation per field — and [`Request`] reads it
//! without copying. [`RequestBuilder`] writes the same encoding, for the host
//! and for tests.

use std::ops::Range;

/// What a router sees of a request: method, path, sticky key, and the
/// headers and cookies its rule lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    buf: Vec<u8>,
    method: Range<usize>,
    path: Range<usize>,
    sticky_key: Option<Range<usize>>,
    headers: Range<usize>,
    cookies: Range<usize>,
}

impl Request {
    /// Starts building a request (for tests; the host builds them for plugins).
    pub fn builder(method: &str, path: &str) -> RequestBuilder {
        RequestBuilder::new(Vec::new(), method, path, None)
    }

    /// Decodes a packed request; the error says what is malformed.
    pub fn decode(buf: Vec<u8>) -> Result<Self, String> {
        let mut r = Reader { buf: &buf, at: 0 };
        let method = r.string()?;
        let path = r.string()?;
        let sticky_key = match r.u8()? {
            0 => None,
            _ => Some(r.string()?),
        };
        let headers = r.pairs()?;
        let cookies = r.pairs()?;
        if r.at != buf.len() {
            return Err("request: trailing bytes".into());
        }
        Ok(Request { method, path, sticky_key, headers, cookies, buf })
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.str(&self.method)
    }

    /// The normalised path, without the query.
    pub fn path(&self) -> &str {
        self.str(&self.path)
    }

    /// The service's sticky key (its header or cookie value), when present.
    pub fn sticky_key(&self) -> Option<&str> {
        self.sticky_key.as_ref().map(|r| self.str(r))
    }

    /// The value of a header the rule lists (`name` in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        match name.starts_with(['?', ':']) {
            true => self.pairs(&self.headers).find(|(n, _)| *n == name).map(|(_, v)| v),
            false => self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v),
        }
    }

    /// The first value of query parameter `name` (percent-decoded), when
    /// `needs` lists it ([`crate::Needs::query`]) and the request has it.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.pairs(&self.headers).find(|(n, _)| n.strip_prefix('?') == Some(name)).map(|(_, v)| v)
    }

    /// The client's address as the proxy saw it (`203.0.113.7`, `2001:db8::1`),
    /// when `needs` asks for it ([`crate::Needs::client_address`]).
    pub fn client_address(&self) -> Option<&str> {
        self.header(crate::CLIENT_ADDRESS)
    }

    /// The value of a cookie the rule lists.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The listed headers present on the request, `(lower-case name, value)`
    /// (not the query parameters or the client's address).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs(&self.headers).filter(|(n, _)| !n.starts_with(['?', ':']))
    }

    /// The listed cookies present on the request, `(name, value)`.
    pub fn cookies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs(&self.cookies)
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    fn str(&self, r: &Range<usize>) -> &str {
        // Validated as UTF-8 in `decode`.
        std::str::from_utf8(&self.buf[r.clone()]).unwrap_or_default()
    }

    fn pairs(&self, section: &Range<usize>) -> impl Iterator<Item = (&str, &str)> {
        let mut r = Reader { buf: &self.buf[..section.end], at: section.start };
        std::iter::from_fn(move || {
            let name = r.string().ok()?;
            let value = r.string().ok()?;
            Some((self.str(&name), self.str(&value)))
        })
    }
}

/// Writes the packed encoding: method, path and sticky key first, then
/// headers, then cookies.
#[derive(Debug)]
pub struct RequestBuilder {
    buf: Vec<u8>,
    headers_count_at: usize,
    cookies_count_at: Option<usize>,
}

impl RequestBuilder {
    /// Starts a request in `buf` (cleared first, so the host can reuse one
    /// buffer for every request).
    pub fn new(mut buf: Vec<u8>, method: &str, path: &str, sticky_key: Option<&str>) -> Self {
        buf.clear();
        put_str(&mut buf, method);
        put_str(&mut buf, path);
        match sticky_key {
            Some(k) => {
                buf.push(1);
                put_str(&mut buf, k);
            }
            None => buf.push(0),
        }
        let headers_count_at = buf.len();
        buf.extend_from_slice(&0u32.to_le_bytes());
        RequestBuilder { buf, headers_count_at, cookies_count_at: None }
    }

    /// Sets the sticky key (tests; the host passes it to [`RequestBuilder::new`]).
    pub fn sticky_key(self, key: &str) -> Self {
        let r = self.build();
        let mut b = RequestBuilder::new(Vec::new(), r.method(), r.path(), Some(key));
        for (n, v) in r.pairs(&r.headers) {
            b = b.header(n, v);
        }
        for (n, v) in r.cookies() {
            b = b.cookie(n, v);
        }
        b
    }

    /// Adds a header (name lower-cased). Headers must come before cookies.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.push_header(name, value);
        self
    }

    /// Adds a cookie.
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        self.push_cookie(name, value);
        self
    }

    /// Adds a query parameter (decoded). Like headers, before any cookie.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.push_header(&format!("?{name}"), value);
        self
    }

    /// Sets the client's address. Like headers, before any cookie.
    pub fn client_address(mut self, address: &str) -> Self {
        self.push_header(crate::CLIENT_ADDRESS, address);
        self
    }

    /// Adds a header in place (the host's path). Ignored after a cookie.
    pub fn push_header(&mut self, name: &str, value: &str) {
        if self.cookies_count_at.is_some() {
            return;
        }
        // Query parameter names keep their case.
        let lower = !name.starts_with('?') && name.bytes().any(|b| b.is_ascii_uppercase());
        if lower {
            put_str(&mut self.buf, &name.to_ascii_lowercase());
        } else {
            put_str(&mut self.buf, name);
        }
        put_str(&mut self.buf, value);
        bump(&mut self.buf, self.headers_count_at);
    }

    /// Adds a cookie in place (the host's path).
    pub fn push_cookie(&mut self, name: &str, value: &str) {
        let at = *self.cookies_count_at.get_or_insert_with(|| {
            let at = self.buf.len();
            self.buf.extend_from_slice(&0u32.to_le_bytes());
            at
        });
        put_str(&mut self.buf, name);
        put_str(&mut self.buf, value);
        bump(&mut self.buf, at);
    }

    /// The packed bytes.
    pub fn finish(mut self) -> Vec<u8> {
        if self.cookies_count_at.is_none() {
            self.buf.extend_from_slice(&0u32.to_le_bytes());
        }
        self.buf
    }

    /// The decoded request.
    pub fn build(self) -> Request {
        match Request::decode(self.finish()) {
            Ok(r) => r,
            // The builder only writes well-formed buffers.
            Err(e) => unreachable!("RequestBuilder wrote a bad buffer: {e}"),
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn bump(buf: &mut [u8], at: usize) {
    let mut n = [0; 4];
    n.copy_from_slice(&buf[at..at + 4]);
    buf[at..at + 4].copy_from_slice(&(u32::from_le_bytes(n) + 1).to_le_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.at).ok_or("request: truncated")?;
        self.at += 1;
        Ok(b)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let bytes = self.buf.get(self.at..self.at + 4).ok_or("request: truncated")?;
        self.at += 4;
        let mut n = [0; 4];
        n.copy_from_slice(bytes);
        Ok(u32::from_le_bytes(n) as usize)
    }

    fn string(&mut self) -> Result<Range<usize>, String> {
        let len = self.u32()?;
        let range = self.at..self.at.checked_add(len).ok_or("request: bad length")?;
        let bytes = self.buf.get(range.clone()).ok_or("request: truncated")?;
        std::str::from_utf8(bytes).map_err(|_| "request: a string is not UTF-8")?;
        self.at = range.end;
        Ok(range)
    }

    /// A count and that many `(name, value)` pairs: the section's byte range.
    fn pairs(&mut self) -> Result<Range<usize>, String> {
        let n = self.u32()?;
        let start = self.at;
        for _ in 0..n {
            self.string()?;
            self.string()?;
        }
        Ok(start..self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_the_client_address_travel_apart_from_headers() {
        let r = Request::builder("GET", "/")
            .header("X-Tenant", "acme")
            .query("utmSource", "mail")
            .client_address("203.0.113.7")
            .cookie("session", "s1")
            .build();
        assert_eq!(r.query("utmSource"), Some("mail"), "names keep their case");
        assert_eq!(r.query("utmsource"), None);
        assert_eq!(r.client_address(), Some("203.0.113.7"));
        assert_eq!(r.headers().collect::<Vec<_>>(), [("x-tenant", "acme")], "not among the headers");
        assert_eq!(r.header("x-tenant"), Some("acme"));
        assert_eq!(r.cookie("session"), Some("s1"));
        let needs = crate::Needs::default().query("utmSource").client_address().header("x-tenant");
        assert_eq!(needs.headers, ["?utmSource", ":client-address", "x-tenant"]);
    }

    #[test]
    fn round_trip() {
        let r = Request::builder("GET", "/cart")
            .header("X-User", "ann")
            .header("x-beta", "1")
            .cookie("session", "s1")
            .sticky_key("u1")
            .build();
        assert_eq!((r.method(), r.path(), r.sticky_key()), ("GET", "/cart", Some("u1")));
        assert_eq!(r.header("x-user"), Some("ann"));
        assert_eq!(r.header("X-BETA"), Some("1"));
        assert_eq!(r.cookie("session"), Some("s1"));
        assert_eq!(r.cookie("nope"), None);
        assert_eq!(r.headers().count(), 2);
        let empty = Request::builder("POST", "/").build();
        assert_eq!((empty.sticky_key(), empty.headers().count(), empty.cookies().count()), (None, 0, 0));
    }

    #[test]
    fn malformed_buffers_are_errors() {
        let good = Request::builder("GET", "/").header("a", "b").build().as_bytes().to_vec();
        for cut in 0..good.len() {
            assert!(Request::decode(good[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Request::decode(long).is_err());
        let mut bad = good;
        bad[4] = 0xff; // inside "GET"
        assert!(Request::decode(bad).is_err());
    }
}
