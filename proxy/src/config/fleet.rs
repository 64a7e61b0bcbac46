//! The `state` section: where run-time state lives. A local directory (the
//! embedded store) by default; with `etcd`, the replica joins a fleet whose
//! one source of truth is etcd, and the directory keeps the last state it
//! applied (so a restart without etcd still serves it).

use super::fail;
use super::file::{FileEtcd, FileState};
use crate::error::Error;
use serde_saphyr::Spanned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a replica reaches its fleet's etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// etcd endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix the fleet owns, e.g. `/switchyard/prod` (no trailing `/`).
    pub prefix: String,
    /// This replica's name: unique in the fleet and stable across restarts.
    pub replica: String,
    /// The lease TTL of leadership and of this replica's presence.
    pub lease_ttl: Duration,
    /// TLS to etcd: CA, and a client certificate and key.
    pub tls: Option<EtcdTls>,
    /// User name and password for etcd's authentication.
    pub auth: Option<(String, String)>,
}

/// TLS files for etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdTls {
    /// CA certificates that sign etcd's server certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The state directory and, in a fleet, how to reach etcd.
pub(super) fn validate_state(
    state: Option<FileState>,
    admin: bool,
    base: &Path,
) -> Result<(Option<PathBuf>, Option<FleetConfig>), Error> {
    let Some(st) = state else {
        return Ok((admin.then(|| base.join("switchyard-state")), None));
    };
    let dir = base.join(st.dir.as_deref().unwrap_or("switchyard-state"));
    let fleet = match st.etcd {
        None => None,
        Some(e) => Some(validate_etcd(e, &dir, base)?),
    };
    Ok((Some(dir), fleet))
}

fn validate_etcd(e: Spanned<FileEtcd>, dir: &Path, base: &Path) -> Result<FleetConfig, Error> {
    let at = &e.referenced;
    let e = e.value;
    if e.endpoints.is_empty() {
        return Err(fail("state.etcd.endpoints", at, "at least one endpoint is required"));
    }
    for ep in &e.endpoints {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(fail(
                "state.etcd.endpoints",
                at,
                format!("`{ep}`: write http://HOST:PORT or https://HOST:PORT"),
            ));
        }
    }
    let prefix = e.prefix.unwrap_or_else(|| "/switchyard".into()).trim_end_matches('/').to_owned();
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(fail("state.etcd.prefix", at, "must start with `/` and name something, e.g. `/switchyard/prod`"));
    }
    let replica = match e.replica {
        Some(r) if valid_replica(&r) => r,
        Some(r) => {
            return Err(fail("state.etcd.replica", at, format!("`{r}`: use 1-64 letters, digits, `-`, `_` or `.`")))
        }
        None => default_replica(dir),
    };
    let lease_ttl = e.lease_ttl.map_or(Duration::from_secs(3), |d| d.0);
    if lease_ttl < Duration::from_secs(1) {
        return Err(fail("state.etcd.lease_ttl", at, "must be at least 1s (etcd's lease granularity)"));
    }
    let file = |f: Option<String>| f.map(|f| base.join(f));
    let identity = match (file(e.cert_file), file(e.key_file)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(fail("state.etcd", at, "give both `cert_file` and `key_file`, or neither")),
    };
    let ca = file(e.ca_file);
    let tls = (ca.is_some() || identity.is_some()).then_some(EtcdTls { ca, identity });
    let auth = match (e.user, file(e.password_file)) {
        (Some(u), Some(p)) => {
            let pw = std::fs::read_to_string(&p)
                .map_err(|err| fail("state.etcd.password_file", at, format!("cannot read {}: {err}", p.display())))?;
            Some((u, pw.trim().to_owned()))
        }
        (None, None) => None,
        _ => return Err(fail("state.etcd", at, "give both `user` and `password_file`, or neither")),
    };
    Ok(FleetConfig { endpoints: e.endpoints, prefix, replica, lease_ttl, tls, auth })
}

fn valid_replica(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The host name and a hash of the state directory: unique per replica on
/// a machine, and the same after a restart.
fn default_replica(dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    let absolute = std::fs::canonicalize(dir.parent().unwrap_or(dir)).unwrap_or_else(|_| dir.to_path_buf());
    let mut hash: u32 = 0x811c_9dc5;
    for b in absolute.join(dir.file_name().unwrap_or_default()).to_string_lossy().bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("{host}-{hash:08x}")
}
