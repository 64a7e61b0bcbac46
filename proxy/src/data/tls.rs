//! TLS for listeners: rustls (ring provider), ALPN `h2` and `http/1.1`, and a
//! certificate chosen by SNI — an exact name first, then the longest `*.`
//! wildcard, then the listener's default certificate.

use crate::config::{CertFiles, TlsConfig};
use crate::error::Error;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Builds the rustls server config of a listener, loading every certificate.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(files: &CertFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, Error> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("tls: cannot read certificates from {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("tls: no certificate in {}", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Tls(format!("tls: cannot read a private key from {}: {e}", files.key.display())))?;
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
