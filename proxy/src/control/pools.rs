//! Pools set at run time: release tooling points a pool at new endpoints
//! and says what they run (`PUT /v1/services/{svc}/pools/{pool}`), or gives
//! the pool back to the config file (`DELETE`). Validated, one event,
//! durable (in a fleet: for every replica), one snapshot swap; refused while
//! a rollout of the service runs, since the rollout is judging those pools.

use super::*;
use crate::config::{PoolConfig, PoolSet};

/// The most endpoints one pool may be given through the API.
const MAX_ENDPOINTS: usize = 256;

impl Control {
    /// Sets `pool` of `service` to `set` (`None`: back to the file's).
    pub async fn set_pool(
        &self,
        service: &str,
        pool: &str,
        set: Option<PoolSet>,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event(if set.is_some() { "pool" } else { "pool-reset" }, Some(service), actor, reason);
        ev.new = serde_json::json!(set);
        if let Some(err) = self.rollout_conflict(service, "pools") {
            return Err(self.refuse(ev, err));
        }
        self.change_pool(ev, service, pool, set, None)
    }

    /// A rolling update's move of `pool` of `service` to `set` (`None`: the
    /// file's endpoints), in one event (`message`) and one snapshot swap,
    /// with the rollout's row (`rollout`: its JSON, stored under its guard).
    pub(crate) async fn rollout_pool(
        &self,
        (service, pool): (&str, &str),
        set: Option<PoolSet>,
        (actor, message): (&str, String),
        rollout: (&str, &Guard),
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event(if set.is_some() { "pool" } else { "pool-reset" }, Some(service), actor, Some(message));
        ev.new = serde_json::json!(set);
        self.change_pool(ev, service, pool, set, Some(rollout))
    }

    /// The common body of a pool change (writes held).
    fn change_pool(
        &self,
        mut ev: Event,
        service: &str,
        pool: &str,
        set: Option<PoolSet>,
        rollout: Option<(&str, &Guard)>,
    ) -> Result<Event, ControlError> {
        let snap = self.shared.snapshot.load_full();
        let Some(svc) = snap.service(service) else {
            return Err(self.refuse(ev, no_service(service)));
        };
        let Some(current) = svc.config.pools.iter().find(|p| p.name == pool).cloned() else {
            let names = svc.pool_names().join(", ");
            let msg = format!("service `{service}` has no pool named `{pool}` (pools: {names})");
            return Err(self.refuse(ev, ControlError::NotFound(msg)));
        };
        if let Some(Err(msg)) = set.as_ref().map(check) {
            return Err(self.refuse(ev, ControlError::BadRequest(msg)));
        }
        let mut overrides = match &self.store {
            Some(s) => s.run_time().map_err(|e| ControlError::Internal(e.to_string()))?,
            None => snap.run_time(),
        };
        let sets = overrides.pools.entry(service.to_owned()).or_default();
        let had = match &set {
            Some(s) => sets.insert(pool.to_owned(), s.clone()),
            None => sets.remove(pool),
        };
        if set.is_none() && had.is_none() && rollout.is_none() {
            let msg = format!("pool `{pool}` of `{service}` already has the config file's endpoints");
            return Err(self.refuse(ev, ControlError::NotFound(msg)));
        }
        let sets = sets.clone();
        let config = self.config();
        let next = match self.build(&config, &overrides, &self.plugin_overrides()?) {
            Ok((_, next)) => next,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        let after = next.service(service).and_then(|s| s.config.pools.iter().find(|p| p.name == pool)).cloned();
        let Some(after) = after else {
            return Err(self.refuse(ev, no_service(service)));
        };
        ev.old = pool_json(&current);
        ev.new = pool_json(&after);
        ev.message = format!("pool {pool} of {service}: {} → {}", describe_pool(&current), describe_pool(&after));
        let mut changes = vec![Change::Pools(service, Some(&sets))];
        changes.extend(rollout.map(|(row, _)| Change::Rollout(service, row)));
        let ev = match rollout {
            Some((_, guard)) => self.commit_under(&changes, Some(ev.clone()), guard)?.unwrap_or(ev),
            None => self.commit(&changes, ev)?,
        };
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(service, actor = %ev.actor, "{}", ev.message);
        Ok(ev)
    }
}

/// Why `set` cannot be applied, if it cannot.
fn check(set: &PoolSet) -> Result<(), String> {
    match set.endpoints.len() {
        0 => return Err("endpoints: at least one endpoint is required".into()),
        n if n > MAX_ENDPOINTS => return Err(format!("endpoints: at most {MAX_ENDPOINTS}, not {n}")),
        _ => {}
    }
    for (i, e) in set.endpoints.iter().enumerate() {
        if set.endpoints[..i].contains(e) {
            return Err(format!("endpoints[{i}]: duplicate endpoint {e}"));
        }
    }
    set.release.check().map_err(|(field, m)| format!("{field}: {m}"))
}

fn pool_json(p: &PoolConfig) -> serde_json::Value {
    match p.new_endpoints.is_empty() {
        true => serde_json::json!({ "endpoints": p.endpoints, "release": p.release }),
        false => serde_json::json!({ "endpoints": p.endpoints, "release": p.release, "new": p.new_endpoints }),
    }
}

/// `127.0.0.1:9001, 127.0.0.1:9002 (v1.2.3)`.
fn describe_pool(p: &PoolConfig) -> String {
    let eps = p.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    match &p.release.version {
        Some(v) => format!("{eps} ({v})"),
        None => eps,
    }
}
