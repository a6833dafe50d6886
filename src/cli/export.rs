//! A sweep's report to hand around: `--output csv` (one row per instance
//! decided, every one of them: the notification's caps do not apply) and
//! `--output html` (one self-contained page: no network fetch, no script;
//! charts are inline SVG).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::finding::iso8601;
use crate::report::{InstanceReport, Outcome, RegionSweep, Report};
use crate::v1_callers::InstanceCallers;

/// The CSV's columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "account",
    "region",
    "instance_id",
    "outcome",
    "action",
    "would",
    "http_tokens",
    "http_endpoint",
    "hop_limit",
    "image_id",
    "instance_profile",
    "launch_time",
    "exemption",
    "findings",
    "error",
    "launcher",
    "metadata_no_token",
    "imdsv1_software",
    "imdsv1_hypothesis",
    "credential_theft",
];

/// What CloudTrail showed of each instance (`LOOKUP_IMDSV1_CALLERS`), by
/// region and instance (an instance id names one instance; a row's
/// account may be the one EC2 named, which a region's summary leaves out).
fn callers_of(report: &Report) -> HashMap<(String, String), &InstanceCallers> {
    let mut by = HashMap::new();
    for region in report.sweep.iter().flat_map(|s| &s.regions) {
        for i in region.imdsv1_callers.iter().flat_map(|m| &m.instances) {
            by.insert((region.region.clone(), i.instance_id.clone()), i);
        }
    }
    by
}

/// `aws-cli/1.16.102 (role app, 3 calls); ...`, the hypotheses, and the
/// addresses its credentials were used from elsewhere.
fn callers_cells(i: Option<&&InstanceCallers>) -> [String; 3] {
    let Some(i) = i else {
        return Default::default();
    };
    let software = i
        .seen
        .callers
        .iter()
        .map(|c| format!("{} (role {}, {} calls)", c.agent, c.role, c.calls))
        .collect::<Vec<_>>()
        .join("; ");
    let hypotheses = i
        .seen
        .callers
        .iter()
        .map(|c| format!("{} [{}]", c.hypothesis.text, c.hypothesis.source))
        .collect::<Vec<_>>()
        .join("; ");
    let theft = i
        .seen
        .suspects
        .iter()
        .map(|s| format!("{} (role {}, {} calls)", s.address, s.role, s.calls))
        .collect::<Vec<_>>()
        .join("; ");
    [software, hypotheses, theft]
}

/// One row per instance decided (RFC 4180, by the `csv` crate), with what
/// CloudTrail showed of it when it was asked.
pub fn csv(report: &Report, rows: &[InstanceReport]) -> Result<String, String> {
    let callers = callers_of(report);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS).map_err(|e| e.to_string())?;
    for r in rows {
        let key = (r.region.clone().unwrap_or_default(), r.instance_id.clone());
        let [software, hypotheses, theft] = callers_cells(callers.get(&key));
        let before = r.before.clone().unwrap_or_default();
        let record = [
            r.account.clone().unwrap_or_default(),
            r.region.clone().unwrap_or_default(),
            r.instance_id.clone(),
            r.outcome.as_str().to_string(),
            r.action.to_string(),
            r.would.clone().unwrap_or_default(),
            before.http_tokens.unwrap_or_default(),
            before.http_endpoint.unwrap_or_default(),
            before
                .http_put_response_hop_limit
                .map(|h| h.to_string())
                .unwrap_or_default(),
            r.image_id.clone().unwrap_or_default(),
            r.instance_profile.clone().unwrap_or_default(),
            r.launch_time.map(iso8601).unwrap_or_default(),
            r.exemption
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            r.findings.join("; "),
            r.error.clone().unwrap_or_default(),
            r.launcher.clone().unwrap_or_default(),
            r.metadata_no_token
                .map(|n| n.to_string())
                .unwrap_or_default(),
            software,
            hypotheses,
            theft,
        ];
        w.write_record(record.iter().map(|f| spreadsheet_safe(f)))
            .map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first)
/// is kept as text: event text (a user agent, a tag) must not become one.
fn spreadsheet_safe(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// Text for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a sweep's page shows, in the order a reader needs it.
const SHOWN: [(Outcome, &str, &str); 5] = [
    (Outcome::Failed, "failed", "#b3261e"),
    (Outcome::Flagged, "flagged", "#e8710a"),
    (Outcome::Exempt, "exempt", "#8e6fc1"),
    (Outcome::Remediated, "remediated", "#1e8e3e"),
    (Outcome::Compliant, "compliant", "#9aa0a6"),
];

fn place(r: &RegionSweep) -> String {
    match &r.account {
        Some(a) => format!("{a}/{}", r.region),
        None => r.region.clone(),
    }
}

/// One self-contained page: the totals, a chart of what is left per
/// account-region, readiness with its reasons and the account defaults per
/// account-region, the sources ranked by instances, and every instance
/// that is not compliant.
pub fn html(report: &Report, rows: &[InstanceReport], generated_at: u64) -> String {
    let sweep = report.sweep.clone().unwrap_or_default();
    let mut totals: BTreeMap<Outcome, u64> = BTreeMap::new();
    let mut examined = 0;
    for r in &sweep.regions {
        examined += r.examined;
        for (o, n) in &r.counts {
            *totals.entry(*o).or_default() += n;
        }
    }
    let ready = sweep
        .regions
        .iter()
        .filter(|r| r.readiness.needs_nothing())
        .count();
    let mut h = String::new();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n",
        "<title>imds-guard sweep report</title>\n<style>\n",
        "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px 32px;color:#202124;max-width:1200px}\n",
        "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dadce0;padding-bottom:4px}\n",
        ".meta{color:#5f6368;margin-bottom:16px}\n",
        ".tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{border:1px solid #dadce0;border-radius:8px;padding:10px 16px;min-width:110px}\n",
        ".tile b{display:block;font-size:22px}.tile span{color:#5f6368}\n",
        "table{border-collapse:collapse;width:100%;margin-top:6px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}\n",
        "th{background:#f1f3f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\n",
        ".ready{color:#1e8e3e;font-weight:600}.notready{color:#b3261e;font-weight:600}.unknown{color:#e8710a;font-weight:600}\n",
        ".legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}\n",
        "code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}\n",
        "td.src{overflow-wrap:anywhere;font-size:12px;color:#5f6368;max-width:260px}\n",
        "</style>\n</head>\n<body>\n",
    ));
    let accounts = sweep
        .regions
        .iter()
        .filter_map(|r| r.account.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let _ = write!(
        h,
        "<h1>imds-guard sweep report</h1>\n<div class=\"meta\">Generated {} &middot; mode <b>{}</b> &middot; {} account-region(s){} &middot; {} ready for HttpTokensEnforced</div>\n",
        esc(&iso8601(generated_at)),
        esc(report.mode.as_str()),
        sweep.regions.len(),
        if accounts > 0 {
            format!(" in {accounts} account(s)")
        } else {
            String::new()
        },
        ready
    );

    // Totals.
    h.push_str("<div class=\"tiles\" id=\"totals\">\n");
    let _ = writeln!(
        h,
        "<div class=\"tile\"><b>{examined}</b><span>examined</span></div>"
    );
    for (o, label, colour) in SHOWN {
        let _ = writeln!(
            h,
            "<div class=\"tile\" style=\"border-left:4px solid {colour}\"><b>{}</b><span>{label}</span></div>",
            totals.get(&o).copied().unwrap_or(0)
        );
    }
    h.push_str("</div>\n");

    // Chart: IMDSv1 instances (and what was done) per account-region.
    h.push_str("<h2>Instances by outcome, per account and region</h2>\n");
    h.push_str(&bar_chart(&sweep.regions));

    // Readiness and defaults.
    h.push_str("<h2>Readiness for HttpTokensEnforced</h2>\n<table id=\"regions\">\n<thead><tr><th>Account/region</th><th>Examined</th>");
    for (_, label, _) in SHOWN {
        let _ = write!(h, "<th>{}</th>", esc(label));
    }
    h.push_str("<th>Account default</th><th>Readiness</th><th>Why</th></tr></thead>\n<tbody>\n");
    for r in &sweep.regions {
        let verdict = r.readiness.verdict.as_str();
        let class = if r.readiness.needs_nothing() {
            "ready"
        } else if verdict == "unknown" {
            "unknown"
        } else {
            "notready"
        };
        let defaults = r
            .account_defaults
            .as_ref()
            .map(|d| {
                format!(
                    "HttpTokens={}{}",
                    d.http_tokens.as_deref().unwrap_or("no-preference"),
                    d.http_tokens_enforced
                        .as_deref()
                        .map(|e| format!(", HttpTokensEnforced={e}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "unread".into());
        let mut why: Vec<String> = r.readiness.reasons.clone();
        why.extend(r.errors.iter().cloned());
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td>",
            esc(&place(r)),
            r.examined
        );
        for (o, _, _) in SHOWN {
            let _ = write!(h, "<td class=\"n\">{}</td>", r.count(o));
        }
        let _ = writeln!(
            h,
            "<td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            esc(&defaults),
            esc(verdict),
            why.iter().map(|w| esc(w)).collect::<Vec<_>>().join("<br>")
        );
    }
    h.push_str("</tbody>\n</table>\n");

    // Sources.
    if !sweep.sources.is_empty() {
        h.push_str("<h2>Sources that launch IMDSv1 instances</h2>\n<table id=\"sources\">\n<thead><tr><th>Source</th><th>Where</th><th>Instances</th><th>Outcome</th><th>Action</th><th>Owner</th><th>Launcher</th><th>Lasting fix</th></tr></thead>\n<tbody>\n");
        for s in &sweep.sources {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.label()),
                esc(&format!(
                    "{}/{}",
                    s.account.as_deref().unwrap_or(""),
                    s.region.as_deref().unwrap_or("")
                )),
                s.instances,
                s.outcome,
                esc(&s.action),
                esc(s.owner.as_deref().unwrap_or("")),
                esc(s.launcher.as_deref().unwrap_or("")),
                esc(s.setting.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    if let Some(r) = &sweep.native_enforcement {
        native_enforcement(&mut h, r);
    }
    last_mile(&mut h, &sweep.regions);

    // Instances.
    let listed: Vec<&InstanceReport> = rows
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Compliant | Outcome::Gone))
        .collect();
    let _ = writeln!(
        h,
        "<h2>Instances not compliant when swept ({})</h2>",
        listed.len()
    );
    h.push_str("<table id=\"instances\">\n<thead><tr><th>Instance</th><th>Where</th><th>Outcome</th><th>Action</th><th>Found</th><th>MetadataNoToken</th><th>Launcher</th><th>Profile</th></tr></thead>\n<tbody>\n");
    for r in listed {
        let found = r
            .before
            .as_ref()
            .map(|b| {
                format!(
                    "HttpTokens={}, hop {}",
                    b.http_tokens.as_deref().unwrap_or("?"),
                    b.http_put_response_hop_limit
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "?".into())
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td><code>{}/{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.instance_id),
            esc(r.account.as_deref().unwrap_or("")),
            esc(r.region.as_deref().unwrap_or("")),
            esc(r.outcome.as_str()),
            esc(&r.error.clone().unwrap_or_else(|| r.action.to_string())),
            esc(&found),
            r.metadata_no_token
                .map(|n| esc(&n.to_string()))
                .unwrap_or_else(|| "not read".into()),
            esc(r.launcher.as_deref().unwrap_or("")),
            if r.instance_profile.is_some() { "yes" } else { "" }
        );
    }
    h.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    h
}

/// The way out: whole units ready first, then each account-region with its
/// next step and every blocker named.
fn native_enforcement(h: &mut String, r: &crate::rollout::Rollout) {
    let _ = writeln!(
        h,
        "<h2>Native enforcement: where AWS's HttpTokensEnforced can go on</h2>\n<div class=\"meta\">{} account-region(s) ready now. Ready means nothing left at optional, no source asking for it, no exemption or grant in force, IMDSv1 use measured as none (MetadataNoToken and CloudTrail's ec2RoleDelivery) and the account default at required. Switching it on is a person's step: <code>imds-guard enforce-native</code>.</div>",
        r.ready()
    );
    h.push_str("<table id=\"native-units\">\n<thead><tr><th>Unit</th><th>Account-regions</th><th>Ready</th><th>Enforced</th><th>Blocked</th><th>Status</th><th>Blocked by</th></tr></thead>\n<tbody>\n");
    for u in &r.units {
        let by: Vec<String> = u
            .blockers
            .iter()
            .map(|(k, n)| {
                format!(
                    "{} ({n})",
                    serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&u.unit),
            u.account_regions,
            u.ready,
            u.enforced,
            u.blocked,
            status_class(u.status),
            u.status.as_str(),
            esc(&by.join(", "))
        );
    }
    h.push_str("</tbody>\n</table>\n");
    h.push_str("<table id=\"native-enforcement\">\n<thead><tr><th>Account/region</th><th>Unit</th><th>Status</th><th>Next step</th><th>Blockers</th></tr></thead>\n<tbody>\n");
    for s in &r.account_regions {
        let place = match &s.account {
            Some(a) => format!("{a}/{}", s.region),
            None => s.region.clone(),
        };
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&place),
            esc(s.unit.as_deref().unwrap_or("")),
            status_class(s.status),
            s.status.as_str(),
            if s.status == crate::rollout::Status::Ready {
                format!("<code>{}</code>", esc(&s.next))
            } else {
                esc(&s.next)
            },
            s.blockers
                .iter()
                .map(|b| esc(&b.detail))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    h.push_str("</tbody>\n</table>\n");
    if r.omitted > 0 {
        let _ = writeln!(
            h,
            "<div class=\"meta\">{} more account-region(s), counted in their units.</div>",
            r.omitted
        );
    }
}

fn status_class(s: crate::rollout::Status) -> &'static str {
    match s {
        crate::rollout::Status::Ready | crate::rollout::Status::Enforced => "ready",
        crate::rollout::Status::Blocked => "notready",
    }
}

/// The last mile (`LOOKUP_IMDSV1_CALLERS`): possible credential theft
/// first, then the software still using IMDSv1-delivered credentials, each
/// with its hypothesis and source; nothing when CloudTrail was not asked.
fn last_mile(h: &mut String, regions: &[RegionSweep]) {
    let asked: Vec<&RegionSweep> = regions
        .iter()
        .filter(|r| r.imdsv1_callers.is_some())
        .collect();
    if asked.is_empty() {
        return;
    }
    let each = || {
        asked.iter().flat_map(|r| {
            r.imdsv1_callers
                .iter()
                .flat_map(|m| &m.instances)
                .map(move |i| (*r, i))
        })
    };
    if each().any(|(_, i)| !i.seen.suspects.is_empty()) {
        h.push_str("<h2>Possible credential theft (IMDSv1-delivered credentials used elsewhere)</h2>\n<table id=\"credential-theft\">\n<thead><tr><th>Instance</th><th>Where</th><th>Role</th><th>Used from</th><th>Calls</th><th>Last seen</th><th>Example</th></tr></thead>\n<tbody>\n");
        for (r, i) in each() {
            for s in &i.seen.suspects {
                let _ = writeln!(
                    h,
                    "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&i.instance_id), esc(&place(r)), esc(&s.role), esc(&s.address), s.calls, esc(&iso8601(s.last_seen)), esc(&s.example)
                );
            }
        }
        h.push_str("</tbody>\n</table>\n");
    }
    let asked_n: u64 = asked
        .iter()
        .filter_map(|r| r.imdsv1_callers.as_ref())
        .map(|m| m.asked)
        .sum();
    let not_asked: u64 = asked
        .iter()
        .filter_map(|r| r.imdsv1_callers.as_ref())
        .map(|m| m.not_asked)
        .sum();
    let _ = writeln!(
        h,
        "<h2>Software still using IMDSv1-delivered credentials (CloudTrail)</h2>\n<div class=\"meta\">{asked_n} instance(s) left at optional asked this run, {not_asked} not yet. Not seen here: data events, metadata reads that fetch no credentials, calls in regions not swept, calls older than the lookback (NO_TOKEN_LOOKBACK_HOURS, at most 90 days).</div>"
    );
    h.push_str("<table id=\"imdsv1-callers\">\n<thead><tr><th>Instance</th><th>Where</th><th>Software</th><th>Role</th><th>Calls</th><th>Last seen</th><th>Example</th><th>Hypothesis</th><th>Source</th></tr></thead>\n<tbody>\n");
    for (r, i) in each() {
        for c in &i.seen.callers {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"src\">{}</td></tr>",
                esc(&i.instance_id), esc(&place(r)), esc(&c.agent), esc(&c.role), c.calls, esc(&iso8601(c.last_seen)), esc(&c.example), esc(&c.hypothesis.text), esc(&c.hypothesis.source)
            );
        }
    }
    h.push_str("</tbody>\n</table>\n");
}

/// A horizontal stacked bar per account-region: failed, flagged, exempt,
/// remediated (compliant instances would dwarf them and are in the table).
fn bar_chart(regions: &[RegionSweep]) -> String {
    const LABEL_W: usize = 260;
    const BAR_W: usize = 620;
    const ROW_H: usize = 22;
    let shown = &SHOWN[..4];
    let max = regions
        .iter()
        .map(|r| shown.iter().map(|(o, _, _)| r.count(*o)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let height = regions.len() * ROW_H + 40;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg id=\"chart-outcomes\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"Instances by outcome per account and region\">",
        LABEL_W + BAR_W + 60
    );
    for (i, r) in regions.iter().enumerate() {
        let y = i * ROW_H + 4;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\" font-family=\"monospace\">{}</text>",
            LABEL_W - 8,
            y + 14,
            esc(&place(r))
        );
        let mut x = LABEL_W as f64;
        let mut total = 0;
        for (o, label, colour) in shown {
            let n = r.count(*o);
            if n == 0 {
                continue;
            }
            total += n;
            let w = n as f64 / max as f64 * BAR_W as f64;
            let _ = writeln!(
                s,
                "<rect class=\"bar\" data-outcome=\"{label}\" x=\"{x:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"><title>{} {label}: {n}</title></rect>",
                w.max(1.0),
                ROW_H - 6,
                esc(&place(r))
            );
            x += w;
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{total}</text>",
            x + 6.0,
            y + 14
        );
    }
    let ly = regions.len() * ROW_H + 24;
    let mut lx = LABEL_W;
    for (_, label, colour) in shown {
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{label}</text>",
            ly - 9,
            lx + 14,
            ly
        );
        lx += 100;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::event::MetadataOptions;
    use crate::policy::{Readiness, ReadinessVerdict};
    use crate::report::{Idle, Status, SweepSummary};

    fn rows(n: usize) -> Vec<InstanceReport> {
        (0..n)
            .map(|i| {
                let outcome = match i % 3 {
                    0 => Outcome::Flagged,
                    1 => Outcome::Remediated,
                    _ => Outcome::Compliant,
                };
                let mut r = InstanceReport::new(&format!("i-{i:017x}"), outcome, Idle::None);
                r.account = Some("111122223333".into());
                r.region = Some("eu-west-1".into());
                r.before = Some(MetadataOptions {
                    http_tokens: Some("optional".into()),
                    http_put_response_hop_limit: Some(2),
                    ..MetadataOptions::default()
                });
                r
            })
            .collect()
    }

    fn report() -> Report {
        let mut a = RegionSweep::new("eu-west-1");
        a.account = Some("111122223333".into());
        a.examined = 30;
        a.counts.insert(Outcome::Flagged, 10);
        a.counts.insert(Outcome::Remediated, 10);
        a.counts.insert(Outcome::Compliant, 10);
        a.readiness = Readiness {
            verdict: ReadinessVerdict::NotReady,
            reasons: vec!["10 instance(s) still at optional <script>".into()],
        };
        a.imdsv1_callers = Some(last_mile_of("i-00000000000000000"));
        let mut b = RegionSweep::new("us-east-1");
        b.account = Some("111122223333".into());
        b.readiness = Readiness {
            verdict: ReadinessVerdict::Ready,
            reasons: vec![],
        };
        b.account_defaults = Some(crate::policy::AccountDefaults {
            http_tokens: Some("required".into()),
            ..Default::default()
        });
        b.imdsv1_measured = crate::report::Measured {
            metadata_no_token: true,
            credentials: true,
        };
        let mut r = Report::handled(Status::Swept, Mode::Notify, Default::default());
        let regions = vec![a, b];
        let native_enforcement = Some(crate::rollout::Rollout::of(
            regions
                .iter()
                .map(|r| crate::rollout::step(&r.rollout_facts(&[])))
                .collect(),
        ));
        r.sweep = Some(SweepSummary {
            regions,
            native_enforcement,
            ..SweepSummary::default()
        });
        r
    }

    /// One instance whose old CLI used IMDSv1-delivered credentials, and
    /// whose credentials were used from elsewhere too.
    fn last_mile_of(id: &str) -> crate::v1_callers::LastMile {
        use crate::v1_callers::*;
        let call = |source: &str| Call {
            instance: id.into(),
            role: "app".into(),
            v1: true,
            agent: "aws-cli/1.16.102 botocore/1.12.92".into(),
            source: source.into(),
            example: "s3:ListBuckets".into(),
            time: 1_795_000_000,
        };
        let private = vec!["10.0.0.12".to_string()];
        let public = vec!["54.1.2.3".to_string()];
        let calls = [call("10.0.0.12"), call("10.0.0.12"), call("45.142.212.18")];
        LastMile {
            asked: 1,
            lookups: 1,
            instances: vec![InstanceCallers {
                instance_id: id.into(),
                asked_at: 1_795_000_000,
                seen: attribute(
                    id,
                    &calls,
                    Place {
                        private: &private,
                        public: &public,
                        prefixes: &[],
                        launched: None,
                    },
                    Host::default(),
                ),
            }],
            ..LastMile::default()
        }
    }

    #[test]
    fn the_last_mile_is_in_the_csv_and_on_the_page() {
        let mut rows = rows(4);
        rows[0].metadata_no_token = Some(crate::report::NoToken {
            calls: Some(37),
            hours: 24,
        });
        rows[1].metadata_no_token = Some(crate::report::NoToken {
            calls: None,
            hours: 24,
        });
        let text = csv(&report(), &rows).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rec = reader.records().next().unwrap().unwrap();
        let col = |name: &str| CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
        assert_eq!(
            &rec[col("imdsv1_software")],
            "aws-cli/1.16.102 botocore/1.12.92 (role app, 2 calls)"
        );
        assert!(rec[col("imdsv1_hypothesis")].contains("before 1.16.289"));
        assert_eq!(
            &rec[col("credential_theft")],
            "45.142.212.18 (role app, 1 calls)"
        );
        assert_eq!(&rec[col("metadata_no_token")], "37 IMDSv1 call(s) in 24h");
        let other = reader.records().next().unwrap().unwrap();
        assert_eq!(&other[col("imdsv1_software")], "");
        assert_eq!(&other[col("metadata_no_token")], "no data in 24h");
        let third = reader.records().next().unwrap().unwrap();
        assert_eq!(&third[col("metadata_no_token")], "", "not read");
        // A sweep of its own account: the region's summary names none, the
        // rows the account EC2 named.
        let mut own = report();
        own.sweep.as_mut().unwrap().regions[0].account = None;
        let text = csv(&own, &rows).unwrap();
        let rec = csv::Reader::from_reader(text.as_bytes())
            .records()
            .next()
            .unwrap()
            .unwrap();
        assert!(rec[col("imdsv1_software")].starts_with("aws-cli/1.16.102"));
        let page = html(&report(), &rows, 1_795_000_000);
        let count = |id: &str| {
            let t = &page[page.find(&format!("id=\"{id}\"")).unwrap()..];
            let t = &t[..t.find("</table>").unwrap()];
            t.matches("<tr>").count() - 1
        };
        let instances = &page[page.find("id=\"instances\"").unwrap()..];
        assert!(instances.contains("<td>37 IMDSv1 call(s) in 24h</td>"));
        assert!(instances.contains("<td>no data in 24h</td>"));
        assert!(instances.contains("<td>not read</td>"));
        assert_eq!(count("credential-theft"), 1);
        assert_eq!(count("imdsv1-callers"), 1);
        assert!(
            page.find("credential-theft") < page.find("imdsv1-callers"),
            "theft first"
        );
    }

    #[test]
    fn the_csv_has_a_row_for_every_instance_decided_however_many() {
        let rows = rows(10_000);
        let text = csv(&report(), &rows).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            CSV_COLUMNS
        );
        let read: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(read.len(), 10_000);
        assert_eq!(&read[0][2], "i-00000000000000000");
        assert_eq!(&read[0][3], "flagged");
        assert_eq!(&read[0][6], "optional");
        assert_eq!(&read[0][8], "2");
    }

    #[test]
    fn a_csv_cell_never_becomes_a_formula_and_commas_stay_in_their_cell() {
        let mut r = rows(1).remove(0);
        r.error = Some("=HYPERLINK(\"http://x\",\"y\"), and \"quotes\"".into());
        let text = csv(&report(), &[r]).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rec = reader.records().next().unwrap().unwrap();
        assert_eq!(rec.len(), CSV_COLUMNS.len());
        let error = CSV_COLUMNS.iter().position(|c| *c == "error").unwrap();
        assert!(rec[error].starts_with("'=HYPERLINK"));
    }

    /// The page's structure: every element closed in order, no script and
    /// nothing fetched from elsewhere, and the tables and chart hold what
    /// the report says.
    #[test]
    fn the_page_is_self_contained_well_formed_and_complete() {
        let rows = rows(30);
        let page = html(&report(), &rows, 1_795_000_000);
        assert!(page.starts_with("<!DOCTYPE html>"));
        for bad in ["<script", "src=\"http", "href=\"http", "url(", "@import"] {
            assert!(!page.contains(bad), "{bad}");
        }
        assert!(!page.contains("<script>"), "text is escaped");
        assert!(page.contains("&lt;script&gt;"));
        // Well formed: void elements aside, every tag closes in order.
        let mut stack: Vec<String> = Vec::new();
        let void = ["meta", "br", "rect", "!DOCTYPE"];
        let mut rest = page.as_str();
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').unwrap() + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            let name = tag
                .trim_start_matches('/')
                .split([' ', '\n'])
                .next()
                .unwrap()
                .trim_end_matches('/');
            if tag.starts_with('/') {
                if name == "rect" {
                    continue;
                }
                assert_eq!(stack.pop().as_deref(), Some(name), "unbalanced </{name}>");
            } else if !void.contains(&name) && !tag.ends_with('/') {
                stack.push(name.to_string());
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        // The instance table lists the 20 not compliant, the region table
        // both regions, the chart a bar per outcome present.
        let count = |id: &str| {
            let t = &page[page.find(&format!("id=\"{id}\"")).unwrap()..];
            let t = &t[..t.find("</table>").unwrap()];
            t.matches("<tr>").count() - 1
        };
        assert_eq!(count("instances"), 20);
        assert_eq!(count("regions"), 2);
        assert_eq!(page.matches("class=\"bar\"").count(), 2);
        assert!(page.contains("data-outcome=\"flagged\""));
        assert!(page.contains("<td class=\"notready\">not ready</td>"));
        assert!(page.contains("<td class=\"ready\">ready</td>"));
        // The way out: the unit, then the ready region first with its
        // command, the blocked one with its blockers named.
        assert_eq!(count("native-units"), 1);
        assert_eq!(count("native-enforcement"), 2);
        let way = &page[page.find("id=\"native-enforcement\"").unwrap()..];
        let ready = way.find("111122223333/us-east-1").unwrap();
        let blocked = way.find("111122223333/eu-west-1").unwrap();
        assert!(ready < blocked, "ready first");
        assert!(way.contains(
            "<code>imds-guard enforce-native --account 111122223333 --region us-east-1</code>"
        ));
        assert!(way.contains("10 instance(s) still at HttpTokens=optional"));
        assert!(way.contains("IMDSv1 use not measured"));
    }
}
