//! The deployment report: what release reviews ask of a period — the
//! deployments (from the durable history's `rollout-end` events and the
//! rollouts still running), the four DORA measures with their bands, the
//! alert conditions that held, the services' status now, and
//! recommendations drawn from all that.
//!
//! - [`build`](build::build): one proxy's report, from its control path;
//! - [`Report::merge`]: several proxies' reports into one (staging and
//!   production; a fleet's replicas, whose shared history counts once);
//! - [`dora`]: the measures and bands; [`render`]: Markdown and HTML.

pub mod build;
pub mod dora;
pub mod render;

pub use crate::control::rollout::ended::Ended;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A deployment report over a period, one section per environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When it was made (RFC 3339).
    pub generated: String,
    /// The period's start (RFC 3339); it ends at `generated`.
    pub since: String,
    /// The period in days.
    pub period_days: f64,
    /// Each environment's section.
    pub environments: Vec<Environment>,
}

/// One environment: a proxy, or a fleet of replicas sharing one history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The config's `environment` (`default` when it names none).
    pub name: String,
    /// Services and pools now.
    pub services: Vec<ServiceStatus>,
    /// Deployments in the period, newest first (running ones included).
    pub deployments: Vec<Deployment>,
    /// Rollouts paused by the progress deadline (no verdict in time).
    pub stalls: Vec<Stall>,
    /// The four measures, from `deployments`.
    pub dora: dora::Dora,
    /// The alert conditions of `deploy/prometheus/alerts.yml`, as the
    /// history (or, for the live ones, the figures now) shows them.
    pub alerts: Vec<Alert>,
    /// What the data suggests doing.
    pub recommendations: Vec<String>,
}

/// A service now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Its latest rollout's status, if it had one.
    pub rollout: Option<String>,
    /// Its pools.
    pub pools: Vec<PoolStatus>,
}

/// A pool now, over the statistics window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// What it runs.
    pub version: Option<String>,
    /// Its share of unkeyed traffic, percent.
    pub share_percent: f64,
    /// Endpoints passing health checks.
    pub endpoints_up: usize,
    /// Endpoints in all.
    pub endpoints: usize,
    /// Requests in the window.
    pub requests: u64,
    /// Errors per request in the window.
    pub error_rate: f64,
    /// p99 latency in the window, milliseconds.
    pub p99_ms: f64,
    /// 0-100: the share of endpoints up, less 10 points per 1 % of errors.
    pub health_score: u32,
}

/// One deployment: a rollout that ended in the period, or is still running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The service.
    pub service: String,
    /// When it ended (RFC 3339); `null` while running.
    pub ended: Option<String>,
    /// What it was and how it went (`status` is `running` or `paused`
    /// while it runs).
    #[serde(flatten)]
    pub rollout: Ended,
}

/// A rollout that paused for want of a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// The service.
    pub service: String,
    /// The step (1-based).
    pub step: usize,
    /// When (RFC 3339).
    pub time: String,
}

/// An alert condition and when it held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name in `deploy/prometheus/alerts.yml`.
    pub name: String,
    /// What it watches.
    pub condition: String,
    /// `period` (from the history) or `now` (from the live figures: the
    /// proxy keeps no history of them; Prometheus does).
    pub scope: String,
    /// How often it held.
    pub fired: usize,
    /// Where and when, briefly.
    pub details: Vec<String>,
}

impl Report {
    /// Several reports as one: environments of the same name are one
    /// environment (a deployment seen by two replicas counts once), and
    /// everything derived is derived again from the union.
    pub fn merge(reports: Vec<Report>) -> Option<Report> {
        let mut it = reports.into_iter();
        let mut out = it.next()?;
        for r in it {
            out.since = out.since.min(r.since);
            out.generated = out.generated.max(r.generated);
            out.period_days = out.period_days.max(r.period_days);
            for env in r.environments {
                match out.environments.iter_mut().find(|e| e.name == env.name) {
                    Some(mine) => mine.absorb(env),
                    None => out.environments.push(env),
                }
            }
        }
        let (since, now) = (out.since.clone(), out.generated.clone());
        for env in &mut out.environments {
            env.derive(&since, &now);
        }
        Some(out)
    }
}

impl Environment {
    /// A section from what a proxy knows; the derived parts computed.
    pub fn new(
        name: String,
        services: Vec<ServiceStatus>,
        deployments: Vec<Deployment>,
        stalls: Vec<Stall>,
        (since, now): (&str, &str),
    ) -> Self {
        let mut env = Environment {
            name,
            services,
            deployments,
            stalls,
            dora: dora::Dora::default(),
            alerts: Vec::new(),
            recommendations: Vec::new(),
        };
        env.derive(since, now);
        env
    }

    fn absorb(&mut self, other: Environment) {
        let key = |d: &Deployment| (d.service.clone(), d.rollout.started.clone());
        let mut by_key: BTreeMap<_, Deployment> = self.deployments.drain(..).map(|d| (key(&d), d)).collect();
        for d in other.deployments {
            // The ended record wins over a replica that still saw it running.
            match by_key.get(&key(&d)) {
                Some(mine) if mine.ended.is_some() || d.ended.is_none() => {}
                _ => {
                    by_key.insert(key(&d), d);
                }
            }
        }
        self.deployments = by_key.into_values().collect();
        for s in other.services {
            if !self.services.iter().any(|m| m.name == s.name) {
                self.services.push(s);
            }
        }
        for s in other.stalls {
            if !self.stalls.contains(&s) {
                self.stalls.push(s);
            }
        }
    }

    /// Sorts the deployments (newest first) and computes the measures,
    /// alerts and recommendations from them and the services.
    fn derive(&mut self, since: &str, now: &str) {
        self.deployments.sort_by(|a, b| b.rollout.started.cmp(&a.rollout.started));
        self.stalls.sort_by(|a, b| b.time.cmp(&a.time));
        self.dora = dora::Dora::measure(&self.deployments, since, now);
        self.alerts = alerts(self);
        self.recommendations = recommendations(self);
    }
}

/// The rules of `deploy/prometheus/alerts.yml`, held against the history
/// (rollbacks, long rollouts) and the figures now (error rate, endpoints).
fn alerts(env: &Environment) -> Vec<Alert> {
    let rolled_back: Vec<String> = env
        .deployments
        .iter()
        .filter(|d| d.rollout.status == "rolled-back")
        .map(|d| format!("{} {} at {}", d.service, version(&d.rollout), d.ended.as_deref().unwrap_or("?")))
        .collect();
    let long: Vec<String> = env
        .deployments
        .iter()
        .filter(|d| d.rollout.duration_seconds > 2.0 * 3600.0)
        .map(|d| format!("{} {} took {}", d.service, version(&d.rollout), dora::human(d.rollout.duration_seconds)))
        .collect();
    let pools = || env.services.iter().flat_map(|s| s.pools.iter().map(move |p| (s, p)));
    let erring: Vec<String> = pools()
        .filter(|(_, p)| p.requests > 0 && p.error_rate > 0.01)
        .map(|(s, p)| format!("{}/{}: {:.2} % errors", s.name, p.name, p.error_rate * 100.0))
        .collect();
    let down: Vec<String> = pools()
        .filter(|(_, p)| p.endpoints_up < p.endpoints)
        .map(|(s, p)| {
            format!("{}/{}: {} of {} endpoints down", s.name, p.name, p.endpoints - p.endpoints_up, p.endpoints)
        })
        .collect();
    let alert = |name: &str, condition: &str, scope: &str, details: Vec<String>| Alert {
        name: name.into(),
        condition: condition.into(),
        scope: scope.into(),
        fired: details.len(),
        details,
    };
    vec![
        alert("SwitchyardRolloutRolledBack", "a rollout rolled back", "period", rolled_back),
        alert("SwitchyardRolloutTooLong", "a rollout ran longer than 2 h", "period", long),
        alert("SwitchyardPoolErrorRate", "a pool's error rate above 1 %", "now", erring),
        alert("SwitchyardEndpointDown", "an endpoint failing its health checks", "now", down),
    ]
}

fn version(e: &Ended) -> String {
    e.version.clone().unwrap_or_else(|| e.candidate.clone())
}

/// What the period's data suggests, most telling first.
fn recommendations(env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let failed: Vec<&Deployment> = env.deployments.iter().filter(|d| dora::is_failure(&d.rollout)).collect();
    // The most frequent reason the analysis rolled back, its figures left out.
    let auto: Vec<&&Deployment> = failed.iter().filter(|d| d.rollout.rollback == "auto").collect();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in &auto {
        if let Some(r) = &d.rollout.reason {
            *reasons.entry(reason_kind(r)).or_default() += 1;
        }
    }
    if let Some((reason, n)) = reasons.iter().max_by_key(|(_, n)| **n) {
        out.push(format!(
            "The most frequent rollback reason ({n} of {} automatic rollbacks): {reason}. Catch it before production \
             (a test, or a `mirror` or first canary step that judges it on little traffic).",
            auto.len()
        ));
    }
    // Steps that keep running out of time for a verdict.
    let mut stalls: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for s in &env.stalls {
        *stalls.entry((s.service.clone(), s.step)).or_default() += 1;
    }
    for ((service, step), n) in stalls.iter().filter(|(_, n)| **n >= 2) {
        let rollouts = env.deployments.iter().filter(|d| d.service == *service).count().max(*n);
        out.push(format!(
            "Step {step} of {service} paused for want of a verdict in {n} of {rollouts} rollouts: lengthen its hold, \
             send it more traffic, or lower `min_requests`."
        ));
    }
    let d = &env.dora;
    if d.change_failure_rate.value.is_some_and(|r| r > 0.15) {
        out.push(format!("Change failure rate is {}: more than the elite band's 15 %.", d.change_failure_rate.shown()));
    }
    let manual = failed.iter().filter(|d| d.rollout.rollback == "manual").count();
    if manual > 0 && manual * 2 >= failed.len() {
        out.push(format!(
            "{manual} of {} failed deployments were stopped by a person, not the analysis: if they were failing, \
             tighten `rollback_when` so the analysis stops such versions first.",
            failed.len()
        ));
    }
    let promoted = env.deployments.iter().filter(|d| d.rollout.status == "promoted").count();
    if promoted > 0 && d.lead_time.value.is_none() {
        out.push(
            "Lead time is unknown: give each deploy its commit time (`ctl pool set ... --commit-time`, or \
             `commit_time` in the config)."
                .into(),
        );
    }
    if env.deployments.is_empty() {
        out.push("No deployments in the period.".into());
    }
    for a in env.alerts.iter().filter(|a| a.scope == "now" && a.fired > 0) {
        out.push(format!("Now: {} ({}).", a.condition, a.details.join("; ")));
    }
    out
}

/// A rollback reason without its figures (numbers become `N`, the
/// parenthesised detail goes): what kind of failure it was.
fn reason_kind(reason: &str) -> String {
    let head = reason.split('(').next().unwrap_or(reason);
    let words: Vec<String> = head
        .split_whitespace()
        .map(|w| match w.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
            _ if !w.starts_with(|c: char| c.is_ascii_digit()) => w.to_owned(),
            Some(i) => format!("N{}", &w[i..]),
            None => "N".to_owned(),
        })
        .collect();
    if words.is_empty() {
        reason.trim().to_owned()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests;
