//! The report as Markdown, for chat and email: readable raw as well as rendered. Every string that comes from a
//! record (check names and details, reasons, host names) goes through [`text`], so a detail cannot open a
//! table cell, a link or an HTML tag in the reader's client.

use std::fmt::{self, Write};

use super::{DrillVerdict, GapBasis, Measured, Report, RpoGap, duration, time};
use crate::units;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

fn write_report(out: &mut String, report: &Report) -> fmt::Result {
    header(out, report)?;
    summary(out, report)?;
    failed_backups(out, report)?;
    drills(out, report)?;
    failed_checks(out, report)?;
    rpo_gap(out, report)?;
    streams(out, report)?;
    days(out, report)?;
    anomalies(out, report)?;
    incomplete_files(out, report)?;
    unreadable(out, report)
}

fn header(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "# Backup report: {}", report.headline())?;
    writeln!(out)?;
    writeln!(
        out,
        "Window {} to {} ({}). Repository {}. Made by dr {}.",
        time(report.window.start),
        time(report.window.end),
        duration(report.window.seconds),
        code(&report.repository),
        report.dr_version
    )?;
    writeln!(out)
}

fn summary(out: &mut String, report: &Report) -> fmt::Result {
    let s = &report.summary;
    writeln!(out, "## Summary")?;
    writeln!(out)?;
    if s.findings.is_empty() {
        writeln!(out, "All clear: every drill succeeded and nothing else needs a look.")?;
    }
    for finding in &s.findings {
        writeln!(out, "- **Warning:** {}", text(finding))?;
    }
    writeln!(out)?;
    writeln!(out, "| | This window |")?;
    writeln!(out, "|---|---|")?;
    writeln!(
        out,
        "| Drills | {}: {} succeeded, {} missed an objective, {} failed |",
        s.drills, s.drills_succeeded, s.drills_objective_missed, s.drills_failed
    )?;
    writeln!(out, "| Failed checks | {} |", s.failed_checks)?;
    if s.backup_attempts == 0 {
        writeln!(out, "| Backup attempts | none recorded |")?;
    } else {
        writeln!(
            out,
            "| Backup attempts | {}: {} committed, {} did not |",
            s.backup_attempts,
            s.backup_attempts - s.backups_failed,
            s.backups_failed
        )?;
    }
    let gap = match &report.worst_rpo_gap {
        Some(gap) => {
            measured(&Measured { seconds: Some(gap.seconds), objective_seconds: gap.objective_seconds, met: gap.met })
        }
        None => "no snapshot".to_string(),
    };
    writeln!(out, "| Worst RPO gap | {gap} |")?;
    writeln!(out, "| Snapshots | {}, {} stored |", s.snapshots, units::bytes(s.stored_bytes))?;
    writeln!(out, "| Anomalies | {} between snapshots, {} recorded by drills |", s.anomalies, s.drill_anomalies)?;
    writeln!(out)
}

fn failed_backups(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "## Failed backups")?;
    writeln!(out)?;
    let recorded = report.summary.backup_attempts;
    if recorded == 0 {
        writeln!(
            out,
            "No backup attempt was recorded in this window: either none ran, or they ran before dr recorded \
             attempts (or could not reach the repository to record them)."
        )?;
        return writeln!(out);
    }
    if report.failed_backups.is_empty() {
        writeln!(out, "None: every recorded backup attempt ({recorded}) committed a snapshot.")?;
        return writeln!(out);
    }
    writeln!(out, "| Started | Outcome | Host | Reason |")?;
    writeln!(out, "|---|---|---|---|")?;
    for attempt in &report.failed_backups {
        let mut reason = match &attempt.reason {
            Some(reason) => text(reason),
            None => "no outcome recorded: still running, or the process was killed".to_string(),
        };
        if !attempt.only.is_empty() {
            reason = format!("(--only {}) {reason}", text(&attempt.only.join(",")));
        }
        writeln!(
            out,
            "| {} | **{}** | {} | {reason} |",
            time(attempt.started_at),
            attempt.outcome.label(),
            text(&attempt.hostname)
        )?;
    }
    writeln!(out)
}

fn drills(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "## Drills")?;
    writeln!(out)?;
    if report.drills.is_empty() {
        writeln!(
            out,
            "**Warning:** no drill in this window, so nothing shows that the backups restore. `dr drill` runs one."
        )?;
        return writeln!(out);
    }
    writeln!(out, "| Started | Snapshot | Verdict | RTO | RPO | Checks | Host |")?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for drill in &report.drills {
        let verdict = match drill.verdict {
            DrillVerdict::Succeeded => drill.verdict.label().to_string(),
            _ => format!("**{}**", drill.verdict.label()),
        };
        let mut checks = vec![format!("{} passed", drill.checks_passed)];
        if drill.checks_warned > 0 {
            checks.push(format!("{} warned", drill.checks_warned));
        }
        if drill.checks_failed > 0 {
            checks.push(format!("**{} failed**", drill.checks_failed));
        }
        writeln!(
            out,
            "| {} | {} | {verdict} | {} | {} | {} | {} |",
            time(drill.started_at),
            drill.snapshot.as_ref().map_or("none".to_string(), |s| code(s.as_str())),
            measured(&drill.rto),
            measured(&drill.rpo),
            checks.join(", "),
            text(&drill.hostname)
        )?;
    }
    writeln!(out)?;
    let reasons: Vec<_> = report.drills.iter().filter_map(|d| Some((d, d.reason.as_ref()?))).collect();
    for (drill, reason) in &reasons {
        writeln!(out, "- Drill {} ({}): {}", code(drill.id.as_str()), drill.verdict.label(), text(reason))?;
    }
    if !reasons.is_empty() {
        writeln!(out)?;
    }
    Ok(())
}

fn failed_checks(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "## Failed checks")?;
    writeln!(out)?;
    if report.failed_checks.is_empty() {
        writeln!(out, "None.")?;
    }
    for check in &report.failed_checks {
        writeln!(
            out,
            "- **{}** (drill {}, {}): {}",
            text(&check.name),
            code(check.drill.as_str()),
            time(check.drill_started_at),
            text(&check.detail)
        )?;
        for problem in &check.problems {
            writeln!(out, "  - {}", text(problem))?;
        }
    }
    writeln!(out)
}

fn rpo_gap(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "## Worst RPO gap")?;
    writeln!(out)?;
    let Some(gap) = &report.worst_rpo_gap else {
        writeln!(out, "No snapshot was taken before the end of the window: there is nothing to restore.")?;
        return writeln!(out);
    };
    let verdict = match (gap.objective_seconds, gap.met) {
        (Some(objective), Some(true)) => format!("within the RPO objective of {}", duration(objective)),
        (Some(objective), _) => format!("**over the RPO objective of {}**", duration(objective)),
        _ => "no RPO objective is configured".to_string(),
    };
    let end = match &gap.to_snapshot {
        Some(to) => format!("snapshot {} (data of {})", code(to.as_str()), time(gap.to)),
        None => format!("the end of the window ({}), with no snapshot since", time(gap.to)),
    };
    let before_window = if gap.from < report.window.start { ", taken before the window" } else { "" };
    writeln!(
        out,
        "**{}** from snapshot {} (data of {}{before_window}) to {end}: {verdict}.",
        duration(gap.seconds),
        code(gap.from_snapshot.as_str()),
        time(gap.from)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Counted between consecutive snapshots, from the last snapshot before the window to the first inside it, \
         and from the newest snapshot to the end of the window. {}",
        basis(gap)
    )?;
    writeln!(out)
}

fn streams(out: &mut String, report: &Report) -> fmt::Result {
    if report.streams.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Change streams")?;
    writeln!(out)?;
    writeln!(out, "| Source | Generation | Segments | Transactions | Changes | Stored | Stored up to | Age |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for stream in &report.streams {
        let started = stream.began_note(report.window.start);
        let figures = stream.figures().join(" | ");
        writeln!(out, "| {} | {}{started} | {figures} |", text(&stream.source), code(&stream.generation))?;
    }
    writeln!(out)?;
    writeln!(out, "{}", STREAMS_NOTE)?;
    writeln!(out)
}

/// Said under the streams table on both pages.
pub(super) const STREAMS_NOTE: &str = "A point-in-time restore reaches up to \"stored up to\": its age at the \
     report's end is what an incident then would have lost. A generation that began in the window started after \
     a gap (a lost or dropped slot) or with the stream itself; restores into a gap reach its start or the next \
     base.";

/// What the gap was counted from, in one sentence (the HTML page says the same).
pub(super) fn basis(gap: &RpoGap) -> String {
    match (gap.basis, gap.removed_snapshots) {
        (GapBasis::Attempts, 0) => "Every successful backup attempt recorded is counted.".to_string(),
        (GapBasis::Attempts, n) => format!(
            "Every successful backup attempt recorded is counted, including {} that retention (dr prune) has \
             removed since.",
            units::plural(n, "snapshot")
        ),
        (GapBasis::Snapshots, _) => "No backup attempt record covers this window, so only the snapshots in the \
                                     repository are counted: a snapshot that dr prune removed leaves a gap here \
                                     that the site never had."
            .to_string(),
    }
}

fn days(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "## Snapshots per day")?;
    writeln!(out)?;
    writeln!(out, "| Day (UTC) | Snapshots | Stored | Failed backups |")?;
    writeln!(out, "|---|--:|--:|--:|")?;
    for day in &report.days {
        let date = day.date.format("%a %Y-%m-%d");
        if !day.applicable {
            writeln!(out, "| {date} | n/a | n/a | n/a |")?;
            continue;
        }
        let count = if day.snapshots == 0 { "**0**".to_string() } else { day.snapshots.to_string() };
        let failed = if day.backups_failed > 0 { format!("**{}**", day.backups_failed) } else { "0".to_string() };
        writeln!(out, "| {date} | {count} | {} | {failed} |", units::bytes(day.stored_bytes))?;
    }
    writeln!(
        out,
        "| **Total** | **{}** | **{}** | **{}** |",
        report.summary.snapshots,
        units::bytes(report.summary.stored_bytes),
        report.summary.backups_failed
    )?;
    if report.days.iter().any(|d| !d.applicable) {
        writeln!(out)?;
        writeln!(out, "n/a: the day ended before the repository's history began (no backup could exist yet).")?;
    }
    writeln!(out)
}

fn anomalies(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "## Anomalies")?;
    writeln!(out)?;
    let threshold = format!("{:.0}%", report.max_shrink * 100.0);
    let recorded: Vec<_> = report.drills.iter().flat_map(|d| d.anomalies.iter().map(move |a| (d, a))).collect();
    if report.anomalies.is_empty() && recorded.is_empty() {
        writeln!(out, "None: no source or table shrank by more than {threshold} from one snapshot to the next.")?;
        return writeln!(out);
    }
    if !report.anomalies.is_empty() {
        writeln!(out, "Between snapshots (shrank by more than {threshold}):")?;
        writeln!(out)?;
        for found in &report.anomalies {
            writeln!(
                out,
                "- {} ({}, against {}): {}",
                code(found.snapshot.as_str()),
                time(found.snapshot_started_at),
                code(found.previous_snapshot.as_str()),
                text(&found.description)
            )?;
        }
        writeln!(out)?;
    }
    if !recorded.is_empty() {
        writeln!(out, "Recorded by drills:")?;
        writeln!(out)?;
        for (drill, anomaly) in recorded {
            writeln!(out, "- Drill {} ({}): {}", code(drill.id.as_str()), time(drill.started_at), text(anomaly))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Files stored incomplete, per snapshot; nothing at all when there are none.
fn incomplete_files(out: &mut String, report: &Report) -> fmt::Result {
    let snapshots: Vec<_> = report.snapshots.iter().filter(|s| !s.incomplete_files.is_empty()).collect();
    if snapshots.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Incomplete files")?;
    writeln!(out)?;
    writeln!(out, "Files that changed while the backup read them: each snapshot holds them only as far as read.")?;
    writeln!(out)?;
    for snapshot in snapshots {
        for file in &snapshot.incomplete_files {
            writeln!(out, "- {} ({}): {}", code(snapshot.id.as_str()), time(snapshot.started_at), text(file))?;
        }
    }
    writeln!(out)
}

fn unreadable(out: &mut String, report: &Report) -> fmt::Result {
    if report.unreadable.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Unreadable records")?;
    writeln!(out)?;
    for record in &report.unreadable {
        writeln!(out, "- {} {}: {}", record.kind.label(), code(record.id.as_str()), text(&record.error))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "`dr verify --all` checks every snapshot in full; a damaged drill record loses only that drill's history."
    )?;
    writeln!(out)
}

/// `12m 00s / 1h 00m`, with the objective when there is one and a bold `missed` when it was.
fn measured(m: &Measured) -> String {
    let Some(seconds) = m.seconds else {
        return "n/a".to_string();
    };
    match (m.objective_seconds, m.met) {
        (Some(objective), Some(false)) => format!("{} / {} **missed**", duration(seconds), duration(objective)),
        (Some(objective), _) => format!("{} / {}", duration(seconds), duration(objective)),
        _ => duration(seconds),
    }
}

/// A string from a record, made inert: one line, Markdown's active characters backslash-escaped (CommonMark
/// allows that for any ASCII punctuation, and the raw text stays readable). `<` is enough to stop tags and
/// autolinks, so `->` stays as it is; `#` and `>` only act at the start of a line, where a record never is.
fn text(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\n' | '\r' | '\t' => escaped.push(' '),
            '\\' | '`' | '*' | '[' | ']' | '<' | '|' | '&' | '~' => {
                escaped.push('\\');
                escaped.push(c);
            }
            _ => escaped.push(c),
        }
    }
    escaped
}

/// An identifier in a code span; one with a backtick (never an id, maybe a hand-made location) falls back to
/// escaped text.
fn code(raw: &str) -> String {
    if raw.contains(['`', '\n', '|']) { text(raw) } else { format!("`{raw}`") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_strings_cannot_format_or_break_the_table() {
        assert_eq!(text("3 < 5 & <b>x</b> | *y*"), "3 \\< 5 \\& \\<b>x\\</b> \\| \\*y\\*");
        assert_eq!(text("10.0 MiB -> 4.0 MiB"), "10.0 MiB -> 4.0 MiB");
        assert_eq!(text("two\nlines"), "two lines");
        assert_eq!(text("public.user_sessions"), "public.user_sessions");
        assert_eq!(code("20261125T040000Z-1a2b3c"), "`20261125T040000Z-1a2b3c`");
        assert_eq!(code("a`b"), "a\\`b");
    }
}
