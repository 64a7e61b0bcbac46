//! Connecting to etcd: the client's options (timeouts, keep-alive, auth,
//! TLS) and the members worth connecting to.

use super::{etcd_error, WRITE_TIMEOUT};
use crate::config::FleetConfig;
use crate::error::Error;
use etcd_client::{Client, ConnectOptions};
use std::time::Duration;

/// How long a member has to say it is up and knows a leader.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A client balanced over the members that answer now and know a leader.
pub(super) async fn connect(config: &FleetConfig) -> Result<Client, Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(WRITE_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    if let Some((user, password)) = &config.auth {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        let mut t = etcd_client::TlsOptions::new();
        if let Some(ca) = &tls.ca {
            let pem = std::fs::read(ca).map_err(|e| Error::Tls(format!("state.etcd.ca_file: {e}")))?;
            t = t.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &tls.identity {
            let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::Tls(format!("state.etcd: {e}")));
            t = t.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(t);
    }
    // Only the members that answer now and know a leader. A dead
    // member in the balanced channel would fail the calls sent its way,
    // a hung one (which still accepts TCP connections: the kernel does)
    // would hold them until their timeout.
    let mut probes = tokio::task::JoinSet::new();
    for ep in config.endpoints.iter().cloned() {
        let options = options.clone();
        probes.spawn(async move {
            let status = tokio::time::timeout(PROBE_TIMEOUT, async {
                Client::connect([ep.as_str()], Some(options)).await?.status().await
            });
            match status.await {
                Ok(Ok(s)) if s.leader() != 0 => Ok(ep),
                Ok(Ok(_)) => Err(format!("{ep}: no leader")),
                Ok(Err(e)) => Err(format!("{ep}: {e}")),
                Err(_) => Err(format!("{ep}: no answer within {PROBE_TIMEOUT:?}")),
            }
        });
    }
    let (live, down): (Vec<_>, Vec<_>) = probes.join_all().await.into_iter().partition(Result::is_ok);
    if live.is_empty() {
        let why: Vec<String> = down.into_iter().filter_map(Result::err).collect();
        return Err(Error::Unavailable(format!("fleet: no etcd member answers with a leader ({})", why.join("; "))));
    }
    let live: Vec<String> = live.into_iter().flatten().collect();
    Client::connect(&live, Some(options)).await.map_err(etcd_error)
}
