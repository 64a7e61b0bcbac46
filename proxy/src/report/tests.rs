use super::dora::{Band, Dora};
use super::*;

fn ended(status: &str, started: &str, ended: &str, extra: impl FnOnce(&mut Ended)) -> Deployment {
    let mut e = Ended {
        status: status.into(),
        strategy: "canary".into(),
        baseline: "stable".into(),
        candidate: "canary".into(),
        version: Some("v2".into()),
        started: started.into(),
        rollback: if status == "promoted" { "none" } else { "auto" }.into(),
        step: 1,
        steps_total: 3,
        ..Ended::default()
    };
    extra(&mut e);
    Deployment { service: "web".into(), ended: Some(ended.into()), rollout: e }
}

const SINCE: &str = "2026-11-24T00:00:00.000Z";
const NOW: &str = "2026-12-01T00:00:00.000Z";

#[test]
fn the_four_measures_and_their_bands() {
    let ds = vec![
        ended("promoted", "2026-11-25T10:00:00.000Z", "2026-11-25T10:30:00.000Z", |e| {
            e.commit_time = Some("2026-11-25T09:50:00.000Z".into()) // 40 min lead
        }),
        ended("promoted", "2026-11-26T10:00:00.000Z", "2026-11-26T11:00:00.000Z", |e| {
            e.commit_time = Some("2026-11-25T11:00:00.000Z".into()) // a day
        }),
        ended("rolled-back", "2026-11-27T10:00:00.000Z", "2026-11-27T10:05:00.000Z", |e| {
            e.restore_seconds = Some(0.25);
            e.reason = Some("error rate 30.0% above 20.0% (canary 60 req)".into());
        }),
        ended("promoted", "2026-11-28T10:00:00.000Z", "2026-11-28T10:20:00.000Z", |_| {}),
    ];
    let d = Dora::measure(&ds, SINCE, NOW);
    // 3 promoted in 7 days: high (at least weekly, not daily).
    assert!((d.deployment_frequency.value.unwrap() - 3.0 / 7.0).abs() < 1e-9);
    assert_eq!(d.deployment_frequency.band, Some(Band::High));
    // The median of 40 min and 24 h (two values: their mean).
    let lead = d.lead_time.value.unwrap();
    assert!((lead - (2400.0 + 86400.0) / 2.0).abs() < 1e-6, "{lead}");
    assert_eq!(d.lead_time.band, Some(Band::High));
    assert_eq!(d.change_failure_rate.value, Some(0.25));
    assert_eq!(d.change_failure_rate.band, Some(Band::High));
    assert_eq!(d.time_to_restore.value, Some(0.25));
    assert_eq!(d.time_to_restore.band, Some(Band::Elite));
    assert!(d.lead_time.basis.contains("2 promoted rollout(s) with a commit time, of 3"), "{}", d.lead_time.basis);
}

#[test]
fn an_empty_period_has_no_values_to_band_but_frequency() {
    let d = Dora::measure(&[], SINCE, NOW);
    assert_eq!((d.deployment_frequency.value, d.deployment_frequency.band), (Some(0.0), Some(Band::Low)));
    assert_eq!((d.lead_time.value, d.change_failure_rate.value, d.time_to_restore.value), (None, None, None));
    assert_eq!(d.change_failure_rate.shown(), "—");
}

#[test]
fn running_rollouts_are_deployments_but_not_measured() {
    let mut running = ended("running", "2026-11-30T10:00:00.000Z", "", |_| {});
    running.ended = None;
    let d = Dora::measure(&[running], SINCE, NOW);
    assert_eq!(d.change_failure_rate.value, None);
}

fn env(name: &str, deployments: Vec<Deployment>) -> Report {
    Report {
        generated: NOW.into(),
        since: SINCE.into(),
        period_days: 7.0,
        environments: vec![Environment::new(name.into(), Vec::new(), deployments, Vec::new(), (SINCE, NOW))],
    }
}

#[test]
fn merging_keeps_environments_apart_and_counts_a_fleets_deployment_once() {
    let a = ended("promoted", "2026-11-25T10:00:00.000Z", "2026-11-25T10:30:00.000Z", |_| {});
    let b = ended("rolled-back", "2026-11-26T10:00:00.000Z", "2026-11-26T10:05:00.000Z", |_| {});
    let mut still_running = b.clone();
    still_running.ended = None;
    still_running.rollout.status = "running".into();
    let merged = Report::merge(vec![
        env("production", vec![a.clone(), still_running]),
        env("production", vec![a.clone(), b.clone()]), // another replica of the same fleet
        env("staging", vec![a.clone()]),
    ])
    .unwrap();
    assert_eq!(merged.environments.len(), 2);
    let prod = &merged.environments[0];
    assert_eq!(prod.deployments.len(), 2, "{:#?}", prod.deployments);
    assert_eq!(prod.deployments[0].rollout.status, "rolled-back", "newest first, the ended record kept");
    assert_eq!(prod.dora.change_failure_rate.value, Some(0.5));
    assert_eq!(merged.environments[1].dora.change_failure_rate.value, Some(0.0));
}

#[test]
fn recommendations_name_the_most_frequent_rollback_reason_and_stalling_steps() {
    let fail = |day: u32, reason: &str| {
        ended("rolled-back", &format!("2026-11-2{day}T10:00:00.000Z"), &format!("2026-11-2{day}T10:05:00.000Z"), |e| {
            e.reason = Some(reason.into())
        })
    };
    let ds = vec![
        fail(5, "error rate 30.0% above 20.0%"),
        fail(6, "error rate 41.5% above 20.0%"),
        fail(7, "p99 812 ms above 500 ms"),
    ];
    let stalls = (1..=2)
        .map(|i| Stall { service: "web".into(), step: 2, time: format!("2026-11-2{i}T00:00:00.000Z") })
        .collect();
    let e = Environment::new("production".into(), Vec::new(), ds, stalls, (SINCE, NOW));
    let recs = e.recommendations.join("\n");
    assert!(recs.contains("(2 of 3 automatic rollbacks): error rate N% above N%."), "{recs}");
    assert!(recs.contains("Step 2 of web paused for want of a verdict in 2 of 3 rollouts"), "{recs}");
    assert!(recs.contains("Change failure rate is 100.0 %"), "{recs}");
    let fired = &e.alerts.iter().find(|a| a.name == "SwitchyardRolloutRolledBack").unwrap();
    assert_eq!(fired.fired, 3);
}

#[test]
fn renderings_escape_what_operators_typed() {
    let d = ended("rolled-back", "2026-11-25T10:00:00.000Z", "2026-11-25T10:05:00.000Z", |e| {
        e.version = Some("<script>alert(1)</script>".into());
        e.reason = Some("a | b".into());
    });
    let r = env("production", vec![d]);
    let html = render::html(&r);
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"), "{html}");
    let md = render::markdown(&r);
    assert!(md.contains("a \\| b") && !md.contains("<script>"), "{md}");
    for section in [
        "Executive summary",
        "Deployment history",
        "Deployment metrics (DORA)",
        "Monitoring and alerting",
        "Recommendations",
    ] {
        assert!(md.contains(&format!("## {section}")) && html.contains(&format!("<h2>{section}</h2>")), "{section}");
    }
}

#[test]
fn statuses_are_named_as_the_api_serialises_them() {
    use crate::control::rollout::Status;
    for s in [Status::Running, Status::Paused, Status::Promoted, Status::RolledBack, Status::Aborted] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}
