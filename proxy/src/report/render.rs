//! The report for people: Markdown (for a wiki or a pull request) and a
//! standalone HTML page (to mail or attach). Both have the same sections:
//! executive summary, environment and service status, deployment history,
//! deployment metrics (DORA), monitoring and alerting, recommendations.

use super::dora::{human, Band, Measure};
use super::{Environment, Report};
use std::fmt::Write;

/// One table: a header row and rows of cells (plain text; escaped by the renderer).
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// A piece of the report.
enum Block {
    Heading(u8, String),
    Para(String),
    List(Vec<String>),
    Table(Table),
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    for b in blocks(r) {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "{} {}\n", "#".repeat(level.into()), md(&text));
            }
            Block::Para(text) => {
                let _ = writeln!(out, "{}\n", md(&text));
            }
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(out, "- {}", md(&i));
                }
                out.push('\n');
            }
            Block::Table(t) => {
                let _ = writeln!(out, "| {} |", t.head.join(" | "));
                let _ = writeln!(out, "|{}", " --- |".repeat(t.head.len()));
                for row in t.rows {
                    let cells: Vec<String> = row.iter().map(|c| md(c).replace('|', "\\|")).collect();
                    let _ = writeln!(out, "| {} |", cells.join(" | "));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// The report as one HTML page, styles inline, no scripts.
pub fn html(r: &Report) -> String {
    let mut out = String::from(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>Deployment report</title><style>",
        "body{font:14px/1.45 system-ui,sans-serif;color:#1d2430;max-width:72rem;margin:2rem auto;padding:0 1rem}",
        "table{border-collapse:collapse;margin:.5rem 0 1rem;display:block;overflow-x:auto}",
        "th,td{border-bottom:1px solid #dde1e7;padding:.3rem .6rem;text-align:left;white-space:nowrap}",
        "th{color:#5b6575;font-size:.85rem}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}",
        "</style></head><body>\n"
    ));
    for b in blocks(r) {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "<h{level}>{}</h{level}>", esc(&text));
            }
            Block::Para(text) => {
                let _ = writeln!(out, "<p>{}</p>", esc(&text));
            }
            Block::List(items) => {
                out.push_str("<ul>");
                for i in items {
                    let _ = write!(out, "<li>{}</li>", esc(&i));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(t) => {
                out.push_str("<table><thead><tr>");
                for h in &t.head {
                    let _ = write!(out, "<th>{}</th>", esc(h));
                }
                out.push_str("</tr></thead><tbody>");
                for row in t.rows {
                    out.push_str("<tr>");
                    for c in row {
                        let _ = write!(out, "<td>{}</td>", esc(&c));
                    }
                    out.push_str("</tr>");
                }
                out.push_str("</tbody></table>\n");
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn blocks(r: &Report) -> Vec<Block> {
    let names: Vec<&str> = r.environments.iter().map(|e| e.name.as_str()).collect();
    let mut b = vec![
        Block::Heading(1, "Deployment Management Report".into()),
        Block::Para(format!(
            "Environments: {}. Period: {} to {} ({}).",
            names.join(", "),
            minute(&r.since),
            minute(&r.generated),
            human(r.period_days * 86400.0)
        )),
        Block::Heading(2, "Executive summary".into()),
    ];
    b.push(Block::List(r.environments.iter().map(summary).collect()));
    b.push(Block::Heading(2, "Environment and service status".into()));
    for e in &r.environments {
        if r.environments.len() > 1 {
            b.push(Block::Heading(3, e.name.clone()));
        }
        b.push(Block::Table(Table {
            head: cols(&[
                "service",
                "pool",
                "version",
                "share",
                "endpoints up",
                "requests",
                "error rate",
                "p99",
                "health",
            ]),
            rows: e
                .services
                .iter()
                .flat_map(|s| {
                    s.pools.iter().map(|p| {
                        vec![
                            s.name.clone(),
                            p.name.clone(),
                            p.version.clone().unwrap_or_else(|| "—".into()),
                            format!("{:.0} %", p.share_percent),
                            format!("{}/{}", p.endpoints_up, p.endpoints),
                            p.requests.to_string(),
                            format!("{:.2} %", p.error_rate * 100.0),
                            format!("{:.1} ms", p.p99_ms),
                            p.health_score.to_string(),
                        ]
                    })
                })
                .collect(),
        }));
    }
    b.push(Block::Heading(2, "Deployment history".into()));
    let many = r.environments.len() > 1;
    let mut head = cols(&["date", "version", "service", "strategy", "status", "duration", "rollback", "reason"]);
    if many {
        head.insert(0, "environment".into());
    }
    let mut rows = Vec::new();
    for e in &r.environments {
        for d in &e.deployments {
            let x = &d.rollout;
            let mut row = vec![
                minute(&x.started),
                x.version.clone().unwrap_or_else(|| x.candidate.clone()),
                d.service.clone(),
                x.strategy.clone(),
                x.status.clone(),
                human(x.duration_seconds),
                x.rollback.clone(),
                x.reason.clone().unwrap_or_default(),
            ];
            if many {
                row.insert(0, e.name.clone());
            }
            rows.push(row);
        }
    }
    if rows.is_empty() {
        b.push(Block::Para("No deployments in the period.".into()));
    } else {
        b.push(Block::Table(Table { head, rows }));
    }
    b.push(Block::Heading(2, "Deployment metrics (DORA)".into()));
    let mut head = cols(&["measure"]);
    head.extend(names.iter().map(|n| n.to_string()));
    let measure = |label: &str, pick: fn(&Environment) -> &Measure| {
        let mut row = vec![label.to_owned()];
        row.extend(r.environments.iter().map(|e| {
            let m = pick(e);
            format!("{} ({}; {})", m.shown(), band(m.band), m.basis)
        }));
        row
    };
    b.push(Block::Table(Table {
        head,
        rows: vec![
            measure("deployment frequency", |e| &e.dora.deployment_frequency),
            measure("lead time for changes", |e| &e.dora.lead_time),
            measure("change failure rate", |e| &e.dora.change_failure_rate),
            measure("time to restore", |e| &e.dora.time_to_restore),
        ],
    }));
    b.push(Block::Heading(2, "Monitoring and alerting".into()));
    let mut rows = Vec::new();
    for e in &r.environments {
        for a in &e.alerts {
            let when = if a.scope == "now" { "now" } else { "in the period" };
            let fired = if a.fired == 0 { format!("did not fire {when}") } else { format!("{} × {when}", a.fired) };
            let mut row = vec![a.name.clone(), a.condition.clone(), fired, a.details.join("; ")];
            if many {
                row.insert(0, e.name.clone());
            }
            rows.push(row);
        }
    }
    let mut head = cols(&["alert", "condition", "fired", "details"]);
    if many {
        head.insert(0, "environment".into());
    }
    b.push(Block::Table(Table { head, rows }));
    b.push(Block::Heading(2, "Recommendations".into()));
    let recs: Vec<String> = r
        .environments
        .iter()
        .flat_map(|e| e.recommendations.iter().map(move |x| if many { format!("{}: {x}", e.name) } else { x.clone() }))
        .collect();
    b.push(if recs.is_empty() { Block::Para("Nothing stands out.".into()) } else { Block::List(recs) });
    b
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// One line of the executive summary for an environment.
fn summary(e: &Environment) -> String {
    let mut strategies: Vec<&str> = e.deployments.iter().map(|d| d.rollout.strategy.as_str()).collect();
    strategies.sort_unstable();
    strategies.dedup();
    let firing: Vec<&str> =
        e.alerts.iter().filter(|a| a.scope == "now" && a.fired > 0).map(|a| a.name.as_str()).collect();
    let running = e.deployments.iter().filter(|d| d.ended.is_none()).count();
    let status = match (firing.is_empty(), running) {
        (false, _) => format!("attention: {}", firing.join(", ")),
        (true, 0) => "healthy".into(),
        (true, n) => format!("healthy, {n} rollout(s) running"),
    };
    let recent: Vec<String> = e
        .deployments
        .iter()
        .take(3)
        .map(|d| {
            format!(
                "{} {} {}",
                d.service,
                d.rollout.version.as_deref().unwrap_or(&d.rollout.candidate),
                d.rollout.status
            )
        })
        .collect();
    format!(
        "{}: {status}; {} deployment(s) ({} failed), strategies: {}; change failure rate {}, frequency {}; recent: {}.",
        e.name,
        e.deployments.len(),
        e.deployments.iter().filter(|d| super::dora::is_failure(&d.rollout)).count(),
        if strategies.is_empty() { "none".into() } else { strategies.join(", ") },
        e.dora.change_failure_rate.shown(),
        e.dora.deployment_frequency.shown(),
        if recent.is_empty() { "none".into() } else { recent.join(", ") }
    )
}

fn band(b: Option<Band>) -> &'static str {
    match b {
        Some(Band::Elite) => "elite",
        Some(Band::High) => "high",
        Some(Band::Medium) => "medium",
        Some(Band::Low) => "low",
        None => "no band",
    }
}

/// An RFC 3339 time to the minute, for people: `2026-12-01 19:28`.
fn minute(t: &str) -> String {
    t.chars().take(16).collect::<String>().replace('T', " ")
}

/// Text safe in Markdown: no raw HTML, no line breaks inside cells.
fn md(s: &str) -> String {
    s.replace('\n', " ").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text safe in HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
