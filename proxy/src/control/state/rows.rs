//! Every table as rows — `{table, key, value}` — the one form a change
//! takes on its way to redb or to etcd: what a fleet's etcd holds, one key
//! per row, and what a replica's local copy mirrors from it.

use super::{
    db_err, json, Change, Error, Event, StateStore, EVENTS, FLAGS, META, MIRRORS, PLUGINS, PLUGIN_CONFIGS, POOLS,
    ROLLOUTS, SUSPENDED, WEIGHTS,
};
use redb::TableDefinition;

/// One stored key: its table, its key and its new value (`None`: removed).
/// Events are rows of the `events` table keyed by their zero-padded sequence
/// number, so a fleet's store can hold every table under one key prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `weights`, `flags`, `plugins`, `plugin_configs`, `suspended`, `pools`, `mirrors`, `rollouts` or `events`.
    pub table: &'static str,
    /// The service, flag, plugin or (for events) the sequence number.
    pub key: String,
    /// JSON (component bytes for `plugins`), or `None` to remove.
    pub value: Option<Vec<u8>>,
}

/// Every table a [`Row`] may name.
pub const TABLES: [&str; 9] =
    ["weights", "flags", "plugins", "plugin_configs", "suspended", "pools", "mirrors", "rollouts", "events"];

/// The rows that carry `changes`.
pub fn rows(changes: &[Change<'_>]) -> Result<Vec<Row>, Error> {
    let bytes = |v: Option<String>| v.map(String::into_bytes);
    changes
        .iter()
        .map(|change| {
            Ok(match *change {
                Change::Weights(k, w) => {
                    Row { table: "weights", key: k.into(), value: bytes(w.map(json).transpose()?) }
                }
                Change::Flag(k, f) => Row { table: "flags", key: k.into(), value: bytes(f.map(json).transpose()?) },
                Change::Plugin(k, b) => Row { table: "plugins", key: k.into(), value: b.map(<[u8]>::to_vec) },
                Change::PluginConfig(k, c) => {
                    Row { table: "plugin_configs", key: k.into(), value: bytes(c.map(json).transpose()?) }
                }
                Change::Suspended(k, pools) => Row {
                    table: "suspended",
                    key: k.into(),
                    value: bytes((!pools.is_empty()).then(|| json(pools)).transpose()?),
                },
                Change::Mirror(k, m) => Row { table: "mirrors", key: k.into(), value: bytes(m.map(json).transpose()?) },
                Change::Rollout(k, r) => Row { table: "rollouts", key: k.into(), value: Some(r.as_bytes().to_vec()) },
                Change::Pools(k, p) => Row {
                    table: "pools",
                    key: k.into(),
                    value: bytes(p.filter(|p| !p.is_empty()).map(json).transpose()?),
                },
            })
        })
        .collect()
}

/// `event` with its sequence number and the time now.
pub fn stamp(event: Event, seq: u64) -> Event {
    Event { seq, time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(), ..event }
}

/// An event's row.
pub fn event_row(event: &Event) -> Result<Row, Error> {
    Ok(Row { table: "events", key: format!("{:020}", event.seq), value: Some(json(event)?.into_bytes()) })
}

pub(super) fn write_rows(tx: &redb::WriteTransaction, rows: &[Row]) -> Result<(), Error> {
    for row in rows {
        let text = |v: &[u8]| std::str::from_utf8(v).map(str::to_owned).map_err(db_err);
        match (row.table, &row.value) {
            ("plugins", Some(v)) => {
                tx.open_table(PLUGINS).map_err(db_err)?.insert(row.key.as_str(), v.as_slice()).map(drop)
            }
            ("plugins", None) => tx.open_table(PLUGINS).map_err(db_err)?.remove(row.key.as_str()).map(drop),
            ("events", value) => {
                let seq: u64 = row.key.parse().map_err(db_err)?;
                let mut t = tx.open_table(EVENTS).map_err(db_err)?;
                match value {
                    Some(v) => t.insert(seq, text(v)?.as_str()).map(drop),
                    None => t.remove(seq).map(drop),
                }
            }
            (name, value) => {
                let def = json_table_named(name)?;
                let mut t = tx.open_table(def).map_err(db_err)?;
                match value {
                    Some(v) => t.insert(row.key.as_str(), text(v)?.as_str()).map(drop),
                    None => t.remove(row.key.as_str()).map(drop),
                }
            }
        }
        .map_err(db_err)?;
    }
    Ok(())
}

fn json_table_named(name: &str) -> Result<TableDefinition<'static, &'static str, &'static str>, Error> {
    Ok(match name {
        "weights" => WEIGHTS,
        "flags" => FLAGS,
        "plugin_configs" => PLUGIN_CONFIGS,
        "suspended" => SUSPENDED,
        "pools" => POOLS,
        "mirrors" => MIRRORS,
        "rollouts" => ROLLOUTS,
        other => return Err(Error::State(format!("state store: no table `{other}`"))),
    })
}

// === the local copy of a fleet's state ===

impl StateStore {
    /// Applies rows a fleet committed elsewhere (or here) at etcd `revision`,
    /// in one transaction; `reset` first empties every table (a full re-read).
    /// Events among the rows are broadcast to followers.
    pub fn mirror(&self, rows: &[Row], revision: i64, reset: bool) -> Result<(), Error> {
        let tx = self.write()?;
        if reset {
            // Emptied and created again in the same transaction: readers never see a table missing.
            for name in TABLES {
                match name {
                    "plugins" => {
                        tx.delete_table(PLUGINS).map_err(db_err)?;
                        tx.open_table(PLUGINS).map_err(db_err)?;
                    }
                    "events" => {
                        tx.delete_table(EVENTS).map_err(db_err)?;
                        tx.open_table(EVENTS).map_err(db_err)?;
                    }
                    n => {
                        tx.delete_table(json_table_named(n)?).map_err(db_err)?;
                        tx.open_table(json_table_named(n)?).map_err(db_err)?;
                    }
                }
            }
        }
        write_rows(&tx, rows)?;
        tx.open_table(META).map_err(db_err)?.insert("revision", revision.to_string().as_str()).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        for row in rows.iter().filter(|r| r.table == "events") {
            if let Some(ev) = row.value.as_deref().and_then(|v| serde_json::from_slice::<Event>(v).ok()) {
                let _ = self.events.send(ev);
            }
        }
        Ok(())
    }

    /// The etcd revision the local copy last applied (0: none).
    pub fn revision(&self) -> Result<i64, Error> {
        let tx = self.read()?;
        let table = tx.open_table(META).map_err(db_err)?;
        let v = table.get("revision").map_err(db_err)?;
        Ok(v.and_then(|v| v.value().parse().ok()).unwrap_or(0))
    }
}
