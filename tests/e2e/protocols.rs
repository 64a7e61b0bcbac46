//! HTTP/2 (prior knowledge and ALPN), TLS with SNI, WebSocket upgrades.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use switchyard_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_to_http1() {
    let up = Upstream::text("over h1").await;
    let proxy = Proxy::start(&config(&service("s", "    match: { host: h2.test }\n", &[("p", &[up.addr])], ""))).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("http://h2.test/x").body(full("")).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "over h1");
    }
    let seen = up.last();
    assert_eq!(seen.headers["host"], "h2.test", "h2 :authority becomes the upstream Host");
    assert_eq!(seen.uri, "/x");
}

/// A plaintext client's protocol is told from its first bytes, also when
/// they arrive in pieces: the HTTP/2 preface cut after "PRI ", and an
/// HTTP/1.1 request whose first segment is the "P" of POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_first_segment_is_still_told_apart() {
    let up = Upstream::text("over h1").await;
    let proxy = Proxy::start(&config(&service("s", "    match: { host: h2.test }\n", &[("p", &[up.addr])], ""))).await;

    let mut h2 = TcpStream::connect(proxy.addr).await.unwrap();
    h2.set_nodelay(true).unwrap();
    h2.write_all(b"PRI ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await; // delay: the rest of the preface comes in a later segment
    h2.write_all(b"* HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), h2.read_exact(&mut frame)).await.unwrap().unwrap();
    assert_eq!(frame[3], 0x4, "the server's first frame is its SETTINGS: {frame:?}");

    let mut h1 = TcpStream::connect(proxy.addr).await.unwrap();
    h1.set_nodelay(true).unwrap();
    h1.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await; // delay: the rest of the request line comes later
    h1.write_all(b"OST /x HTTP/1.1\r\nHost: h2.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), h1.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("over h1"), "{answer}");
}

struct Certs {
    dir: tempfile::TempDir,
    main: CertificateDer<'static>,
    api: CertificateDer<'static>,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let mk = |names: &[&str], file: &str| {
        let ck = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        std::fs::write(dir.path().join(format!("{file}.pem")), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{file}.key")), ck.signing_key.serialize_pem()).unwrap();
        ck.cert.der().clone()
    };
    let main = mk(&["localhost", "shop.test"], "main");
    let api = mk(&["api.test"], "api");
    Certs { dir, main, api }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    c: &Certs,
    name: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_connect_offering(addr, c, name, alpn, None).await
}

/// A proxy with one TLS listener (the `main` certificate) in front of `up`.
async fn tls_proxy(c: &Certs, up: &Upstream) -> Proxy {
    let yaml = format!(
        "listeners:\n  - name: tls\n    bind: \"127.0.0.1:0\"\n    tls: {{ cert: main.pem, key: main.key }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let dir = tempfile::tempdir().unwrap();
    for f in ["main.pem", "main.key"] {
        std::fs::copy(c.dir.path().join(f), dir.path().join(f)).unwrap();
    }
    Proxy::start_in(dir, &yaml).await
}

/// As [`tls_connect`], offering only `suites`, in that order, when given.
async fn tls_connect_offering(
    addr: std::net::SocketAddr,
    c: &Certs,
    name: &str,
    alpn: &[u8],
    suites: Option<&[rustls::CipherSuite]>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_connect_with(addr, Arc::new(tls_client(c, alpn, suites)), name).await
}

/// A client trusting the test certificates, with `alpn`, offering only
/// `suites` when given.
fn tls_client(c: &Certs, alpn: &[u8], suites: Option<&[rustls::CipherSuite]>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.main.clone()).unwrap();
    roots.add(c.api.clone()).unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(suites) = suites {
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites = suites.iter().map(|want| *all.iter().find(|s| s.suite() == *want).unwrap()).collect();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

async fn tls_connect_with(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg).connect(ServerName::try_from(name.to_owned()).unwrap(), tcp).await.unwrap()
}

/// A returning client resumes its TLS session however many other clients
/// came in between: 300 full handshakes (600 sessions issued) would have
/// pushed its session out of rustls's default cache of 256; a session
/// ticket carries it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_after_many_others() {
    let up = Upstream::text("ok").await;
    let c = certs();
    let proxy = tls_proxy(&c, &up).await;
    let returning = Arc::new(tls_client(&c, b"http/1.1", None));
    let mut others = tls_client(&c, b"http/1.1", None);
    others.resumption = rustls::client::Resumption::disabled();
    let others = Arc::new(others);
    let first = tls_connect_with(proxy.addr, returning.clone(), "shop.test").await;
    assert_eq!(first.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Full));
    // A TLS 1.3 server sends its tickets after the handshake: read them.
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(first)).await.unwrap();
    tokio::spawn(conn);
    let resp = h1.send_request(Request::get("/").header("host", "shop.test").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    for _ in 0..300 {
        let mut tls = tls_connect_with(proxy.addr, others.clone(), "shop.test").await;
        // Taking the tickets (the server's last handshake flight) before closing.
        tls.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
    }
    let again = tls_connect_with(proxy.addr, returning, "shop.test").await;
    assert_eq!(again.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_and_sni() {
    let up = Upstream::start(|req| async move {
        let proto = req.headers().get("x-forwarded-proto").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        Response::new(full(proto))
    })
    .await;
    let c = certs();
    let yaml = format!(
        "listeners:\n  - name: tls\n    bind: \"127.0.0.1:0\"\n    tls:\n      cert: main.pem\n      key: main.key\n      \
         sni:\n        - {{ names: [api.test], cert: api.pem, key: api.key }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let dir = tempfile::tempdir().unwrap();
    for f in ["main.pem", "main.key", "api.pem", "api.key"] {
        std::fs::copy(c.dir.path().join(f), dir.path().join(f)).unwrap();
    }
    let proxy = Proxy::start_in(dir, &yaml).await;

    // HTTP/2 by ALPN.
    let tls = tls_connect(proxy.addr, &c, "shop.test", b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], c.main);
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = h2.send_request(Request::get("https://shop.test/").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "https");

    // HTTP/1.1 by ALPN, and the SNI certificate for api.test.
    let tls = tls_connect(proxy.addr, &c, "api.test", b"http/1.1").await;
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], c.api, "SNI picks the api.test certificate");
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = h1.send_request(Request::get("/").header("host", "api.test").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "https");
}

/// The listener picks AES-128-GCM, whose SHA-256 hashing runs in hardware,
/// over the AES-256-GCM (SHA-384) most clients list first; a client that
/// lists ChaCha20 first (one without AES in hardware) gets ChaCha20; a
/// client offering only AES-256-GCM gets it. TLS 1.2 chooses the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_prefers_sha256_suites_unless_the_client_puts_chacha20_first() {
    use rustls::CipherSuite::*;
    let up = Upstream::text("ok").await;
    let c = certs();
    let proxy = tls_proxy(&c, &up).await;
    let cases: [(&[rustls::CipherSuite], rustls::CipherSuite); 6] = [
        (
            &[TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256],
            TLS13_AES_128_GCM_SHA256,
        ),
        (
            &[TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256],
            TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (&[TLS13_AES_256_GCM_SHA384], TLS13_AES_256_GCM_SHA384),
        (&[TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256], TLS13_CHACHA20_POLY1305_SHA256),
        (
            &[TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &[TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (offered, chosen) in cases {
        let tls = tls_connect_offering(proxy.addr, &c, "shop.test", b"http/1.1", Some(offered)).await;
        let got = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(got, chosen, "offered {offered:?}");
        // The connection serves requests whichever config it got.
        let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let resp =
            h1.send_request(Request::get("/").header("host", "shop.test").body(full("")).unwrap()).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok", "offered {offered:?}");
    }
}

/// Browsers begin their list of suites with a GREASE value (RFC 8701): the
/// choice goes by the first suite the proxy knows. A ClientHello written
/// byte by byte, as Chrome orders it on a device without AES in hardware
/// (ChaCha20 first) and with it (AES first); the ServerHello tells the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grease_value_first_does_not_hide_the_clients_choice() {
    const GREASE: u16 = 0x0a0a;
    const AES_128: u16 = 0x1301;
    const AES_256: u16 = 0x1302;
    const CHACHA20: u16 = 0x1303;
    let up = Upstream::text("ok").await;
    let c = certs();
    let proxy = tls_proxy(&c, &up).await;
    for (offered, chosen) in
        [([GREASE, CHACHA20, AES_128, AES_256], CHACHA20), ([GREASE, AES_128, AES_256, CHACHA20], AES_128)]
    {
        assert_eq!(server_hello_suite(proxy.addr, &offered).await, chosen, "offered {offered:04x?}");
    }
}

/// Sends a TLS 1.3 ClientHello offering `suites` (X25519, ECDSA P-256) and
/// returns the suite of the ServerHello.
async fn server_hello_suite(addr: std::net::SocketAddr, suites: &[u16]) -> u16 {
    let be = |n: usize| (n as u16).to_be_bytes();
    let extension = |kind: u16, body: &[u8]| [&kind.to_be_bytes()[..], &be(body.len()), body].concat();
    let mut key_share = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 9];
    key_share.resize(key_share.len() + 31, 0);
    let extensions = [
        extension(0x002b, &[0x02, 0x03, 0x04]),       // supported_versions: TLS 1.3
        extension(0x000a, &[0x00, 0x02, 0x00, 0x1d]), // supported_groups: x25519
        extension(0x000d, &[0x00, 0x02, 0x04, 0x03]), // signature_algorithms: ecdsa_secp256r1_sha256
        extension(0x0033, &key_share),                // key_share: x25519, the base point
    ]
    .concat();
    let suites: Vec<u8> = suites.iter().flat_map(|s| s.to_be_bytes()).collect();
    let body =
        [&[0x03, 0x03][..], &[7; 32], &[0], &be(suites.len()), &suites, &[1, 0], &be(extensions.len()), &extensions]
            .concat();
    let handshake = [&[1, 0][..], &be(body.len()), &body].concat();
    let record = [&[0x16, 0x03, 0x01][..], &be(handshake.len()), &handshake].concat();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    // Record header (5), handshake header (4), version (2), random (32), an
    // empty session id echoed (1), then the suite.
    let mut head = [0u8; 46];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!((head[0], head[5]), (0x16, 2), "a ServerHello: {head:02x?}");
    u16::from_be_bytes([head[44], head[45]])
}

/// A TLS client that finished its handshake just before a drain began, and
/// sends its first request only then, is served (with `Connection: close`),
/// not closed unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_made_before_a_drain_is_served_its_first_request() {
    let up = Upstream::text("served").await;
    let c = certs();
    let mut proxy = tls_proxy(&c, &up).await;
    let tls = tls_connect(proxy.addr, &c, "shop.test", b"http/1.1").await;
    tokio::time::sleep(Duration::from_millis(200)).await; // delay: the proxy finishes its side of the handshake
    proxy.signal("TERM");
    assert!(until(Duration::from_secs(5), || async { !proxy.logged("shutting down: draining").is_empty() }).await);
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = h1.send_request(Request::get("/").header("host", "shop.test").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["connection"], "close", "the drain still closes the connection after it");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "served");
    let exit = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait()).await.unwrap().unwrap();
    assert!(exit.success());
}

/// A WebSocket upgrade request, as a browser sends it.
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A WebSocket upstream (HTTP/1.1) that echoes every byte once upgraded.
async fn ws_echo() -> Upstream {
    Upstream::start(|mut req| async move {
        if req.headers().get("upgrade").is_none() {
            return Response::new(full("no upgrade"));
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                io.write_all(&buf[..n]).await.unwrap();
            }
        });
        Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(full(""))
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_both_ways() {
    let up = ws_echo().await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(WS_UPGRADE).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("sec-websocket-accept"), "{head}");
    for msg in [&b"ping"[..], b"hello over the tunnel"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, msg);
    }
    let seen = up.last();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    let up = ws_echo().await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // One round trip, so the server's SETTINGS have arrived.
    let (first, _) = client.send_request(Request::get("http://ws.test/").body(()).unwrap(), true).unwrap();
    first.await.unwrap();
    assert!(client.is_extended_connect_protocol_enabled(), "the proxy offers RFC 8441");
    let mut req = Request::builder()
        .method("CONNECT")
        .uri("http://ws.test/chat")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut().insert(h2::ext::Protocol::from("websocket"));
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "an HTTP/2 client's WebSocket is answered 200, not 101");
    assert!(resp.headers().get("upgrade").is_none() && resp.headers().get("sec-websocket-accept").is_none());
    let mut recv = resp.into_body();
    for msg in [&b"ping over h2"[..], b"and again"] {
        send.send_data(bytes::Bytes::copy_from_slice(msg), false).unwrap();
        let mut back = Vec::new();
        while back.len() < msg.len() {
            let chunk = tokio::time::timeout(Duration::from_secs(3), recv.data()).await.unwrap().unwrap().unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back, msg);
    }
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", "/chat"), "an HTTP/1.1 upgrade upstream");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["sec-websocket-key"].len(), 24, "a fresh key, since an HTTP/2 client sends none");

    // A CONNECT that is not a WebSocket is still refused.
    let (resp, _) =
        client.send_request(Request::builder().method("CONNECT").uri("ws.test:443").body(()).unwrap(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_limits_and_rapid_reset() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(200)).await; // slow upstream
        Response::new(full("ok"))
    })
    .await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[slow.addr])], ""))).await;

    // The proxy advertises 100 concurrent streams per connection.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let (resp, _) = client.send_request(Request::get("http://x/").body(()).unwrap(), true).unwrap();
    let resp = tokio::select! {
        r = resp => r.unwrap(),
        _ = &mut conn => panic!("connection ended"),
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(conn.max_concurrent_send_streams(), 100);

    // Rapid reset: open and cancel streams as fast as possible on one connection.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut client = client;
    let mut sent = 0;
    for _ in 0..20_000 {
        let Ok(c) = client.clone().ready().await else { break };
        client = c;
        match client.send_request(Request::get("http://x/").body(()).unwrap(), false) {
            Ok((resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(resp);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(sent > 0);
    // Work for reset streams is cancelled: far fewer upstream requests than streams.
    assert!(slow.hits() < sent / 2, "{} upstream requests for {sent} reset streams", slow.hits());
    // Other clients are unaffected, and memory stayed flat.
    let (status, _, body) = get(proxy.addr, "/", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    assert!(proxy.peak_rss() < 64 << 20, "peak RSS {} after the flood", proxy.peak_rss());
    eprintln!("rapid reset: {sent} streams opened and reset; {} reached the upstream", slow.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_upstream_declines_starts_no_tunnel() {
    let up = Upstream::text("plain answer").await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(WS_UPGRADE).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains("plain answer"), "{head}");
    assert!(!head.contains("upgrade"), "{head}");
    // The connection is still HTTP: a second request on it works.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(up.hits(), 2);
}

/// One HTTP/2 frame, as bytes on the wire.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads frames until the connection closes; returns the GOAWAY's error code, if one came.
async fn goaway_code(s: &mut TcpStream) -> Option<u32> {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut bytes)).await;
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes[at + 3] == 0x7 && at + 9 + len <= bytes.len() {
            let p = &bytes[at + 9..at + 9 + len];
            return Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_get_goaway_enhance_your_calm() {
    let up = Upstream::text("ok").await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    for (name, flood) in [("PING", h2_frame(0x6, 0, 0, &[7; 8])), ("SETTINGS", h2_frame(0x4, 0, 0, &[]))] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(h2_frame(0x4, 0, 0, &[]));
        bytes.extend(flood.repeat(1000));
        // The proxy may close before all of it is written; that is the point.
        let _ = s.write_all(&bytes).await;
        assert_eq!(goaway_code(&mut s).await, Some(0xb), "{name} flood: GOAWAY with ENHANCE_YOUR_CALM");
    }
    // A client that pings now and then keeps its connection, and others are unaffected.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[]));
    bytes.extend(h2_frame(0x6, 0, 0, &[1; 8]).repeat(20));
    s.write_all(&bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while got.windows(2).filter(|w| w == &[0x6, 0x1]).count() < 20 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "a client within the cap was disconnected");
        got.extend_from_slice(&buf[..n]);
    }
    let (status, _, body) = get(proxy.addr, "/", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
}
