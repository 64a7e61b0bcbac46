//! The server's side of a full TLS handshake, as a listener runs it: the
//! ClientHello read by rustls's `Acceptor`, the config chosen by
//! `ServerTls::config_for`, the handshake to the client's Finished. Beside
//! it, the same certificate on ring with the client's order, as listeners
//! had it before. The client (untimed) orders its suites as OpenSSL does
//! (AES-256-GCM, ChaCha20, AES-128-GCM) and offers X25519; the certificate
//! is ECDSA P-256.
//!
//! Run: `cargo bench -p switchyard --bench handshake`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::Acceptor;
use rustls::{CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::config::{CertFiles, TlsConfig};
use switchyard::data::tls::{server_tls, ServerTls};

/// Accepts any certificate: the client's checks are not what is measured.
#[derive(Debug)]
struct AnyCert(Vec<SignatureScheme>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

fn client() -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let order = [CipherSuite::TLS13_AES_256_GCM_SHA384, CipherSuite::TLS13_CHACHA20_POLY1305_SHA256];
    provider.cipher_suites.sort_by_key(|s| order.iter().position(|o| *o == s.suite()).unwrap_or(order.len()));
    let schemes = provider.signature_verification_algorithms.supported_schemes();
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(schemes)))
        .with_no_client_auth();
    Arc::new(config)
}

/// How the server side chooses its config from the ClientHello.
enum Server {
    Switchyard(ServerTls),
    Fixed(Arc<ServerConfig>),
}

/// One full handshake; returns the time spent on the server's side.
fn handshake(client: &Arc<ClientConfig>, server: &Server) -> Duration {
    let mut c = ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let start = Instant::now();
    let mut acceptor = Acceptor::default();
    acceptor.read_tls(&mut &hello[..]).unwrap();
    let accepted = acceptor.accept().unwrap().unwrap();
    let config = match server {
        Server::Switchyard(tls) => tls.config_for(&accepted.client_hello()),
        Server::Fixed(config) => config.clone(),
    };
    let mut s = accepted.into_connection(config).unwrap();
    let mut flight = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut flight).unwrap();
    }
    let mut spent = start.elapsed();
    c.read_tls(&mut &flight[..]).unwrap();
    c.process_new_packets().unwrap();
    let mut finished = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut finished).unwrap();
    }
    let start = Instant::now();
    let mut rd = &finished[..];
    while !rd.is_empty() {
        s.read_tls(&mut rd).unwrap();
    }
    s.process_new_packets().unwrap();
    // The session tickets it sends are part of its handshake.
    let mut tickets = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut tickets).unwrap();
    }
    spent += start.elapsed();
    assert!(!s.is_handshaking());
    spent
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let files = CertFiles { cert: cert.clone(), key: key.clone() };
    let ours = Server::Switchyard(server_tls(&TlsConfig { default: files, sni: Vec::new() }).unwrap());
    let ring = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap())
        .unwrap();
    let ring = Server::Fixed(Arc::new(ring));
    let client = client();
    let mut g = c.benchmark_group("tls_server_handshake");
    for (name, server) in [("switchyard", &ours), ("ring_client_order", &ring)] {
        g.bench_function(name, |b| b.iter_custom(|n| (0..n).map(|_| handshake(&client, server)).sum()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
