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
    // Read now, so a wrong path is a config error rather than a replica that never connects.
    let readable = |field: &str, p: &Path| {
        std::fs::metadata(p).map(drop).map_err(|err| fail(field, at, format!("cannot read {}: {err}", p.display())))
    };
    if let Some(ca) = &ca {
        readable("state.etcd.ca_file", ca)?;
    }
    if let Some((cert, key)) = &identity {
        readable("state.etcd.cert_file", cert)?;
        readable("state.etcd.key_file", key)?;
    }
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

#[cfg(test)]
mod tests {
    use crate::Config;

    fn load(state: &str) -> Result<Config, String> {
        let yaml = format!(
            "listeners: [{{ name: l, bind: \"127.0.0.1:0\" }}]\nservices:\n  - name: s\n    pools: {{ p: {{ endpoints: [\"127.0.0.1:1\"] }} }}\n{state}"
        );
        Config::from_yaml(&yaml, std::path::Path::new("/tmp")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_fleet_needs_endpoints_a_prefix_and_whole_credentials() {
        let c = load("state: { etcd: { endpoints: [\"http://127.0.0.1:2379\"] } }\n").unwrap();
        let f = c.fleet.unwrap();
        assert_eq!((f.prefix.as_str(), f.lease_ttl.as_secs()), ("/switchyard", 3));
        assert!(f.replica.len() > 9, "a default name: host and a hash of the state dir: {}", f.replica);
        assert_eq!(c.state_dir.as_deref(), Some(std::path::Path::new("/tmp/switchyard-state")));
        let again = load("state: { etcd: { endpoints: [\"http://127.0.0.1:2379\"] } }\n").unwrap();
        assert_eq!(again.fleet.unwrap().replica, f.replica, "the default name is stable");

        let err = |state: &str| load(state).unwrap_err();
        let e = err("state: { etcd: { endpoints: [] } }\n");
        assert!(e.contains("state.etcd.endpoints (line 5)"), "{e}");
        assert!(err("state: { etcd: { endpoints: [\"127.0.0.1:2379\"] } }\n").contains("write http://HOST:PORT"));
        assert!(err("state: { etcd: { endpoints: [\"http://a:1\"], prefix: nope } }\n").contains("state.etcd.prefix"));
        assert!(
            err("state: { etcd: { endpoints: [\"http://a:1\"], replica: \"a b\" } }\n").contains("state.etcd.replica")
        );
        assert!(
            err("state: { etcd: { endpoints: [\"http://a:1\"], cert_file: c.pem } }\n").contains("both `cert_file`")
        );
        assert!(err("state: { etcd: { endpoints: [\"http://a:1\"], user: u } }\n").contains("both `user`"));
        assert!(err("state: { etcd: { endpoints: [\"http://a:1\"], lease_ttl: 100ms } }\n").contains("at least 1s"));
        assert!(
            err("state: { etcd: { endpoint: [\"http://a:1\"] } }\n").contains("endpoint"),
            "unknown fields are refused"
        );
    }
}
