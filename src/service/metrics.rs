//! `/metrics`: the status in Prometheus' text exposition format (version 0.0.4). Names follow Prometheus'
//! conventions: a `dr_` prefix, base units in the name (`_seconds`, `_bytes`), `_total` for counters,
//! `_timestamp_seconds` for Unix times. docs/service.md lists them with the alert rules that use them.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::state::{JobOutcome, ServiceStatus};

/// Counters the service accumulates beyond what [`ServiceStatus`] holds.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub pruned_snapshots: u64,
    pub pruned_objects: u64,
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.0, "{name}");
        if !labels.is_empty() {
            let rendered: Vec<String> =
                labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v))).collect();
            let _ = write!(self.0, "{{{}}}", rendered.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn timestamp(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

pub fn render(status: &ServiceStatus, counters: &Counters, now: DateTime<Utc>) -> String {
    let mut out = Out(String::new());
    let repo = &status.repository;

    out.family("dr_repository_reachable", "gauge", "1 when the last listing of the repository succeeded.");
    out.sample("dr_repository_reachable", &[], if repo.reachable { 1.0 } else { 0.0 });
    out.family("dr_repository_snapshots", "gauge", "Committed snapshots in the repository.");
    out.sample("dr_repository_snapshots", &[], repo.snapshots as f64);

    out.family("dr_rpo_age_seconds", "gauge", "Age of the newest snapshot's data: what an incident now would lose.");
    if let Some(age) = repo.rpo_age_seconds(now) {
        out.sample("dr_rpo_age_seconds", &[], age);
    }
    out.family("dr_rpo_objective_seconds", "gauge", "The RPO objective ([objectives] rpo).");
    if let Some(objective) = repo.rpo_objective_seconds {
        out.sample("dr_rpo_objective_seconds", &[], objective);
    }

    out.family(
        "dr_stream_rpo_age_seconds",
        "gauge",
        "Age of what the change stream of each continuous source has stored: what an incident now would lose.",
    );
    for (source, capture) in &status.streams {
        if let Some(covered) = capture.covered_until {
            out.sample("dr_stream_rpo_age_seconds", &[("source", source)], (now - covered).as_seconds_f64().max(0.0));
        }
    }
    out.family("dr_stream_up", "gauge", "1 while the change capture of each continuous source runs.");
    for (source, capture) in &status.streams {
        out.sample("dr_stream_up", &[("source", source)], if capture.error.is_none() { 1.0 } else { 0.0 });
    }
    out.family("dr_stream_slot_retained_bytes", "gauge", "WAL the source server keeps for dr's replication slot.");
    for (source, capture) in &status.streams {
        if let Some(bytes) = capture.slot_retained_bytes {
            out.sample("dr_stream_slot_retained_bytes", &[("source", source)], bytes as f64);
        }
    }

    out.family(
        "dr_backup_last_success_timestamp_seconds",
        "gauge",
        "When the last successful backup of each source finished (Unix time).",
    );
    for (source, backup) in &status.backups {
        out.sample("dr_backup_last_success_timestamp_seconds", &[("source", source)], timestamp(backup.finished_at));
    }
    out.family("dr_backup_last_duration_seconds", "gauge", "Duration of the last successful backup of each source.");
    for (source, backup) in &status.backups {
        out.sample("dr_backup_last_duration_seconds", &[("source", source)], backup.duration_seconds);
    }
    out.family(
        "dr_backup_last_size_bytes",
        "gauge",
        "Size of each source in the last successful backup: stored (compressed, encrypted) and plain.",
    );
    for (source, backup) in &status.backups {
        out.sample("dr_backup_last_size_bytes", &[("source", source), ("size", "stored")], backup.stored_bytes as f64);
        out.sample("dr_backup_last_size_bytes", &[("source", source), ("size", "plain")], backup.plain_bytes as f64);
    }

    out.family("dr_drill_last_timestamp_seconds", "gauge", "When the last restore drill finished (Unix time).");
    out.family("dr_drill_last_success", "gauge", "1 when the last drill passed every check and met both objectives.");
    out.family("dr_drill_last_passed", "gauge", "1 when the last drill passed every check (objectives aside).");
    out.family("dr_drill_last_rto_seconds", "gauge", "RTO measured by the last drill.");
    out.family("dr_drill_last_rpo_seconds", "gauge", "RPO measured by the last drill.");
    if let Some(drill) = &status.last_drill {
        out.sample("dr_drill_last_timestamp_seconds", &[], timestamp(drill.finished_at));
        out.sample("dr_drill_last_success", &[], if drill.succeeded { 1.0 } else { 0.0 });
        out.sample("dr_drill_last_passed", &[], if drill.passed { 1.0 } else { 0.0 });
        if let Some(rto) = drill.rto_seconds {
            out.sample("dr_drill_last_rto_seconds", &[], rto);
        }
        if let Some(rpo) = drill.rpo_seconds {
            out.sample("dr_drill_last_rpo_seconds", &[], rpo);
        }
    }

    out.family("dr_job_runs_total", "counter", "Scheduled job runs since the service started, by outcome.");
    for (name, job) in &status.jobs {
        for outcome in [JobOutcome::Success, JobOutcome::Failure, JobOutcome::Skipped] {
            let count = job.runs.get(&outcome).copied().unwrap_or(0);
            let kind = job.kind.to_string();
            out.sample(
                "dr_job_runs_total",
                &[("job", name), ("run", &kind), ("outcome", outcome.as_str())],
                count as f64,
            );
        }
    }
    out.family("dr_job_running", "gauge", "1 while the job runs.");
    for (name, job) in &status.jobs {
        out.sample("dr_job_running", &[("job", name)], if job.running_since.is_some() { 1.0 } else { 0.0 });
    }
    out.family("dr_job_last_success_timestamp_seconds", "gauge", "When each job last finished successfully.");
    for (name, job) in &status.jobs {
        if job.last_outcome == Some(JobOutcome::Success)
            && let Some(finished) = job.last_finished
        {
            out.sample("dr_job_last_success_timestamp_seconds", &[("job", name)], timestamp(finished));
        }
    }

    out.family("dr_prune_deleted_snapshots_total", "counter", "Snapshots deleted by prune jobs.");
    out.sample("dr_prune_deleted_snapshots_total", &[], counters.pruned_snapshots as f64);
    out.family("dr_prune_deleted_objects_total", "counter", "Objects deleted by prune jobs.");
    out.sample("dr_prune_deleted_objects_total", &[], counters.pruned_objects as f64);
    out.family("dr_lock_wait_seconds_total", "counter", "Time jobs spent waiting for the repository lock.");
    out.sample("dr_lock_wait_seconds_total", &[], crate::repo::lock::total_wait().as_secs_f64());
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = render(&ServiceStatus::default(), &Counters::default(), Utc::now());
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap().to_string();
            assert!(seen.insert(name.clone()), "{name} declared twice");
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        }
        assert!(seen.contains("dr_rpo_age_seconds") && seen.contains("dr_job_runs_total"));
    }
}
