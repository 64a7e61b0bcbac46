//! Listeners, their TLS certificates, and the process-wide server limits.

use super::file::*;
use super::{fail, units};
use crate::error::Error;
use serde_saphyr::Spanned;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Address to bind (port 0 picks a free port).
    pub bind: SocketAddr,
    /// TLS settings; plain TCP when absent.
    pub tls: Option<TlsConfig>,
    /// Connections accepted at once; further clients wait in the backlog.
    pub max_connections: usize,
    /// Keep client-supplied client-address headers (`X-Forwarded-*`,
    /// `Forwarded`, `X-Real-IP`; append to them) instead of replacing them.
    pub trust_forwarded: bool,
    /// Set an RFC 7239 `Forwarded` header too.
    pub set_forwarded: bool,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq)]
pub struct CertFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// TLS settings of a listener.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// Served when SNI names none of the `sni` certificates.
    pub default: CertFiles,
    /// More certificates, each chosen when SNI names one of its names (`*.x` wildcards allowed).
    pub sni: Vec<(Vec<String>, CertFiles)>,
}

/// Process-wide limits and timeouts (defaults from HARDENING.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Time a client has to send a whole request head; also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// Longest pause inside a request or response body.
    pub body_idle_timeout: Duration,
    /// Longest time a write to a client may make no progress.
    pub write_idle_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// Largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers (431 beyond).
    pub max_headers: usize,
    /// Longest request URI (414 beyond).
    pub max_uri_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// SETTINGS and PING frames a client may send per second on one HTTP/2
    /// connection; past it the connection gets GOAWAY (ENHANCE_YOUR_CALM).
    pub h2_max_control_frames_per_second: u32,
    /// Data-path worker threads (default: one per core).
    pub workers: usize,
    /// Largest plugin component accepted, from a file or an upload.
    pub max_plugin_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            write_idle_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            h2_max_concurrent_streams: 100,
            h2_max_control_frames_per_second: 100,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_plugin_size: 10 << 20,
        }
    }
}

pub(super) fn validate_server(f: FileServer) -> Result<ServerConfig, Error> {
    let d = ServerConfig::default();
    let size = |v: Option<Spanned<units::ByteSize>>, name: &str, min: u64, dflt: usize| match v {
        None => Ok(dflt),
        Some(s) if s.value.0 < min || s.value.0 > u32::MAX as u64 => {
            Err(fail(format!("server.{name}"), &s.referenced, format!("must be between {min} and {} bytes", u32::MAX)))
        }
        Some(s) => Ok(s.value.0 as usize),
    };
    let max_headers = match f.max_headers {
        None => d.max_headers,
        Some(s) if s.value == 0 || s.value > 10_000 => {
            return Err(fail("server.max_headers", &s.referenced, "must be between 1 and 10000"))
        }
        Some(s) => s.value,
    };
    let h2_max_control_frames_per_second = match f.h2_max_control_frames_per_second {
        None => d.h2_max_control_frames_per_second,
        Some(s) if s.value == 0 || s.value > 1_000_000 => {
            return Err(fail("server.h2_max_control_frames_per_second", &s.referenced, "must be between 1 and 1000000"))
        }
        Some(s) => s.value,
    };
    let workers = match f.workers {
        None => d.workers,
        Some(w) if w.value == 0 || w.value > 1024 => {
            return Err(fail("server.workers", &w.referenced, "must be between 1 and 1024"))
        }
        Some(w) => w.value,
    };
    Ok(ServerConfig {
        workers,
        header_read_timeout: f.header_read_timeout.map_or(d.header_read_timeout, |v| v.0),
        body_idle_timeout: f.body_idle_timeout.map_or(d.body_idle_timeout, |v| v.0),
        write_idle_timeout: f.write_idle_timeout.map_or(d.write_idle_timeout, |v| v.0),
        tls_handshake_timeout: f.tls_handshake_timeout.map_or(d.tls_handshake_timeout, |v| v.0),
        drain_timeout: f.drain_timeout.map_or(d.drain_timeout, |v| v.0),
        // hyper's read buffer cannot be smaller than 8 KiB.
        max_header_bytes: size(f.max_header_bytes, "max_header_bytes", 8192, d.max_header_bytes)?,
        max_headers,
        max_uri_bytes: size(f.max_uri_bytes, "max_uri_bytes", 16, d.max_uri_bytes)?,
        h2_max_concurrent_streams: f.h2_max_concurrent_streams.unwrap_or(d.h2_max_concurrent_streams).max(1),
        h2_max_control_frames_per_second,
        max_plugin_size: match f.max_plugin_size {
            Some(v) if !(1 << 20..=256 << 20).contains(&v.value.0) => {
                return Err(fail("server.max_plugin_size", &v.referenced, "must be between 1MiB and 256MiB"))
            }
            Some(v) => v.value.0 as usize,
            None => d.max_plugin_size,
        },
    })
}

/// A file the config names, relative to the config's folder; it must exist.
pub(super) fn existing_file(f: &Spanned<String>, base: &Path, field: String) -> Result<std::path::PathBuf, Error> {
    let path = base.join(&f.value);
    if !path.is_file() {
        return Err(fail(field, &f.referenced, format!("no such file {}", path.display())));
    }
    Ok(path)
}

/// A certificate and its key, both existing files (`{p}.cert`, `{p}.key`).
pub(super) fn cert_files(
    cert: &Spanned<String>,
    key: &Spanned<String>,
    base: &Path,
    p: &str,
) -> Result<CertFiles, Error> {
    Ok(CertFiles {
        cert: existing_file(cert, base, format!("{p}.cert"))?,
        key: existing_file(key, base, format!("{p}.key"))?,
    })
}

pub(super) fn validate_tls(t: FileTls, base: &Path, p: &str) -> Result<TlsConfig, Error> {
    let files = |cert: Spanned<String>, key: Spanned<String>, p: &str| cert_files(&cert, &key, base, p);
    let default = files(t.cert, t.key, p)?;
    let mut sni = Vec::new();
    for (i, c) in t.sni.into_iter().enumerate() {
        let sp = format!("{p}.sni[{i}]");
        if c.names.value.is_empty() {
            return Err(fail(format!("{sp}.names"), &c.names.referenced, "list at least one server name"));
        }
        let names = c.names.value.iter().map(|n| n.to_ascii_lowercase()).collect();
        sni.push((names, files(c.cert, c.key, &sp)?));
    }
    Ok(TlsConfig { default, sni })
}
