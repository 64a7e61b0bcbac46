//! How `switchyard ctl` prints: tables, rollout progress, events.

use std::io::Write;
use switchyard::admin::api::{RolloutView, StatsView, StepView};
use switchyard::control::state::Event;

/// A human view of a rollout: status, step progress, weights, figures, decisions.
pub(super) fn rollout_text(r: &RolloutView, stats: Option<&StatsView>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let plan = &r.plan;
    let (cand, base) = (plan["candidate"].as_str().unwrap_or("?"), plan["baseline"].as_str().unwrap_or("?"));
    let weight = u64::from(r.weight);
    let _ = writeln!(out, "rollout of {} ({}): {}", r.service, plan["strategy"].as_str().unwrap_or("?"), r.status);
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }
    if let Some(rules) = r.suspended_rules.as_ref().filter(|a| !a.is_empty()) {
        let n: Vec<String> = rules.iter().map(|i| format!("#{}", i + 1)).collect();
        let _ = writeln!(out, "  suspended rules to {cand}: {} (until the next rollout or `ctl lift`)", n.join(", "));
    }
    let live = r.status == "running" || r.status == "paused";
    let (total, step, in_step) = (r.steps_total, r.step, r.time_in_step_seconds);
    let current = r.current_step.as_ref();
    let hold = current.and_then(|s| s.hold_seconds);
    let bar = |frac: f64| {
        let n = (frac.clamp(0.0, 1.0) * 30.0).round() as usize;
        format!("[{}{}]", "#".repeat(n), ".".repeat(30 - n))
    };
    let step_text = |s: Option<&StepView>| match s {
        Some(StepView { weight: Some(w), hold_seconds: Some(h), .. }) => format!("{cand} at {w}% for {h:.0}s"),
        Some(StepView { pause: Some(true), .. }) => "pause (waits for `ctl rollout promote`)".to_owned(),
        Some(StepView { admit, drain, phase: Some(phase), .. }) if !admit.is_empty() || !drain.is_empty() => {
            let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
            format!("admit {} once ready, drain {} ({phase})", list(admit), list(drain))
        }
        Some(StepView { mirror_percent: Some(p), hold_seconds: Some(h), .. }) => {
            format!("{p}% of the requests mirrored to {cand} (answering no client) for {h:.0}s")
        }
        s => s.and_then(|s| s.phase.clone()).unwrap_or_else(|| "-".to_owned()),
    };
    if total > 0 {
        let _ = writeln!(out, "  step {}/{total}: {}", (step + 1).min(total), step_text(current));
        if let Some(h) = hold.filter(|h| *h > 0.0 && live) {
            let _ = writeln!(out, "  hold {} {:.0}s / {:.0}s", bar(in_step / h), in_step, h);
        }
    } else {
        let phase = current.and_then(|s| s.phase.as_deref()).unwrap_or("?");
        let _ = writeln!(out, "  phase: {phase} ({in_step:.0}s)");
    }
    if live && r.next_step.is_some() {
        let _ = writeln!(out, "  next: {}", step_text(r.next_step.as_ref()));
    }
    let rolling = r.plan.get("strategy").and_then(|v| v.as_str()) == Some("rolling");
    let _ = match rolling {
        true => writeln!(out, "  new endpoints serving: {weight}%  {}", bar(weight as f64 / 100.0)),
        false => writeln!(
            out,
            "  weights: {base} {}%  {cand} {weight}%  {}",
            100 - weight.min(100),
            bar(weight as f64 / 100.0)
        ),
    };
    if let Some(s) = stats {
        for (pool, f) in &s.pools {
            let _ = writeln!(
                out,
                "  {pool:<10} {:>7} req  {:>6.2}% errors  p99 {:.1} ms",
                f.requests,
                f.error_rate * 100.0,
                f.latency_ms.p99
            );
        }
    }
    if !r.decisions.is_empty() {
        let _ = writeln!(out, "  latest decisions:");
        for d in r.decisions.iter().rev().take(5) {
            let _ = writeln!(out, "    {} step {}: {} — {}", d.time, d.step + 1, d.decision, d.why);
        }
    }
    out
}

pub(super) fn print_stats_table(s: &StatsView) {
    let mut rows = vec![["POOL", "REQS", "2xx", "4xx", "5xx", "ERR%", "P50", "P90", "P99", "P999", "MAX(ms)"]
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()];
    for (name, f) in &s.pools {
        let st = |k: &str| f.status.get(k).copied().unwrap_or(0).to_string();
        rows.push(vec![
            name.clone(),
            f.requests.to_string(),
            st("2xx"),
            st("4xx"),
            st("5xx"),
            format!("{:.2}", f.error_rate * 100.0),
            format!("{:.1}", f.latency_ms.p50),
            format!("{:.1}", f.latency_ms.p90),
            format!("{:.1}", f.latency_ms.p99),
            format!("{:.1}", f.latency_ms.p999),
            format!("{:.1}", f.latency_ms.max),
        ]);
    }
    print_table(&rows);
}

pub(super) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub(super) fn event_line(e: &Event) -> String {
    format!(
        "#{:<5} {}  {:<14} {:<10} {}{}{}",
        e.seq,
        e.time,
        e.kind,
        e.actor,
        if e.outcome == "refused" { "REFUSED: " } else { "" },
        e.message,
        e.reason.as_ref().map(|r| format!(" (reason: {r})")).unwrap_or_default()
    )
}

pub(super) fn print_event(body: &[u8], json: bool) -> anyhow::Result<()> {
    if json {
        return print_raw(body);
    }
    let e: Event = serde_json::from_slice(body)?;
    println!("{}", e.message);
    Ok(())
}

pub(super) fn print_raw(body: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(body)?;
    out.write_all(b"\n")?;
    Ok(())
}
