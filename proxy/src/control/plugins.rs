//! Plugins through the control path: uploads and their default configuration,
//! each tried and bound into a new snapshot before it applies.

use super::*;

impl Control {
    /// Loads (or replaces) plugin `name` from component bytes. The new
    /// version is compiled and tried, every rule using it is bound again
    /// (instantiated, `init`, a trial `route`) into a new snapshot, and only
    /// then is it stored, recorded and swapped in. Refused: the version in
    /// force keeps serving.
    pub async fn load_plugin(
        &self,
        name: &str,
        bytes: &[u8],
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("plugin-load", None, actor, reason);
        let sha = crate::plugin::sha256(bytes);
        ev.new = serde_json::json!({ "name": name, "sha256": sha, "bytes": bytes.len() });
        if !crate::config::valid_plugin_name(name) {
            let msg = format!("`{name}`: a plugin name is 1 to 64 letters, digits, `-` or `_`");
            return Err(self.refuse(ev, ControlError::BadRequest(msg)));
        }
        // A new version keeps the configuration in force (the file's, or the API's).
        let old = self.shared.plugins.get(name);
        let default_config = match &old {
            Some(o) => o.config.clone(),
            None => self.config().plugins.iter().find(|p| p.name == name).map(|p| p.config.clone()).unwrap_or_default(),
        };
        let options = crate::plugin::LoadOptions::of(&self.config());
        let plugin = match crate::plugin::Plugin::load(name, bytes, ("admin API", &options), default_config) {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("plugin `{name}`: {e}")))),
        };
        ev.old = old.as_ref().map_or(serde_json::Value::Null, |o| serde_json::json!({ "sha256": o.sha256 }));
        ev.new["kind"] = plugin.kind.as_str().into();
        ev.message = match &old {
            Some(o) => {
                format!("plugin {name} replaced: {} → {} ({})", short(&o.sha256), short(&sha), plugin.kind.as_str())
            }
            None => format!("plugin {name} loaded: {} ({})", short(&sha), plugin.kind.as_str()),
        };
        self.put_plugin(ev, plugin, Change::Plugin(name, Some(bytes)), actor)
    }

    /// Sets plugin `name`'s default configuration (what `init` gets where a
    /// rule or policy gives none). It is tried, every rule using the default
    /// is bound again into a new snapshot, and only then is it stored,
    /// recorded and swapped in. Durable; overrides the file's `config`.
    pub async fn set_plugin_config(
        &self,
        name: &str,
        value: serde_json::Value,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("plugin-config", None, actor, reason);
        ev.new = serde_json::json!({ "name": name, "config": value });
        let Some(old) = self.shared.plugins.get(name) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no plugin named `{name}` is loaded"))));
        };
        let plugin = match old.with_config(value.clone()) {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("plugin `{name}`: {e}")))),
        };
        ev.old = serde_json::json!({ "name": name, "config": old.config });
        ev.message = format!("plugin {name}: configuration set to {value}");
        self.put_plugin(ev, plugin, Change::PluginConfig(name, Some(&value)), actor)
    }

    /// Removes what the admin API set for plugin `name` (its uploaded
    /// version, its configuration): the config file's version applies again
    /// when the file names it with a `path`; otherwise the plugin is gone.
    /// Refused (409), changing nothing, for a plugin only the file gives,
    /// one the file names without a path, or one a rule or a running
    /// rollout still uses.
    pub async fn remove_plugin(&self, name: &str, actor: &str, reason: Option<String>) -> Result<Event, ControlError> {
        // Read before taking the write lock: a rollout's controller takes its
        // rollout's lock, then the write lock, never the other way round.
        let mut users = Vec::new();
        let handles: Vec<_> = self.rollouts.lock().await.iter().map(|(s, h)| (s.clone(), h.clone())).collect();
        for (service, h) in handles {
            let t = h.lock().await;
            if !t.is_done() && t.plan.analysis.policy.as_ref().is_some_and(|p| p.plugin == name) {
                users.push(service);
            }
        }
        let _w = self.writes.lock().await;
        let mut ev = event("plugin-remove", None, actor, reason);
        ev.new = serde_json::json!({ "name": name });
        let Some(old) = self.shared.plugins.get(name) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no plugin named `{name}` is loaded"))));
        };
        let conflict = |msg: String| ControlError::Conflict(msg);
        let mut overrides = self.plugin_overrides()?;
        if !overrides.uploaded.contains_key(name) && !overrides.configs.contains_key(name) {
            let msg = format!("`{name}` comes from the config file: remove it there, then reload");
            return Err(self.refuse(ev, conflict(msg)));
        }
        let config = self.config();
        let in_file = config.plugins.iter().find(|p| p.name == name).cloned();
        if in_file.as_ref().is_some_and(|p| p.path.is_none()) {
            let msg = format!("the config file names `{name}` without a `path`: remove it there first, then reload");
            return Err(self.refuse(ev, conflict(msg)));
        }
        if let (None, Some(service)) = (&in_file, users.first()) {
            let msg = format!("the running rollout of {service} uses `{name}` as its policy");
            return Err(self.refuse(ev, conflict(msg)));
        }
        overrides.uploaded.remove(name);
        overrides.configs.remove(name);
        let current = self.shared.snapshot.load_full();
        let (plugins, next) = match self.build(&config, &current.run_time(), &overrides) {
            Ok(built) => built,
            Err(e) => return Err(self.refuse(ev, conflict(format!("cannot remove `{name}`, it is in use: {e}")))),
        };
        ev.old = serde_json::json!({ "name": name, "sha256": old.sha256, "config": old.config });
        ev.message = match &in_file {
            Some(_) => format!("plugin {name}: what the admin API set is removed; the config file's version applies"),
            None => format!("plugin {name} removed"),
        };
        let ev = self.commit(&[Change::Plugin(name, None), Change::PluginConfig(name, None)], ev)?;
        self.shared.plugins.replace(plugins);
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(actor, "{}", ev.message);
        Ok(ev)
    }

    /// The common end of a plugin change: binds every rule to `plugin` in a
    /// new snapshot (refused, and recorded, when one cannot bind), then
    /// commits `ev` with `change`, puts `plugin` in force and swaps the snapshot.
    fn put_plugin(
        &self,
        ev: Event,
        plugin: Arc<crate::plugin::Plugin>,
        change: Change<'_>,
        actor: &str,
    ) -> Result<Event, ControlError> {
        let mut map = self.shared.plugins.map();
        map.insert(plugin.name.clone(), plugin.clone());
        let current = self.shared.snapshot.load_full();
        let next = match Snapshot::build(&self.config(), &self.shared.stats, Some(&current), &current.run_time(), &map)
        {
            Ok(n) => n,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        let ev = self.commit(&[change], ev)?;
        self.shared.plugins.insert(plugin);
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(actor, "{}", ev.message);
        Ok(ev)
    }

    pub(super) fn plugin_overrides(&self) -> Result<crate::plugin::Overrides, ControlError> {
        match &self.store {
            Some(s) => s.plugins().map_err(|e| ControlError::Internal(e.to_string())),
            None => Ok(Default::default()),
        }
    }
}
