//! Upstreams over TLS (a test CA, SNI and the verified name, mTLS), HTTP/2
//! by ALPN, and h2c: real servers on loopback (hyper over tokio-rustls).

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_test_support::*;
use tokio::net::TcpListener;

/// A CA and a server certificate it signed for `names`, written to `dir`
/// as `ca.pem`, `server.pem`, `server.key`; and a client certificate the CA
/// signed, as `client.pem`, `client.key`.
fn pki(dir: &Path, names: &[&str]) -> rustls::RootCertStore {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "switchyard test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, file: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    leaf(names.iter().map(|n| n.to_string()).collect(), "server");
    leaf(vec!["client.test".into()], "client");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    roots
}

/// What a test upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    sni: Mutex<Vec<Option<String>>>,
}

/// An upstream answering `{version} {path}`: over TLS with `dir`'s server
/// certificate (ALPN `alpn`; a client certificate required when
/// `client_roots` is given), or over plain TCP (h1 or h2c) without `dir`.
async fn upstream(
    dir: Option<&Path>,
    alpn: &[&[u8]],
    client_roots: Option<rustls::RootCertStore>,
) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let acceptor = dir.map(|dir| {
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_roots {
            Some(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(certs, key).unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let text = format!("{:?} {}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(full(text)))
                });
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        let Ok(tls) = a.accept(tcp).await else { return };
                        s.sni.lock().unwrap().push(tls.get_ref().1.server_name().map(str::to_owned));
                        let _ = server.serve_connection(TokioIo::new(tls), svc).await;
                    }
                    None => {
                        let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A proxy with service `s`, pool `p` at `addr` with `pool_extra` (its
/// `protocol`, `tls`), the PKI files beside the config.
async fn proxy(pki_dir: &Path, addr: SocketAddr, pool_extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(pki_dir.join(f), dir.path().join(f)).unwrap();
    }
    let yaml = config(&format!("  - name: s\n    pools:\n      p: {{ endpoints: [\"{addr}\"]{pool_extra} }}\n"));
    Proxy::start_in(dir, &yaml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_is_verified_against_the_ca_with_the_name_sent_by_sni() {
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path(), &["backend.test"]);
    let (addr, seen) = upstream(Some(certs.path()), &[b"http/1.1"], None).await;
    let p = proxy(certs.path(), addr, ", tls: { ca: ca.pem, server_name: backend.test }").await;
    for _ in 0..3 {
        let (status, _, body) = get(p.addr, "/x", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "HTTP/1.1 /x"));
    }
    assert_eq!(seen.sni.lock().unwrap()[0].as_deref(), Some("backend.test"));
    let n = seen.connections.load(Ordering::SeqCst);
    assert!(n <= 2, "kept-alive TLS connections serve all three (one per worker at most): {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_name_or_an_unknown_ca_is_a_502_with_a_clear_log_line() {
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path(), &["backend.test"]);
    let (addr, _) = upstream(Some(certs.path()), &[b"http/1.1"], None).await;
    for (extra, says) in [
        (", tls: { ca: ca.pem, server_name: other.test }", "certificate not valid for name \"other.test\""),
        // No `ca`: the system's roots, which never signed the test CA.
        (", tls: { server_name: backend.test }", "UnknownIssuer"),
    ] {
        let p = proxy(certs.path(), addr, extra).await;
        let (status, headers, _) = get(p.addr, "/", &[]).await;
        assert_eq!(status, 502, "{extra}");
        assert_eq!(headers["x-switchyard-error"], "upstream-connect");
        assert!(
            until(Duration::from_secs(5), || async {
                p.logged("upstream TLS failed").iter().any(|l| l["error"].as_str().unwrap_or("").contains(says))
            })
            .await,
            "no log line saying {says}: {:?}",
            p.logged("upstream TLS failed")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_asks_for_a_client_certificate_gets_the_pools() {
    let certs = tempfile::tempdir().unwrap();
    let roots = pki(certs.path(), &["backend.test"]);
    let (addr, _) = upstream(Some(certs.path()), &[b"http/1.1"], Some(roots)).await;
    let without = proxy(certs.path(), addr, ", tls: { ca: ca.pem, server_name: backend.test }").await;
    assert_eq!(get(without.addr, "/", &[]).await.0, 502, "no client certificate, no answer");
    let with = proxy(
        certs.path(),
        addr,
        ", tls: { ca: ca.pem, server_name: backend.test, cert: client.pem, key: client.key }",
    )
    .await;
    let (status, _, body) = get(with.addr, "/m", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "HTTP/1.1 /m"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_multiplexes_requests_on_one_connection_per_worker() {
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path(), &["backend.test"]);
    let (addr, seen) = upstream(Some(certs.path()), &[b"h2"], None).await;
    let p = proxy(certs.path(), addr, ", protocol: h2, tls: { ca: ca.pem, server_name: backend.test }").await;
    let calls: Vec<_> =
        (0..40).map(|i| tokio::spawn(async move { get(p.addr, &format!("/c{i}"), &[]).await })).collect();
    for (i, c) in calls.into_iter().enumerate() {
        let (status, _, body) = c.await.unwrap();
        assert_eq!((status.as_u16(), body), (200, format!("HTTP/2.0 /c{i}")));
    }
    let n = seen.connections.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "40 requests from 40 clients on {n} upstream connection(s) (2 workers)");

    // An endpoint that does not agree to h2 by ALPN.
    let (h1_only, _) = upstream(Some(certs.path()), &[b"http/1.1"], None).await;
    let p = proxy(certs.path(), h1_only, ", protocol: h2, tls: { ca: ca.pem, server_name: backend.test }").await;
    assert_eq!(get(p.addr, "/", &[]).await.0, 502);
    // rustls refuses the handshake when the two share no protocol; a server
    // that ignores ALPN is caught after it.
    let said = |l: &serde_json::Value| {
        let e = l["error"].as_str().unwrap_or("");
        e.contains("NoApplicationProtocol") || e.contains("did not agree to HTTP/2")
    };
    assert!(
        until(Duration::from_secs(5), || async { p.logged("upstream TLS failed").iter().any(said) }).await,
        "{:?}",
        p.logged("upstream TLS failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstreams_get_http2_by_prior_knowledge() {
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path(), &["backend.test"]);
    let (addr, seen) = upstream(None, &[], None).await;
    let p = proxy(certs.path(), addr, ", protocol: h2c").await;
    for i in 0..5 {
        let (status, _, body) = get(p.addr, &format!("/h{i}?q=1"), &[]).await;
        assert_eq!((status.as_u16(), body), (200, format!("HTTP/2.0 /h{i}")));
    }
    assert!(seen.connections.load(Ordering::SeqCst) <= 2);
    // A POST body travels too.
    let mut c = Client::connect(p.addr).await;
    let req = Request::post("/up").header("host", "x").body(full("payload")).unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "HTTP/2.0 /up");
}

#[test]
fn check_refuses_upstream_tls_and_protocols_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), &["backend.test"]);
    let cases = [
        (", protocol: h2", "h2 is HTTP/2 over TLS"),
        (", protocol: h2c, tls: { ca: ca.pem }", "h2c is HTTP/2 without TLS"),
        (", tls: { ca: missing.pem }", "pools.p.tls.ca"),
        (", tls: { ca: ca.pem, cert: client.pem }", "needs both `cert` and `key`"),
        (", tls: { ca: ca.pem, server_name: \"not a name\" }", "tls.server_name"),
        (", tls: { ca: client.key }", "tls.ca"),
        (", protocol: h3", "protocol"),
    ];
    for (extra, says) in cases {
        let yaml = config(&format!("  - name: s\n    pools:\n      p: {{ endpoints: [\"127.0.0.1:9\"]{extra} }}\n"));
        let (ok, err) = check_yaml(dir.path(), &yaml, &[]);
        assert!(!ok && err.contains(says), "{extra}: {err}");
    }
}
