//! The report as one self-contained HTML page: inline CSS, inline SVG charts, no script and nothing fetched, so
//! it can be mailed, archived or served as a static file. Every string taken from a record goes through
//! [`escape::html`].

use std::fmt::{self, Write};

use super::escape;
use super::svg::{self, Bar, Chart, Scale, Tone};
use super::{DrillVerdict, Measured, Report, ReportStatus, duration, time};
use crate::units;
use crate::units::plural;

const STYLE: &str = include_str!("report.css");

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_page(&mut out, report);
    out
}

fn write_page(out: &mut String, report: &Report) -> fmt::Result {
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Backup report: {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape::html(&report.headline())
    )?;
    header(out, report)?;
    tiles(out, report)?;
    failed_backups(out, report)?;
    drills(out, report)?;
    failed_checks(out, report)?;
    rpo_gap(out, report)?;
    streams(out, report)?;
    days(out, report)?;
    anomalies(out, report)?;
    incomplete_files(out, report)?;
    unreadable(out, report)?;
    write!(
        out,
        "<footer>Made by dr {} at {}. What each section means: docs/report.md.</footer>\n</main>\n</body>\n</html>\n",
        escape::html(&report.dr_version),
        time(report.generated_at)
    )
}

fn header(out: &mut String, report: &Report) -> fmt::Result {
    let s = &report.summary;
    let class = match s.status {
        ReportStatus::Ok => "ok",
        ReportStatus::Attention => "attention",
    };
    write!(
        out,
        "<header>\n<div class=\"eyebrow\">Backup report</div>\n<h1>{}</h1>\n\
         <p class=\"meta\">{} &rarr; {} ({}) &middot; repository <code>{}</code></p>\n</header>\n",
        escape::html(&capitalized(&report.headline())),
        time(report.window.start),
        time(report.window.end),
        duration(report.window.seconds),
        escape::html(&report.repository)
    )?;
    write!(out, "<section class=\"status {class}\">")?;
    if s.findings.is_empty() {
        out.push_str("<p>Every drill succeeded and nothing else needs a look.</p>");
    } else {
        out.push_str("<ul>");
        for finding in &s.findings {
            write!(out, "<li>{}</li>", escape::html(&capitalized(finding)))?;
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>\n");
    Ok(())
}

fn tiles(out: &mut String, report: &Report) -> fmt::Result {
    let s = &report.summary;
    let drills_tone = if s.drills == 0 || s.drills_failed > 0 {
        "bad"
    } else if s.drills_objective_missed > 0 {
        "warn"
    } else {
        "good"
    };
    let drills_detail = format!(
        "{} succeeded &middot; {} missed an objective &middot; {} failed",
        s.drills_succeeded, s.drills_objective_missed, s.drills_failed
    );
    let (gap_value, gap_detail, gap_tone) = match &report.worst_rpo_gap {
        Some(gap) => (
            duration(gap.seconds),
            gap.objective_seconds.map_or("no objective".to_string(), |o| format!("objective {}", duration(o))),
            match gap.met {
                Some(false) => "bad",
                Some(true) => "good",
                None => "",
            },
        ),
        None => ("none".to_string(), "no snapshot yet".to_string(), "bad"),
    };
    let anomalies_tone = if s.anomalies + s.drill_anomalies > 0 { "warn" } else { "good" };
    out.push_str("<section class=\"tiles\">");
    tile(out, "Drills", &s.drills.to_string(), &drills_detail, drills_tone)?;
    tile(out, "Worst RPO gap", &gap_value, &escape::html(&gap_detail), gap_tone)?;
    tile(
        out,
        "Snapshots",
        &s.snapshots.to_string(),
        &format!("{} stored", units::bytes(s.stored_bytes)),
        if s.snapshots == 0 { "bad" } else { "" },
    )?;
    let (backups_detail, backups_tone) = match (s.backup_attempts, s.backups_failed) {
        (0, _) => ("no attempt recorded".to_string(), ""),
        (recorded, 0) => (format!("of {}", plural(recorded, "attempt")), "good"),
        (recorded, _) => (format!("of {}", plural(recorded, "attempt")), "bad"),
    };
    tile(out, "Failed backups", &s.backups_failed.to_string(), &backups_detail, backups_tone)?;
    tile(
        out,
        "Anomalies",
        &s.anomalies.to_string(),
        &format!("{} recorded by drills", s.drill_anomalies),
        anomalies_tone,
    )?;
    out.push_str("</section>\n");
    Ok(())
}

/// `detail` is HTML (the callers build it from numbers and escaped text).
fn tile(out: &mut String, label: &str, value: &str, detail: &str, tone: &str) -> fmt::Result {
    write!(
        out,
        "<div class=\"tile {tone}\"><div class=\"label\">{label}</div><div class=\"value\">{}</div>\
         <div class=\"detail\">{detail}</div></div>",
        escape::html(value)
    )
}

fn failed_backups(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Failed backups</h2>\n");
    let recorded = report.summary.backup_attempts;
    if recorded == 0 {
        out.push_str(
            "<p class=\"muted\">No backup attempt was recorded in this window: either none ran, or they ran before \
             dr recorded attempts (or could not reach the repository to record them).</p>\n</section>\n",
        );
        return Ok(());
    }
    if report.failed_backups.is_empty() {
        writeln!(
            out,
            "<p class=\"muted\">None: every recorded backup attempt ({recorded}) committed a snapshot.</p>\n</section>"
        )?;
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>Started</th><th>Outcome</th><th>Host</th><th>Reason</th></tr></thead>\n<tbody>\n",
    );
    for attempt in &report.failed_backups {
        let mut reason = match &attempt.reason {
            Some(reason) => escape::html(reason),
            None => {
                "<span class=\"muted\">no outcome recorded: still running, or the process was killed</span>".to_string()
            }
        };
        if !attempt.only.is_empty() {
            reason = format!("<code>--only {}</code> {reason}", escape::html(&attempt.only.join(",")));
        }
        writeln!(
            out,
            "<tr><td class=\"nowrap\">{}</td><td><span class=\"badge bad\">{}</span></td><td>{}</td><td>{reason}</td></tr>",
            time(attempt.started_at),
            attempt.outcome.label(),
            escape::html(&attempt.hostname)
        )?;
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn drills(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Drills</h2>\n");
    if report.drills.is_empty() {
        out.push_str(
            "<p class=\"warning\">No drill in this window, so nothing shows that the backups restore. \
             <code>dr drill</code> runs one.</p>\n</section>\n",
        );
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>Started</th><th>Snapshot</th><th>Verdict</th><th>RTO</th><th>RPO</th>\
         <th>Checks</th><th>Host</th></tr></thead>\n<tbody>\n",
    );
    for drill in &report.drills {
        let badge = match drill.verdict {
            DrillVerdict::Succeeded => "good",
            DrillVerdict::ObjectiveMissed => "warn",
            DrillVerdict::Failed => "bad",
        };
        let snapshot = drill
            .snapshot
            .as_ref()
            .map_or("none".to_string(), |s| format!("<code>{}</code>", escape::html(s.as_str())));
        let mut checks = format!("{} passed", drill.checks_passed);
        if drill.checks_warned > 0 {
            write!(checks, ", <span class=\"warn-text\">{} warned</span>", drill.checks_warned)?;
        }
        if drill.checks_failed > 0 {
            write!(checks, ", <span class=\"bad-text\">{} failed</span>", drill.checks_failed)?;
        }
        writeln!(
            out,
            "<tr><td class=\"nowrap\">{}</td><td>{snapshot}</td><td><span class=\"badge {badge}\">{}</span></td>\
             <td>{}</td><td>{}</td><td>{checks}</td><td>{}</td></tr>",
            time(drill.started_at),
            drill.verdict.label(),
            measured(&drill.rto),
            measured(&drill.rpo),
            escape::html(&drill.hostname)
        )?;
        if let Some(reason) = &drill.reason {
            writeln!(out, "<tr class=\"reason\"><td></td><td colspan=\"6\">{}</td></tr>", escape::html(reason))?;
        }
    }
    out.push_str("</tbody>\n</table>\n");
    writeln!(
        out,
        "<figure>{}<figcaption>RTO per drill: from the start of the download to the end of the checks. Green: \
         within the objective; red: over it, or the drill failed.{}</figcaption></figure>",
        svg::bar_chart(&rto_chart(report)),
        match rto_objective(report) {
            Some(objective) => format!(" The dashed line is the RTO objective ({}).", duration(objective)),
            None => " No RTO objective is configured.".to_string(),
        }
    )?;
    out.push_str("</section>\n");
    Ok(())
}

/// The objective the chart draws: the current configuration's, else the one the newest drill ran under.
fn rto_objective(report: &Report) -> Option<f64> {
    report.objectives.rto_seconds.or_else(|| report.drills.iter().rev().find_map(|d| d.rto.objective_seconds))
}

fn rto_chart(report: &Report) -> Chart {
    let bars = report
        .drills
        .iter()
        .map(|drill| Bar {
            label: drill.started_at.format("%a %d %b").to_string(),
            sublabel: drill.started_at.format("%H:%M").to_string(),
            value: drill.rto.seconds,
            tone: match (drill.verdict, drill.rto.met) {
                (DrillVerdict::Failed, _) | (_, Some(false)) => Tone::Bad,
                (_, Some(true)) => Tone::Good,
                (_, None) => Tone::Neutral,
            },
            note: drill.rto.seconds.map(duration).unwrap_or_default(),
            tooltip: format!("drill {} ({}): RTO {}", drill.id, drill.verdict.label(), drill.rto.describe()),
        })
        .collect();
    Chart {
        title: "RTO per drill".to_string(),
        scale: Scale::Seconds,
        bars,
        reference: rto_objective(report).map(|o| (o, format!("objective {}", duration(o)))),
    }
}

fn failed_checks(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Failed checks</h2>\n");
    if report.failed_checks.is_empty() {
        out.push_str("<p class=\"muted\">None.</p>\n");
    }
    for check in &report.failed_checks {
        write!(
            out,
            "<div class=\"check\"><div class=\"check-name\">{}</div><div class=\"check-meta\">drill <code>{}</code> \
             &middot; {}</div><p>{}</p>",
            escape::html(&check.name),
            escape::html(check.drill.as_str()),
            time(check.drill_started_at),
            escape::html(&check.detail)
        )?;
        if !check.problems.is_empty() {
            out.push_str("<ul>");
            for problem in &check.problems {
                write!(out, "<li>{}</li>", escape::html(problem))?;
            }
            out.push_str("</ul>");
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
    Ok(())
}

fn rpo_gap(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Worst RPO gap</h2>\n");
    let Some(gap) = &report.worst_rpo_gap else {
        out.push_str(
            "<p class=\"warning\">No snapshot was taken before the end of the window: there is nothing to \
             restore.</p>\n</section>\n",
        );
        return Ok(());
    };
    let verdict = match (gap.objective_seconds, gap.met) {
        (Some(objective), Some(true)) => format!("within the RPO objective of {}", duration(objective)),
        (Some(objective), _) => {
            format!("<span class=\"bad-text\">over the RPO objective of {}</span>", duration(objective))
        }
        _ => "no RPO objective is configured".to_string(),
    };
    let end = match &gap.to_snapshot {
        Some(to) => format!("snapshot <code>{}</code> (data of {})", escape::html(to.as_str()), time(gap.to)),
        None => format!("the end of the window ({}), with no snapshot since", time(gap.to)),
    };
    let before_window = if gap.from < report.window.start { ", taken before the window" } else { "" };
    write!(
        out,
        "<p><strong>{}</strong> from snapshot <code>{}</code> (data of {}{before_window}) to {end}: {verdict}.</p>\n\
         <p class=\"muted\">Counted between consecutive snapshots, from the last snapshot before the window to the \
         first inside it, and from the newest snapshot to the end of the window. {}</p>\n</section>\n",
        duration(gap.seconds),
        escape::html(gap.from_snapshot.as_str()),
        time(gap.from),
        escape::html(&super::markdown::basis(gap))
    )
}

fn streams(out: &mut String, report: &Report) -> fmt::Result {
    if report.streams.is_empty() {
        return Ok(());
    }
    out.push_str(
        "<section>\n<h2>Change streams</h2>\n<table>\n<tr><th>Source</th><th>Generation</th><th>Segments</th>\
         <th>Transactions</th><th>Changes</th><th>Stored</th><th>Stored up to</th><th>Age</th></tr>\n",
    );
    for stream in &report.streams {
        let started = stream.began_note(report.window.start);
        let figures: String = stream.figures().iter().map(|f| format!("<td>{}</td>", escape::html(f))).collect();
        writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code>{started}</td>{figures}</tr>",
            escape::html(&stream.source),
            escape::html(&stream.generation)
        )?;
    }
    writeln!(out, "</table>\n<p class=\"muted\">{}</p>\n</section>", escape::html(super::markdown::STREAMS_NOTE))
}

fn days(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Snapshots per day</h2>\n");
    if report.snapshots.is_empty() {
        // A chart of nothing but empty days says less than one sentence.
        out.push_str("<p class=\"warning\">No snapshot in this window.</p>\n");
    } else {
        writeln!(
            out,
            "<figure>{}<figcaption>Stored size of the snapshots taken each day (UTC), after compression and \
             encryption.</figcaption></figure>",
            svg::bar_chart(&size_chart(report))
        )?;
    }
    out.push_str(
        "<table class=\"compact\">\n<thead><tr><th>Day (UTC)</th><th class=\"num\">Snapshots</th>\
         <th class=\"num\">Stored</th><th class=\"num\">Before compression</th><th class=\"num\">Failed backups</th>\
         </tr></thead>\n<tbody>\n",
    );
    for day in &report.days {
        let date = day.date.format("%a %Y-%m-%d");
        if !day.applicable {
            writeln!(
                out,
                "<tr class=\"na\" title=\"before the repository's history began\"><td>{date}</td>\
                 <td class=\"num\">n/a</td><td class=\"num\">n/a</td><td class=\"num\">n/a</td>\
                 <td class=\"num\">n/a</td></tr>"
            )?;
            continue;
        }
        let empty = if day.snapshots == 0 { " class=\"empty\"" } else { "" };
        let failed = if day.backups_failed > 0 {
            format!("<span class=\"bad-text\">{}</span>", day.backups_failed)
        } else {
            "0".to_string()
        };
        writeln!(
            out,
            "<tr{empty}><td>{date}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{failed}</td></tr>",
            day.snapshots,
            units::bytes(day.stored_bytes),
            units::bytes(day.plain_bytes)
        )?;
    }
    let plain: u64 = report.days.iter().map(|d| d.plain_bytes).sum();
    write!(
        out,
        "</tbody>\n<tfoot><tr><td>Total</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>\n</table>\n",
        report.summary.snapshots,
        units::bytes(report.summary.stored_bytes),
        units::bytes(plain),
        report.summary.backups_failed
    )?;
    if report.days.iter().any(|d| !d.applicable) {
        out.push_str(
            "<p class=\"muted\">n/a: the day ended before the repository's history began (no backup could exist \
             yet).</p>\n",
        );
    }
    out.push_str("</section>\n");
    Ok(())
}

fn size_chart(report: &Report) -> Chart {
    let bars = report
        .days
        .iter()
        .map(|day| {
            let label = day.date.format("%a %d %b").to_string();
            if !day.applicable {
                return Bar {
                    label,
                    sublabel: String::new(),
                    value: None,
                    tone: Tone::Inactive,
                    note: String::new(),
                    tooltip: format!("{}: before the repository's history began", day.date),
                };
            }
            let mut sublabel = if day.snapshots == 0 { "none".to_string() } else { plural(day.snapshots, "snapshot") };
            if day.backups_failed > 0 {
                sublabel.push_str(&format!(", {} failed", day.backups_failed));
            }
            Bar {
                label,
                sublabel,
                value: Some(day.stored_bytes as f64),
                tone: if day.snapshots == 0 || day.backups_failed > 0 { Tone::Bad } else { Tone::Neutral },
                note: if day.snapshots == 0 { String::new() } else { units::bytes(day.stored_bytes) },
                tooltip: format!(
                    "{}: {}, {} stored, {} failed",
                    day.date,
                    plural(day.snapshots, "snapshot"),
                    units::bytes(day.stored_bytes),
                    plural(day.backups_failed, "backup")
                ),
            }
        })
        .collect();
    Chart { title: "Stored bytes per day".to_string(), scale: Scale::Bytes, bars, reference: None }
}

fn anomalies(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Anomalies</h2>\n");
    let threshold = format!("{:.0}%", report.max_shrink * 100.0);
    let recorded: Vec<_> = report.drills.iter().flat_map(|d| d.anomalies.iter().map(move |a| (d, a))).collect();
    if report.anomalies.is_empty() && recorded.is_empty() {
        write!(
            out,
            "<p class=\"muted\">None: no source or table shrank by more than {threshold} from one snapshot to the \
             next.</p>\n</section>\n"
        )?;
        return Ok(());
    }
    if !report.anomalies.is_empty() {
        write!(out, "<h3>Between snapshots (shrank by more than {threshold})</h3>\n<ul class=\"anomalies\">")?;
        for found in &report.anomalies {
            write!(
                out,
                "<li>{} <span class=\"muted\">in <code>{}</code> ({}), against <code>{}</code></span></li>",
                escape::html(&found.description),
                escape::html(found.snapshot.as_str()),
                time(found.snapshot_started_at),
                escape::html(found.previous_snapshot.as_str())
            )?;
        }
        out.push_str("</ul>\n");
    }
    if !recorded.is_empty() {
        out.push_str("<h3>Recorded by drills</h3>\n<ul class=\"anomalies\">");
        for (drill, anomaly) in recorded {
            write!(
                out,
                "<li>{} <span class=\"muted\">drill <code>{}</code> ({})</span></li>",
                escape::html(anomaly),
                escape::html(drill.id.as_str()),
                time(drill.started_at)
            )?;
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
    Ok(())
}

/// Files stored incomplete, per snapshot; no section at all when there are none.
fn incomplete_files(out: &mut String, report: &Report) -> fmt::Result {
    let snapshots: Vec<_> = report.snapshots.iter().filter(|s| !s.incomplete_files.is_empty()).collect();
    if snapshots.is_empty() {
        return Ok(());
    }
    out.push_str(
        "<section>\n<h2>Incomplete files</h2>\n<p class=\"muted\">Files that changed while the backup read them: \
         each snapshot holds them only as far as read.</p>\n<ul>",
    );
    for snapshot in snapshots {
        for file in &snapshot.incomplete_files {
            write!(
                out,
                "<li>{} <span class=\"muted\">in <code>{}</code> ({})</span></li>",
                escape::html(file),
                escape::html(snapshot.id.as_str()),
                time(snapshot.started_at)
            )?;
        }
    }
    out.push_str("</ul>\n</section>\n");
    Ok(())
}

fn unreadable(out: &mut String, report: &Report) -> fmt::Result {
    if report.unreadable.is_empty() {
        return Ok(());
    }
    out.push_str("<section>\n<h2>Unreadable records</h2>\n<ul>");
    for record in &report.unreadable {
        write!(
            out,
            "<li>{} <code>{}</code>: {}</li>",
            record.kind.label(),
            escape::html(record.id.as_str()),
            escape::html(&record.error)
        )?;
    }
    out.push_str(
        "</ul>\n<p class=\"muted\"><code>dr verify --all</code> checks every snapshot in full; a damaged drill \
         record loses only that drill's history.</p>\n</section>\n",
    );
    Ok(())
}

/// `12m 00s` with its objective underneath, red when missed.
fn measured(m: &Measured) -> String {
    let Some(seconds) = m.seconds else {
        return "<span class=\"muted\">n/a</span>".to_string();
    };
    let objective = match (m.objective_seconds, m.met) {
        (Some(objective), Some(false)) => {
            format!("<div class=\"objective bad-text\">over {}</div>", duration(objective))
        }
        (Some(objective), _) => format!("<div class=\"objective\">of {}</div>", duration(objective)),
        _ => String::new(),
    };
    let class = if m.met == Some(false) { " class=\"bad-text\"" } else { "" };
    format!("<span{class}>{}</span>{objective}", duration(seconds))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capitalized_upper_cases_the_first_letter() {
        assert_eq!(capitalized("no drill in this window"), "No drill in this window");
    }
}
