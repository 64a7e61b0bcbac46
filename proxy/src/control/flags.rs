//! Feature flags through the control path: run-time overrides, their reset,
//! and reloads of the flag file (on change, or with the config).

use super::*;

impl Control {
    /// The flag definition file, when flags are configured.
    pub fn flags_file(&self) -> Option<PathBuf> {
        self.config().flags.map(|f| f.file)
    }

    fn flags_config(&self) -> Option<crate::config::FlagsConfig> {
        self.config().flags
    }

    /// Merges `patch` (any of `state`, `defaultVariant`, `variants`,
    /// `targeting`) into flag `key`'s run-time override; the flag is rebuilt
    /// and validated with every other flag before anything changes.
    pub async fn set_flag(
        &self,
        key: &str,
        patch: serde_json::Value,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("flag", None, actor, reason);
        ev.new = serde_json::json!({ key: patch });
        let Some(flags) = self.flags_config() else {
            return Err(self.refuse(ev, ControlError::Conflict("no `flags` section in the config".into())));
        };
        if !patch.is_object() {
            return Err(self.refuse(ev, ControlError::BadRequest("the body is an object of flag fields".into())));
        }
        let allowed = ["state", "defaultVariant", "variants", "targeting"];
        if let Some(k) = patch.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.refuse(
                ev,
                ControlError::BadRequest(format!("unknown field `{k}` (fields: {})", allowed.join(", "))),
            ));
        }
        let mut overrides = self.flag_overrides()?;
        let mut merged = overrides.get(key).cloned().unwrap_or_else(|| serde_json::json!({}));
        if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
            m.extend(p.clone());
        }
        overrides.insert(key.to_owned(), merged.clone());
        let set = match load_flags(&flags, &overrides) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        ev.old = self.shared.flags.load().definitions().get(key).map_or(serde_json::Value::Null, |(d, _)| (*d).clone());
        ev.new = set.definitions().get(key).map_or(serde_json::Value::Null, |(d, _)| (*d).clone());
        ev.message = format!("flag {key} changed");
        let ev = self.commit(&[Change::Flag(key, Some(&merged))], ev)?;
        self.shared.flags.store(Arc::new(set));
        tracing::info!(flag = key, actor, "{}", ev.message);
        Ok(ev)
    }

    /// Drops flag `key`'s run-time override: the file's definition applies again.
    pub async fn reset_flag(&self, key: &str, actor: &str, reason: Option<String>) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("flag-reset", None, actor, reason);
        let Some(flags) = self.flags_config() else {
            return Err(self.refuse(ev, ControlError::Conflict("no `flags` section in the config".into())));
        };
        let mut overrides = self.flag_overrides()?;
        if overrides.remove(key).is_none() {
            return Err(self.refuse(ev, ControlError::NotFound(format!("flag `{key}` has no run-time change"))));
        }
        let set = match load_flags(&flags, &overrides) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        ev.message = format!("flag {key} back to the file's definition");
        let ev = self.commit(&[Change::Flag(key, None)], ev)?;
        self.shared.flags.store(Arc::new(set));
        Ok(ev)
    }

    /// Re-reads the flag file; a bad file is refused and the flags in force stay.
    pub async fn reload_flags(&self, actor: &str) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let ev = event("flags-reload", None, actor, None);
        let Some(flags) = self.flags_config() else {
            return Err(ControlError::Conflict("no `flags` section in the config".into()));
        };
        let set = match load_flags(&flags, &self.flag_overrides()?) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("{}: {e}", flags.file.display())))),
        };
        let mut ev = ev;
        ev.message = format!("flags reloaded from {}", flags.file.display());
        let ev = self.commit(&[], ev)?;
        self.shared.flags.store(Arc::new(set));
        tracing::info!("{}", ev.message);
        Ok(ev)
    }

    pub(super) fn flag_overrides(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>, ControlError> {
        match &self.store {
            Some(s) => s.flag_overrides().map_err(|e| ControlError::Internal(e.to_string())),
            None => Ok(Default::default()),
        }
    }
}

/// Reads and compiles a flag file with run-time overrides.
pub fn load_flags(
    flags: &crate::config::FlagsConfig,
    overrides: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<FlagSet, crate::Error> {
    let file = &flags.file;
    let text = std::fs::read_to_string(file)
        .map_err(|e| crate::Error::Flags(format!("cannot read {}: {e}", file.display())))?;
    FlagSet::parse(&text, overrides, flags.bucketing)
}

/// Re-reads the flag file whenever it changes (polled every second; editors
/// that replace the file are seen too). The file's stamp is taken when this
/// is called, not when the task first runs: a change made between starting
/// to serve and the task's first poll is a change too.
pub fn watch_flags(control: Arc<Control>, file: PathBuf) -> impl std::future::Future<Output = ()> {
    let stamp = |f: &std::path::Path| std::fs::metadata(f).ok().map(|m| (m.modified().ok(), m.len()));
    let mut last = stamp(&file);
    async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = stamp(&file);
            if now != last {
                last = now;
                // Errors are logged and recorded by the control path.
                let _ = control.reload_flags("flags-file").await;
            }
        }
    }
}
