//! Test fixture: a policy that misbehaves on demand, to prove the host
//! contains it. It holds while the candidate has fewer than `from_requests`
//! requests in the window (default 1, so the host's trial call passes), then
//! acts by `mode`: `loop`, `trap`, `hog`, `recurse`, `unknown-pool`
//! (set-weights naming a pool the service lacks), `zero-weights`
//! (set-weights all zero), `promote` (always promotes), `hold`.

use serde::Deserialize;
use switchyard_sdk::{Config, Context, Policy, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
    #[serde(default = "one")]
    from_requests: u64,
}

fn one() -> u64 {
    1
}

/// The fixture.
pub struct Misbehaving(Settings);

impl Policy for Misbehaving {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Misbehaving(config.parse()?))
    }

    fn decide(&self, ctx: &Context) -> Verdict {
        if ctx.candidate_window().requests < self.0.from_requests {
            return Verdict::hold("waiting for traffic");
        }
        match self.0.mode.as_str() {
            "loop" => misbehave::spin(),
            "trap" => panic!("misbehaving policy: trap"),
            "hog" => misbehave::hog(),
            "recurse" => Verdict::hold(format!("{}", misbehave::recurse(std::hint::black_box(1)))),
            "unknown-pool" => Verdict::set_weights(&[(ctx.baseline.as_str(), 50), ("nonexistent", 50)], "nonsense"),
            "zero-weights" => {
                Verdict::set_weights(&[(ctx.baseline.as_str(), 0), (ctx.candidate.as_str(), 0)], "nonsense")
            }
            "promote" => Verdict::promote("always"),
            _ => Verdict::hold("holding"),
        }
    }
}

switchyard_sdk::export_policy!(Misbehaving);
