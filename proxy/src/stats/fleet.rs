//! What the fleet's other replicas recorded, so the leader judges a rollout
//! on the whole fleet's traffic.
//!
//! Each replica publishes, for every service with a rollout, each pool's
//! figures per completed tick (a [`Recording`]), keyed by wall-clock tick
//! (`unix time / tick`), so ticks of different replicas line up. Figures
//! carry every latency value with its count, so merging is exact: the
//! merged window is the one a single proxy serving all of the traffic would
//! have recorded (to the recorder's 3 significant digits).

use super::Figures;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One replica's figures for one service: per wall-clock tick, per pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// The tick length, milliseconds (replicas with another length are ignored).
    pub tick_ms: u64,
    /// `(wall-clock tick, [(pool, figures)])`, oldest first; empty pools left out.
    pub ticks: Vec<(u64, Vec<(String, Figures)>)>,
}

/// Other replicas' figures, by `(service, pool)` and `(wall tick, replica)`.
#[derive(Default)]
pub(super) struct Remote {
    pools: HashMap<(String, String), BTreeMap<(u64, String), Figures>>,
}

impl Remote {
    /// Takes `replica`'s `recording` of `service` (a tick received again
    /// replaces the earlier copy), keeping ticks after `oldest`.
    pub(super) fn add(&mut self, replica: &str, service: &str, recording: Recording, oldest: u64) {
        for (tick, pools) in recording.ticks {
            for (pool, figures) in pools {
                let ticks = self.pools.entry((service.to_owned(), pool)).or_default();
                ticks.insert((tick, replica.to_owned()), figures);
            }
        }
        for ticks in self.pools.values_mut() {
            *ticks = ticks.split_off(&(oldest, String::new()));
        }
        self.pools.retain(|_, ticks| !ticks.is_empty());
    }

    /// Every other replica's figures of `(service, pool)` over wall ticks `from..=through`.
    pub(super) fn range(&self, service: &str, pool: &str, from: u64, through: u64) -> Figures {
        let key = (service.to_owned(), pool.to_owned());
        match self.pools.get(&key).filter(|_| from <= through) {
            Some(ticks) => Figures::sum(
                ticks.range((from, String::new())..(through.saturating_add(1), String::new())).map(|(_, f)| f),
            ),
            None => Figures::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, failed: u64, latency_us: u64) -> Figures {
        let mut f = Figures { requests, ..Figures::default() };
        f.status[1] = requests - failed;
        f.status[4] = failed;
        f.merge(&Figures { latency: vec![(latency_us, requests)], ..Figures::default() });
        f
    }

    #[test]
    fn replicas_ticks_merge_exactly_and_expire() {
        let mut r = Remote::default();
        let rec = |tick, f: Figures| Recording { tick_ms: 1000, ticks: vec![(tick, vec![("canary".into(), f)])] };
        r.add("r1", "web", rec(10, figures(10, 4, 2_000)), 0);
        r.add("r2", "web", rec(10, figures(10, 4, 9_000)), 0);
        r.add("r2", "web", rec(11, figures(5, 0, 2_000)), 0);
        r.add("r1", "web", rec(10, figures(10, 4, 2_000)), 0); // sent again: replaces, not adds
        let all = r.range("web", "canary", 10, 11);
        assert_eq!((all.requests, all.failed()), (25, 8));
        assert_eq!(all.latency, vec![(2_000, 15), (9_000, 10)], "every value with its count");
        assert_eq!(all.p50_us, 2_000);
        assert_eq!(all.p99_us, 9_000);
        assert_eq!(r.range("web", "canary", 11, 11).requests, 5);
        assert_eq!(r.range("web", "stable", 0, 99).requests, 0);
        assert_eq!(r.range("web", "canary", 12, 11).requests, 0, "an empty span (an anchor after now)");
        r.add("r3", "web", rec(12, figures(1, 0, 1)), 11);
        assert_eq!(r.range("web", "canary", 0, 99).requests, 6, "ticks before the oldest kept are gone");
    }
}
