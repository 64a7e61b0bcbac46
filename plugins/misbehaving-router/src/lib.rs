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
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("misbehaving router: trap on request"),
            "hog" => {
                // Reserve (untouched, so growth is fast) 16 MiB at a time.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = Vec::with_capacity(16 << 20);
                    block.push(1u8);
                    hoard.push(std::hint::black_box(block));
                }
            }
            "recurse" => Ok(Some(Pool::from_index(recurse(std::hint::black_box(1))))),
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

/// Recursion the optimiser cannot turn into a loop.
fn recurse(n: u32) -> u32 {
    let frame = std::hint::black_box([n; 64]);
    if frame[0] == u32::MAX {
        return 0; // never: the stack runs out long before
    }
    recurse(frame[7].wrapping_add(1)).wrapping_add(frame[3])
}

switchyard_sdk::export_router!(Misbehaving);
