//! Prometheus exposition: a collector that reads the control path's
//! aggregates and the current snapshot at scrape time. Metric names are the
//! constants below; every one is documented in the README.

use crate::data::Shared;
use crate::stats::{Stats, CLIENT_LABELS, ERROR_LABELS, MIRROR_LABELS, STATUS_LABELS};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use std::sync::Arc;

/// Requests by service, pool and status class (`1xx`..`5xx`).
pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
/// Time to the response head, by service and pool.
pub const REQUEST_DURATION_SECONDS: &str = "switchyard_request_duration_seconds";
/// Proxy-side failures by service, pool and class (`connect`, `timeout`, `reset`, `no_healthy_endpoint`).
pub const UPSTREAM_ERRORS_TOTAL: &str = "switchyard_upstream_errors_total";
/// Failures the client caused, by service, pool and kind (`payload_too_large`,
/// `request_timeout`, `bad_body`, `client_closed`); in no other family.
pub const CLIENT_ERRORS_TOTAL: &str = "switchyard_client_errors_total";
/// During a rolling update: requests to a pool's old and new endpoints, by
/// service, pool, `endpoints` (`old`, `new`) and status class (already in
/// the pool's `switchyard_requests_total`).
pub const ROLLING_REQUESTS_TOTAL: &str = "switchyard_rolling_requests_total";
/// Copies of requests a mirror pool got, by service, pool and outcome
/// (`compared` with the primary's answer, of which `mismatched` in status
/// class, and `dropped` unsent).
pub const MIRROR_TOTAL: &str = "switchyard_mirror_requests_total";
/// Current relative weight of each pool.
pub const POOL_WEIGHT: &str = "switchyard_pool_weight";
/// 1 when an endpoint takes traffic (not ejected, checks passing), else 0.
pub const ENDPOINT_HEALTHY: &str = "switchyard_endpoint_healthy";
/// Plugin calls by plugin and kind (`router`, `policy`).
pub const PLUGIN_CALLS_TOTAL: &str = "switchyard_plugin_calls_total";
/// Plugin faults by plugin and fault (`trap`, `deadline`, `memory`, `error`, `nonsense`).
pub const PLUGIN_FAULTS_TOTAL: &str = "switchyard_plugin_faults_total";
/// Time spent in plugin calls, by plugin (router calls are timed one in eight).
pub const PLUGIN_CALL_SECONDS_TOTAL: &str = "switchyard_plugin_call_seconds_total";
/// Fuel (about one unit per WebAssembly instruction) burned in plugin calls, faulted ones included.
pub const PLUGIN_FUEL_TOTAL: &str = "switchyard_plugin_fuel_total";
/// Rollouts started here, by service and strategy.
pub const ROLLOUTS_STARTED_TOTAL: &str = "switchyard_rollouts_started_total";
/// Rollouts whose end was written here, by service and outcome (`promoted`, `rolled-back`, `aborted`).
pub const ROLLOUTS_FINISHED_TOTAL: &str = "switchyard_rollouts_finished_total";
/// How long finished rollouts took, start to end, by service and outcome.
pub const ROLLOUT_DURATION_SECONDS: &str = "switchyard_rollout_duration_seconds";
/// 1 while a rollout of the service has not ended (running or paused).
pub const ROLLOUT_ACTIVE: &str = "switchyard_rollout_active";
/// From a failing verdict to traffic back on the baseline, by service.
pub const ROLLOUT_RESTORE_SECONDS: &str = "switchyard_rollout_restore_seconds";
/// How long commits to the state store took (redb with fsync, or etcd in a
/// fleet): each change is durable before the admin API answers.
pub const STATE_COMMIT_SECONDS: &str = "switchyard_state_commit_seconds";
/// Always 1, labelled with the running version.
pub const BUILD_INFO: &str = "switchyard_build_info";

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Collects every Switchyard metric.
pub struct SwitchyardCollector {
    shared: Arc<Shared>,
    descs: Vec<Desc>,
}

/// Every family: name, help, labels, type — in the order `collect` returns them.
const FAMILIES: [(&str, &str, &[&str], MetricType); 12] = [
    (REQUESTS_TOTAL, "Requests by service, pool and status class.", &["service", "pool", "class"], MetricType::COUNTER),
    (
        REQUEST_DURATION_SECONDS,
        "Time to the response head, by service and pool.",
        &["service", "pool"],
        MetricType::HISTOGRAM,
    ),
    (
        UPSTREAM_ERRORS_TOTAL,
        "Proxy-side failures by service, pool and class.",
        &["service", "pool", "class"],
        MetricType::COUNTER,
    ),
    (
        CLIENT_ERRORS_TOTAL,
        "Failures the client caused, by service, pool and kind; counted against no pool.",
        &["service", "pool", "kind"],
        MetricType::COUNTER,
    ),
    (
        ROLLING_REQUESTS_TOTAL,
        "During a rolling update: requests to a pool's old and new endpoints, by status class.",
        &["service", "pool", "endpoints", "class"],
        MetricType::COUNTER,
    ),
    (
        MIRROR_TOTAL,
        "Copies of requests sent to a mirror pool, by service, pool and outcome (compared, mismatched, dropped).",
        &["service", "pool", "outcome"],
        MetricType::COUNTER,
    ),
    (POOL_WEIGHT, "Current relative weight of each pool.", &["service", "pool"], MetricType::GAUGE),
    (
        ENDPOINT_HEALTHY,
        "1 when an endpoint takes traffic, else 0.",
        &["service", "pool", "endpoint"],
        MetricType::GAUGE,
    ),
    (PLUGIN_CALLS_TOTAL, "Plugin calls by plugin and kind.", &["plugin", "kind"], MetricType::COUNTER),
    (PLUGIN_FAULTS_TOTAL, "Plugin faults by plugin and fault.", &["plugin", "fault"], MetricType::COUNTER),
    (PLUGIN_CALL_SECONDS_TOTAL, "Time spent in plugin calls, by plugin.", &["plugin"], MetricType::COUNTER),
    (
        PLUGIN_FUEL_TOTAL,
        "Fuel burned in plugin calls (about one unit per WebAssembly instruction), faulted calls included.",
        &["plugin"],
        MetricType::COUNTER,
    ),
];

impl SwitchyardCollector {
    /// A collector over `shared`'s stats and snapshot.
    pub fn new(shared: Arc<Shared>) -> Result<Self, prometheus::Error> {
        let descs = descs(&FAMILIES.map(|(name, help, labels, _)| (name, help, labels)))?;
        Ok(Self { shared, descs })
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).into());
            l.set_value((*v).into());
            l
        })
        .collect()
}

fn family(index: usize, metrics: Vec<Metric>) -> MetricFamily {
    let (name, help, _, kind) = FAMILIES[index];
    named(name, help, kind, metrics)
}

/// A family of `kind` with its name and help.
fn named(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(l: Vec<LabelPair>, v: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::default();
    m.set_label(l);
    m.set_counter(c);
    m
}

fn gauge(l: Vec<LabelPair>, v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_label(l);
    m.set_gauge(g);
    m
}

impl Collector for SwitchyardCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats: &Stats = &self.shared.stats;
        let (mut requests, mut durations, mut errors, mut client) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut mirror, mut rolling) = (Vec::new(), Vec::new());
        stats.each_lifetime(|svc, pool, p| {
            // A rolling update's endpoint groups: in their own family, not counted twice.
            if let Some((pool, group)) = crate::config::rolling::group_of(pool) {
                for (class, n) in STATUS_LABELS.iter().zip(p.status) {
                    let l = labels(&[("service", svc), ("pool", pool), ("endpoints", group), ("class", class)]);
                    rolling.push(counter(l, n));
                }
                return;
            }
            for (class, n) in STATUS_LABELS.iter().zip(p.status) {
                requests.push(counter(labels(&[("service", svc), ("pool", pool), ("class", class)]), n));
            }
            for (class, n) in ERROR_LABELS.iter().zip(p.errors) {
                errors.push(counter(labels(&[("service", svc), ("pool", pool), ("class", class)]), n));
            }
            for (kind, n) in CLIENT_LABELS.iter().zip(p.client) {
                client.push(counter(labels(&[("service", svc), ("pool", pool), ("kind", kind)]), n));
            }
            if p.mirror != [0; crate::stats::MIRROR_KINDS] {
                for (outcome, n) in MIRROR_LABELS.iter().zip(p.mirror) {
                    mirror.push(counter(labels(&[("service", svc), ("pool", pool), ("outcome", outcome)]), n));
                }
            }
            let mut h = Histogram::default();
            h.set_sample_count(p.latency.len());
            h.set_sample_sum(p.sum_us as f64 / 1e6);
            h.set_bucket(
                BUCKETS
                    .iter()
                    .map(|&b| {
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(b);
                        let count = if p.latency.is_empty() { 0 } else { p.latency.count_between(0, (b * 1e6) as u64) };
                        bucket.set_cumulative_count(count);
                        bucket
                    })
                    .collect(),
            );
            let mut m = Metric::default();
            m.set_label(labels(&[("service", svc), ("pool", pool)]));
            m.set_histogram(h);
            durations.push(m);
        });

        let (mut weights, mut health) = (Vec::new(), Vec::new());
        let snapshot = self.shared.snapshot.load();
        let now = crate::data::pool::clock_ms();
        for svc in snapshot.services() {
            for (pool, w) in svc.pools.iter().zip(svc.split.weights()) {
                weights.push(gauge(labels(&[("service", &svc.name), ("pool", &pool.name)]), f64::from(*w)));
                for ep in pool.endpoints.iter() {
                    let addr = ep.addr.to_string();
                    let up = if ep.is_available(now) { 1.0 } else { 0.0 };
                    health
                        .push(gauge(labels(&[("service", &svc.name), ("pool", &pool.name), ("endpoint", &addr)]), up));
                }
            }
        }
        let (mut calls, mut faults, mut seconds, mut fuel) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for p in self.shared.plugins.all() {
            let s = p.calls.summary();
            let kind = p.kind.as_str();
            calls.push(counter(labels(&[("plugin", &p.name), ("kind", kind)]), s.calls));
            for (fault, n) in &s.faults_by_kind {
                faults.push(counter(labels(&[("plugin", &p.name), ("fault", fault)]), *n));
            }
            let mut c = Counter::default();
            c.set_value(s.total_seconds);
            let mut m = Metric::default();
            m.set_label(labels(&[("plugin", &p.name)]));
            m.set_counter(c);
            seconds.push(m);
            fuel.push(counter(labels(&[("plugin", &p.name)]), s.fuel));
        }
        [requests, durations, errors, client, rolling, mirror, weights, health, calls, faults, seconds, fuel]
            .into_iter()
            .enumerate()
            .map(|(i, m)| family(i, m))
            .collect()
    }
}

/// 1 while this replica is in step with its fleet's etcd, 0 while degraded.
pub const FLEET_IN_STEP: &str = "switchyard_fleet_in_step";
/// The etcd revision of the fleet's state this replica has applied.
pub const FLEET_APPLIED_REVISION: &str = "switchyard_fleet_applied_revision";
/// Revisions each present replica is behind the newest, by replica.
pub const FLEET_REPLICA_LAG: &str = "switchyard_fleet_replica_lag";
/// 1 while this replica is the fleet's elected leader, else 0.
pub const FLEET_LEADER: &str = "switchyard_fleet_leader";

/// The fleet's gauges, read from the control path's store at scrape time
/// (registered only in fleet mode).
pub struct FleetCollector {
    control: Arc<crate::control::Control>,
    descs: Vec<Desc>,
}

impl FleetCollector {
    /// A collector over `control`'s fleet view.
    pub fn new(control: Arc<crate::control::Control>) -> Result<Self, prometheus::Error> {
        let descs = descs(&[
            (FLEET_IN_STEP, "1 while in step with the fleet's etcd, 0 while degraded.", &[]),
            (FLEET_APPLIED_REVISION, "The etcd revision of the fleet's state this replica applied.", &[]),
            (FLEET_REPLICA_LAG, "Revisions each present replica is behind the newest.", &["replica"]),
            (FLEET_LEADER, "1 while this replica is the fleet's elected leader, else 0.", &[]),
        ])?;
        Ok(Self { control, descs })
    }
}

impl Collector for FleetCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(f) = self.control.store.as_ref().and_then(|s| s.fleet()) else {
            return Vec::new();
        };
        let one = |i: usize, metrics: Vec<Metric>| described(&self.descs[i], MetricType::GAUGE, metrics);
        let lag = f.replicas.iter().map(|r| gauge(labels(&[("replica", &r.replica)]), r.lag as f64)).collect();
        vec![
            one(0, vec![gauge(vec![], f64::from(u8::from(f.state == "in-step")))]),
            one(1, vec![gauge(vec![], f.applied_revision as f64)]),
            one(2, lag),
            one(3, vec![gauge(vec![], f64::from(u8::from(f.leader.as_deref() == Some(f.replica.as_str()))))]),
        ]
    }
}

/// Deployment metrics: rollouts started, finished (by outcome, with their
/// durations) and active; the times to restore and to commit a change.
pub struct RolloutCollector {
    control: Arc<crate::control::Control>,
    descs: Vec<Desc>,
}

impl RolloutCollector {
    /// A collector over `control`'s rollouts.
    pub fn new(control: Arc<crate::control::Control>) -> Result<Self, prometheus::Error> {
        let descs = descs(&[
            (ROLLOUTS_STARTED_TOTAL, "Rollouts started here, by service and strategy.", &["service", "strategy"][..]),
            (
                ROLLOUTS_FINISHED_TOTAL,
                "Rollouts whose end was written here, by service and outcome.",
                &["service", "outcome"],
            ),
            (
                ROLLOUT_DURATION_SECONDS,
                "How long finished rollouts took, by service and outcome.",
                &["service", "outcome"],
            ),
            (ROLLOUT_ACTIVE, "1 while a rollout of the service has not ended.", &["service"]),
            (
                ROLLOUT_RESTORE_SECONDS,
                "Time to restore: from a rollout's failing verdict to traffic back on the baseline, by service.",
                &["service"],
            ),
            (STATE_COMMIT_SECONDS, "How long commits to the state store took, refused and failed ones included.", &[]),
        ])?;
        Ok(Self { control, descs })
    }
}

/// The descriptions of a collector's families: name, help, label names.
fn descs(list: &[(&str, &str, &[&str])]) -> Result<Vec<Desc>, prometheus::Error> {
    list.iter()
        .map(|(name, help, labels)| {
            Desc::new(
                (*name).into(),
                (*help).into(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
        })
        .collect()
}

/// A family named and explained by `desc`.
fn described(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    named(&desc.fq_name, &desc.help, kind, metrics)
}

impl Collector for RolloutCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use crate::control::rollout::tally::{COMMIT_BUCKETS, DURATION_BUCKETS, RESTORE_BUCKETS};
        let (started, finished, restored) = self.control.tally.read();
        let started =
            started.iter().map(|((svc, strategy), n)| counter(labels(&[("service", svc), ("strategy", strategy)]), *n));
        let ended = finished
            .iter()
            .map(|((svc, outcome), f)| counter(labels(&[("service", svc), ("outcome", outcome)]), f.count));
        let durations = finished
            .iter()
            .map(|((svc, outcome), f)| {
                histogram(labels(&[("service", svc), ("outcome", outcome)]), f, &DURATION_BUCKETS)
            })
            .collect();
        let restores =
            restored.iter().map(|(svc, f)| histogram(labels(&[("service", svc)]), f, &RESTORE_BUCKETS)).collect();
        let running = self.control.running_rollouts();
        let active = self
            .control
            .shared
            .snapshot
            .load()
            .services()
            .iter()
            .map(|s| gauge(labels(&[("service", &s.name)]), f64::from(u8::from(running.contains(&s.name)))))
            .collect();
        vec![
            described(&self.descs[0], MetricType::COUNTER, started.collect()),
            described(&self.descs[1], MetricType::COUNTER, ended.collect()),
            described(&self.descs[2], MetricType::HISTOGRAM, durations),
            described(&self.descs[3], MetricType::GAUGE, active),
            described(&self.descs[4], MetricType::HISTOGRAM, restores),
            described(
                &self.descs[5],
                MetricType::HISTOGRAM,
                vec![histogram(vec![], &self.control.tally.commits(), &COMMIT_BUCKETS)],
            ),
        ]
    }
}

/// A histogram metric of `t` over `bounds`.
fn histogram(labels: Vec<LabelPair>, t: &crate::control::rollout::tally::Timings, bounds: &[f64]) -> Metric {
    let mut h = Histogram::default();
    h.set_sample_count(t.count);
    h.set_sample_sum(t.sum_seconds);
    h.set_bucket(
        bounds
            .iter()
            .zip(t.buckets)
            .map(|(bound, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut m = Metric::default();
    m.set_label(labels);
    m.set_histogram(h);
    m
}
