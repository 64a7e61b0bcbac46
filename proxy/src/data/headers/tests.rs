//! Unit tests of the header rules.

use super::*;
use http::Request;

fn parts(build: http::request::Builder) -> Parts {
    build.body(()).unwrap().into_parts().0
}

/// `check_request` with the default limits.
fn check(p: &Parts) -> Result<Checked<'_>, ErrorClass> {
    check_request(p, 8192, 64 * 1024)
}

/// What the request path does: `check_request`, then `to_upstream` with what it found.
fn upstream(p: &mut Parts, authority: Option<&str>, conn: &ClientConn) {
    let found = check(p).map(|c| (c.flags, c.host_header)).unwrap_or_default();
    to_upstream(&mut p.headers, found, authority, conn);
}

#[test]
fn host_rules() {
    let p = parts(Request::get("/").header("host", "Shop.Example.com:8080"));
    assert_eq!(check(&p).unwrap().host, "shop.example.com");
    let p = parts(Request::get("/"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest);
    let p = parts(Request::get("/").header("host", "a").header("host", "a"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest);
    let p = parts(Request::get("http://a.com/x").header("host", "b.com"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest);
    let p = parts(Request::get("http://a.com/x").header("host", "A.com"));
    assert_eq!(check(&p).unwrap().host, "a.com");
    let p = parts(Request::get("/").version(Version::HTTP_10));
    assert_eq!(check(&p).unwrap().host, "");
    let p = parts(Request::get("/").header("host", "[::1]:80"));
    assert_eq!(check(&p).unwrap().host, "[::1]");
    for bad in [
        "a.local:abc",
        "a.local/foo",
        "a.local evil",
        "a.local, b.local",
        "a.local:1:2",
        "a.local:",
        "a@b",
        "[::1",
        "[zz]:80",
        "a.local:70000",
        ":80",
    ] {
        let p = parts(Request::get("/").header("host", bad));
        assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest, "{bad}");
    }
    for good in ["a.local", "a.local:8080", "10.0.0.1:80", "[2001:db8::1]:443", "my_host.internal"] {
        let p = parts(Request::get("/").header("host", good));
        assert!(check(&p).is_ok(), "{good}");
    }
    let p = parts(Request::get("http://a.com:8080/x").header("host", "a.com"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest, "the URI's port differs from Host's");
    let p = parts(Request::get("http://a.com:80/x").header("host", "a.com"));
    assert!(check(&p).is_ok(), "80 is http's own port");
}

#[test]
fn limits_and_methods() {
    let p = parts(Request::connect("a.com:443").header("host", "a.com:443"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::MethodNotAllowed);
    let long = format!("/{}", "a".repeat(9000));
    let p = parts(Request::get(long.as_str()).header("host", "a"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::UriTooLong);
    let p = parts(Request::post("/").header("host", "a").header("transfer-encoding", "chunked, chunked"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest);
    let p = parts(Request::post("/").header("host", "a").header("transfer-encoding", "Chunked"));
    assert!(check(&p).is_ok());
    let twice = Request::post("/").header("host", "a").header("transfer-encoding", "chunked");
    let p = parts(twice.header("transfer-encoding", "chunked"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest, "two Transfer-Encoding lines");
    let both = Request::post("/").header("host", "a").header("content-length", "5");
    let p = parts(both.header("transfer-encoding", "chunked"));
    assert!(check(&p).unwrap().flags.close, "both framings: the connection closes after");
    let p = parts(Request::post("/").header("host", "a").header("content-length", "5"));
    assert!(!check(&p).unwrap().flags.close);
    let p = parts(Request::post("/").header("host", "a").header("te", "trailers"));
    assert!(check(&p).unwrap().flags.te_trailers);
    let p = parts(Request::post("/").header("host", "a").header("te", "gzip"));
    assert!(!check(&p).unwrap().flags.te_trailers);
    let p = parts(Request::post("/").header("host", "a").header("content-type", "application/grpc+proto"));
    let c = check(&p).unwrap();
    assert!(c.flags.grpc && c.flags.content_length.is_none() && !c.flags.rewrite_length);
    assert_eq!(c.host_header, Some(HeaderValue::from_static("a")), "the Host as it came");
    let p = parts(Request::post("/").header("host", "a").header("content-type", "text/plain"));
    assert!(!check(&p).unwrap().flags.grpc);
    for (length, rewrite) in [("0", false), ("10", false), ("010", true), ("00", true)] {
        let p = parts(Request::post("/").header("host", "a").header("content-length", length));
        let flags = check(&p).unwrap().flags;
        assert_eq!((flags.content_length, flags.rewrite_length), (length.parse().ok(), rewrite), "{length}");
    }
    let p = parts(Request::post("/").header("host", "a").header("transfer_encoding", "chunked"));
    assert_eq!(check(&p).unwrap_err(), ErrorClass::BadRequest, "a framing header in disguise");
    let p = parts(Request::post("/").header("host", "a").header("x_custom", "ok"));
    assert!(check(&p).is_ok(), "other underscores are fine");
    // The head as HTTP/1.1 spells it: "GET / HTTP/1.1\r\n" (16), "host: a\r\n" (9), "x-big: …\r\n".
    let head = |n: usize| parts(Request::get("/").header("host", "a").header("x-big", "b".repeat(n)));
    let max = 16 + 9 + 9 + 1000;
    assert!(check_request(&head(1000), 8192, max).is_ok(), "a head of exactly the limit");
    assert_eq!(check_request(&head(1001), 8192, max).unwrap_err(), ErrorClass::HeadersTooLarge);
    assert_eq!(ErrorClass::HeadersTooLarge.status(), 431);
}

#[test]
fn upstream_headers() {
    let mut p = parts(
        Request::get("/")
            .header("host", "a.com")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic x")
            .header("x-switchyard-pool", "canary")
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("x-keep", "yes"),
    );
    let conn = ClientConn {
        peer: std::net::IpAddr::from([10, 0, 0, 1]),
        peer_ip: HeaderValue::from_static("10.0.0.1"),
        tls: false,
        trust_forwarded: false,
        set_forwarded: false,
    };
    upstream(&mut p, None, &conn);
    let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-switchyard-pool",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(!names.contains(&gone), "{gone} in {names:?}");
    }
    assert_eq!(p.headers["x-forwarded-for"], "10.0.0.1");
    assert_eq!(p.headers["x-forwarded-proto"], "http");
    assert_eq!(p.headers["x-forwarded-host"], "a.com");
    assert_eq!(p.headers["x-keep"], "yes");

    let mut p = parts(
        Request::post("/")
            .header("host", "a.com")
            .header("connection", "host, content-length")
            .header("content-length", "010"),
    );
    upstream(&mut p, None, &conn);
    assert_eq!(
        (&p.headers["host"], &p.headers["content-length"]),
        (&HeaderValue::from_static("a.com"), &HeaderValue::from(10)),
        "Connection cannot drop them; the length is canonical"
    );

    let mut p = parts(Request::get("/").header("x-forwarded-for", "1.1.1.1").header("x-forwarded-for", "2.2.2.2"));
    let trusted = ClientConn { trust_forwarded: true, tls: true, set_forwarded: true, ..conn };
    p.headers.insert("forwarded", HeaderValue::from_static("for=1.1.1.1"));
    p.headers.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
    upstream(&mut p, Some("b.com"), &trusted);
    assert_eq!(
        p.headers["forwarded"], "for=1.1.1.1, for=10.0.0.1;proto=https;host=\"b.com\"",
        "appended, from a trusted hop"
    );
    assert_eq!(p.headers["x-real-ip"], "1.1.1.1", "kept from a trusted hop");
    assert_eq!(p.headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
    assert_eq!(p.headers["x-forwarded-proto"], "https");
    assert_eq!(p.headers["host"], "b.com");
}

#[test]
fn client_headers() {
    let response = |pairs: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    };
    let names = |h: &HeaderMap| h.keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>();
    let mut h = response(&[("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("x-a", "1")]);
    to_client(&mut h, false, false);
    assert_eq!(names(&h), ["x-a"]);
    let mut h = response(&[
        ("connection", "Close, X-Secret"),
        ("connection", "x-other"),
        ("x-secret", "1"),
        ("x-other", "1"),
        ("proxy-authenticate", "Basic"),
        ("x-a", "1"),
    ]);
    to_client(&mut h, false, false);
    assert_eq!(names(&h), ["x-a"], "listed, in any case and in any Connection header");
    let mut h = response(&[("content-type", "application/grpc"), ("connection", "keep-alive")]);
    assert!(to_client(&mut h, false, false).grpc, "a gRPC answer, noted in the same pass");
    assert_eq!(names(&h), ["content-type"]);
    let mut h = response(&[("content-type", "text/html")]);
    assert!(!to_client(&mut h, false, false).grpc);
    let handshake = [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", "k")];
    let mut h = response(&handshake);
    to_client(&mut h, true, false);
    assert_eq!(names(&h), ["sec-websocket-accept", "upgrade", "connection"], "an HTTP/1.1 upgrade keeps its own");
    let mut h = response(&handshake);
    to_client(&mut h, true, true);
    assert!(h.is_empty(), "an HTTP/2 WebSocket gets none of them: {h:?}");
}
