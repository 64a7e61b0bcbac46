//! TLS with rustls (aws-lc-rs provider). For listeners: ALPN `h2` and
//! `http/1.1`, and a certificate chosen by SNI — an exact name first, then
//! the longest `*.` wildcard, then the listener's default certificate. To
//! upstreams: a client per pool (so sessions resume across its
//! connections), trusting a CA file or the system's roots, with ALPN for
//! the pool's protocol and an optional client certificate.

use crate::config::{CertFiles, Protocol, TlsConfig, UpstreamTls};
use crate::error::Error;
use rustls::crypto::hash::HashAlgorithm;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The cryptography of every TLS connection the proxy makes or accepts:
/// aws-lc-rs, rustls's default. Against ring, its X25519 halves the key
/// exchange's share of a full handshake (see the README's TLS figures).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// A listener's TLS: which rustls config serves a client, chosen from its
/// `ClientHello` (see [`ServerTls::config_for`]).
#[derive(Debug)]
pub struct ServerTls {
    /// Suites that hash with SHA-256 first (AES-128-GCM, then ChaCha20).
    ours: Arc<ServerConfig>,
    /// The client's order.
    theirs: Arc<ServerConfig>,
}

impl ServerTls {
    /// The config for a client: ours, which picks AES-128-GCM over the
    /// AES-256-GCM most clients list first, unless the client lists
    /// ChaCha20 first (a client without AES in hardware says so that way),
    /// which it then gets. AES-128 and ChaCha20 hash with SHA-256, which
    /// current x86 and ARM CPUs run in hardware; AES-256's SHA-384 runs in
    /// software on AMD CPUs (aws-lc and ring use their vector code for it on
    /// Intel only), and a TLS 1.3 handshake hashes enough to feel it. As
    /// BoringSSL's equal-preference groups do, without them in rustls.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        // The first the proxy knows: a list may begin with GREASE values.
        let known = |c: &&CipherSuite| self.ours.crypto_provider().cipher_suites.iter().any(|s| s.suite() == **c);
        let first = hello.cipher_suites().iter().find(known);
        match first {
            Some(
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ) => self.theirs.clone(),
            _ => self.ours.clone(),
        }
    }
}

/// Builds a listener's TLS, loading every certificate.
pub fn server_tls(cfg: &TlsConfig) -> Result<ServerTls, Error> {
    let provider = provider();
    let mut resolver =
        SniResolver { default: load(&cfg.default, &provider)?, exact: HashMap::new(), wildcard: Vec::new() };
    for (names, files) in &cfg.sni {
        let key = load(files, &provider)?;
        for name in names {
            match name.strip_prefix('*') {
                Some(suffix) => resolver.wildcard.push((suffix.to_owned(), key.clone())),
                None => {
                    resolver.exact.insert(name.clone(), key.clone());
                }
            }
        }
    }
    resolver.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    let resolver = Arc::new(resolver);
    let build = |provider: Arc<CryptoProvider>| -> Result<ServerConfig, Error> {
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(format!("tls: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    };
    let mut theirs = build(provider.clone())?;
    // Stateless session tickets (12 hours' life, keys rotated every 6): a
    // client resumes on any worker however many clients there are, where
    // rustls's default cache holds 256 sessions. Both configs take the same
    // tickets and cache; they are safe to share, as the two authenticate
    // alike (the same certificates, no client certificates).
    theirs.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| Error::Tls(format!("tls: {e}")))?;
    let mut sha256_first = (*provider).clone();
    // A stable sort: AES-128-GCM stays ahead of ChaCha20, as the provider lists them.
    sha256_first.cipher_suites.sort_by_key(|s| hash_of(s) != HashAlgorithm::SHA256);
    let mut ours = build(Arc::new(sha256_first))?;
    ours.ignore_client_order = true;
    ours.session_storage = theirs.session_storage.clone();
    ours.ticketer = theirs.ticketer.clone();
    Ok(ServerTls { ours: Arc::new(ours), theirs: Arc::new(theirs) })
}

fn hash_of(suite: &SupportedCipherSuite) -> HashAlgorithm {
    match suite {
        SupportedCipherSuite::Tls12(s) => s.common.hash_provider.algorithm(),
        SupportedCipherSuite::Tls13(s) => s.common.hash_provider.algorithm(),
    }
}

/// The TLS client of a pool's endpoints.
pub fn upstream_client(t: &UpstreamTls, protocol: Protocol) -> Result<Arc<rustls::ClientConfig>, Error> {
    let roots = match &t.ca {
        Some(ca) => Arc::new(roots_from(ca).map_err(|e| Error::Tls(format!("tls.ca: {e}")))?),
        None => system_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("tls: {e}")))?
        .with_root_certificates(roots);
    let mut config = match &t.client {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let (certs, key) = read_pair(files)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| Error::Tls(format!("tls.cert: {e}")))?
        }
    };
    config.alpn_protocols = match protocol {
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::Http1 | Protocol::H2c => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The system's trusted roots, read once.
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// The CA certificates in a PEM file, as roots.
pub fn roots_from(ca: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, read from their PEM files.
fn read_pair(files: &CertFiles) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("tls: cannot read certificates from {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("tls: no certificate in {}", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Tls(format!("tls: cannot read a private key from {}: {e}", files.key.display())))?;
    Ok((certs, key))
}

fn load(files: &CertFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, Error> {
    let (certs, key) = read_pair(files)?;
    let ck = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        Error::Tls(format!("tls: {} and {} do not form a usable pair: {e}", files.cert.display(), files.key.display()))
    })?;
    Ok(Arc::new(ck))
}

#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".suffix", key)`, longest first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        self.wildcard
            .iter()
            .find(|(sfx, _)| {
                name.len() > sfx.len() && name.ends_with(sfx.as_str()) && !name[..name.len() - sfx.len()].contains('.')
            })
            .map(|(_, k)| k.clone())
            .or_else(|| Some(self.default.clone()))
    }
}
