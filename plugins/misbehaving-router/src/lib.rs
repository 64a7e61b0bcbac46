//! Test fixture: a router that misbehaves on demand, to prove the host
//! contains it. It behaves (no opinion) unless the request carries the
//! header named by `trigger` (default `x-misbehave`), so it passes the
//! host's trial call at load. `mode`: `loop`, `trap`, `hog` (grows memory
//! without end), `recurse` (unbounded recursion), `unknown-pool` (answers
//! an index beyond the pools), `error` (returns an error), `log-flood`
//! (logs without end), `canary`
//! (behaves: routes to the pool `canary`).

use serde::Deserialize;
use switchyard_sdk::{Config, Needs, Pool, Pools, Request, Router};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
    #[serde(default = "trigger")]
    trigger: String,
}

fn trigger() -> String {
    "x-misbehave".into()
}

/// The fixture.
pub struct Misbehaving {
    mode: String,
    trigger: String,
    canary: Option<Pool>,
}

impl Router for Misbehaving {
    fn init(config: &Config, pools: &Pools) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        Ok(Misbehaving { mode: s.mode, trigger: s.trigger, canary: pools.get("canary").ok() })
    }

    fn route(&self, req: &Request) -> Result<Option<Pool>, String> {
        if req.header(&self.trigger).is_none() {
            return Ok(None);
        }
        match self.mode.as_str() {
            "loop" => misbehave::spin(),
            "trap" => panic!("misbehaving router: trap on request"),
            "hog" => misbehave::hog(),
            "recurse" => Ok(Some(Pool::from_index(misbehave::recurse(std::hint::black_box(1))))),
            "unknown-pool" => Ok(Some(Pool::from_index(99))),
            "log-flood" => loop {
                switchyard_sdk::log(switchyard_sdk::Level::Info, "misbehaving router: flooding the log");
            },
            "error" => Err("misbehaving router: error on request".into()),
            _ => Ok(self.canary),
        }
    }

    fn needs(&self) -> Needs {
        Needs { headers: vec![self.trigger.clone()], cookies: vec![] }
    }
}

switchyard_sdk::export_router!(Misbehaving);
