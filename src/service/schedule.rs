//! Job schedules: the `[[job]]` tables of the configuration and of `[service] schedules_dir`, parsed with the
//! `cron` crate and read in the service's time zone.
//!
//! Everything is checked before the service starts (or before a reload is accepted): a bad expression, an
//! unknown time zone or a duplicate job name is an error naming the job, never a job that silently never runs.

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::config::{Config, JobConfig, JobKind};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub kind: JobKind,
    /// The expression as written, for status output.
    pub expression: String,
    schedule: cron::Schedule,
    timezone: Tz,
}

impl Job {
    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after.with_timezone(&self.timezone)).next().map(|t| t.with_timezone(&Utc))
    }

    /// Whether a run was due between the last run and `now` and did not happen (the host was down, or the
    /// service stopped): then it runs once at start-up, however many slots were missed.
    pub fn overdue(&self, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_run.and_then(|last| self.next_after(last)).is_some_and(|due| due <= now)
    }
}

/// A file of `schedules_dir`: just `[[job]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default, rename = "job")]
    jobs: Vec<JobConfig>,
}

/// Every job of the configuration and of its schedules directory, validated.
pub fn load(config: &Config) -> Result<Vec<Job>> {
    let timezone = timezone(config)?;
    let mut specs = own_jobs(config);
    if let Some(dir) = &config.service.schedules_dir {
        specs.extend(read_dir(dir)?);
    }
    parse(specs, timezone)
}

/// Checks the schedules written in the configuration itself (its `[[job]]` tables and `[service] timezone`),
/// with the messages of [`load`]. Every command that loads the configuration checks them, so that a bad
/// schedule is found by `dr backup` or `dr snapshots` too, not only when `dr serve` starts. The files of
/// `schedules_dir` are read by `dr serve` and `dr check` alone: a restore on a recovery host must not depend on
/// the service's directory being there.
pub fn validate(config: &Config) -> Result<()> {
    parse(own_jobs(config), timezone(config)?).map(|_| ())
}

fn own_jobs(config: &Config) -> Vec<(String, JobConfig)> {
    config.jobs.iter().map(|j| ("the configuration".to_string(), j.clone())).collect()
}

fn parse(specs: Vec<(String, JobConfig)>, timezone: Tz) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    for (origin, spec) in specs {
        if jobs.iter().any(|j| j.name == spec.name) {
            return Err(Error::ConfigInvalid(format!(
                "job {:?} (in {origin}) is defined twice; every [[job]] needs its own name",
                spec.name
            )));
        }
        let schedule = cron::Schedule::from_str(&spec.schedule).map_err(|e| {
            Error::ConfigInvalid(format!(
                "job {:?} (in {origin}): schedule {:?} is not a valid cron expression{}",
                spec.name,
                spec.schedule,
                explain_cron_error(&spec.schedule, &e.to_string())
            ))
        })?;
        jobs.push(Job { name: spec.name, kind: spec.run, expression: spec.schedule, schedule, timezone });
    }
    Ok(jobs)
}

/// The cron crate's reason, made readable: its parser's message is the expression, a line with a caret under
/// the bad spot, and the reason, which inside one sentence reads as a broken line. The caret is drawn again
/// under the expression as the message shows it, on lines of their own, followed by the reason; the field
/// count is said when it is wrong.
fn explain_cron_error(expression: &str, reason: &str) -> String {
    let fields = expression.split_whitespace().count();
    let shape = if (6..=7).contains(&fields) {
        String::new()
    } else {
        format!(
            "; it has {fields} fields, and dr's schedules have six (or seven, with years), seconds first: \
             \"0 5 * * * *\" is five past every hour"
        )
    };
    let lines: Vec<&str> = reason.lines().collect();
    let caret = lines.get(1).and_then(|line| line.find('^'));
    match (lines.first(), caret) {
        (Some(shown), Some(column)) if *shown == expression => {
            let rest = lines[2..].iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            let rest = if rest.is_empty() { String::new() } else { format!(" {rest}") };
            format!("{shape}:\n    {expression}\n    {}^{rest}", " ".repeat(column))
        }
        _ => format!(" ({}){shape}", lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")),
    }
}

fn timezone(config: &Config) -> Result<Tz> {
    let name = config.service.timezone.as_deref().unwrap_or("UTC");
    Tz::from_str(name).map_err(|_| {
        Error::ConfigInvalid(format!(
            "[service] timezone {name:?} is not an IANA time zone name (like \"UTC\" or \"Europe/Paris\")"
        ))
    })
}

fn read_dir(dir: &Path) -> Result<Vec<(String, JobConfig)>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading schedules_dir {}", dir.display()), e))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut specs = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let file: ScheduleFile =
            toml::from_str(&text).map_err(|source| Error::ConfigParse { path: path.clone(), source })?;
        specs.extend(file.jobs.into_iter().map(|j| (path.display().to_string(), j)));
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(toml_text: &str) -> Config {
        Config::parse(toml_text, Path::new("/etc/dr/dr.toml")).unwrap()
    }

    #[test]
    fn schedules_are_read_in_the_service_time_zone() {
        let jobs = load(&config(
            "[service]\ntimezone = \"Europe/Paris\"\n[[job]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nrun = \"backup\"\n",
        ))
        .unwrap();
        let winter = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        assert_eq!(jobs[0].next_after(winter).unwrap(), Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 0).unwrap());
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
        assert_eq!(jobs[0].next_after(summer).unwrap(), Utc.with_ymd_and_hms(2026, 7, 2, 1, 0, 0).unwrap());
    }

    #[test]
    fn a_missed_run_is_overdue_once_whatever_the_number_of_missed_slots() {
        let jobs = load(&config("[[job]]\nname = \"hourly\"\nschedule = \"0 5 * * * *\"\nrun = \"backup\"\n")).unwrap();
        let last = Utc.with_ymd_and_hms(2026, 11, 25, 10, 5, 0).unwrap();
        assert!(!jobs[0].overdue(Some(last), last + chrono::Duration::minutes(59)));
        assert!(jobs[0].overdue(Some(last), last + chrono::Duration::minutes(60)));
        assert!(jobs[0].overdue(Some(last), last + chrono::Duration::days(3)));
        assert!(!jobs[0].overdue(None, last), "a first start has nothing to catch up");
    }

    #[test]
    fn the_documented_example_and_the_shipped_schedules_file_load() {
        let doc = include_str!("../../docs/configuration.md");
        let block = doc.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
        let jobs = load(&config(block)).unwrap();
        assert_eq!(jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["hourly-backup", "weekly-drill"]);
        let shipped = format!("[service]\nschedules_dir = \"{}/schedules\"\n", env!("CARGO_MANIFEST_DIR"));
        let jobs = load(&config(&shipped)).unwrap();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["hourly-backup", "weekly-drill", "weekly-prune", "weekly-report"]);
    }

    /// The crontab-to-`[[job]]` table of docs/service.md: every six-field expression in it is valid, and its
    /// five-field column is refused.
    #[test]
    fn the_documented_translations_from_crontab_parse() {
        let doc = include_str!("../../docs/service.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.split('|').map(|cell| cell.trim().trim_matches('`')).collect())
            .filter(|cells: &Vec<&str>| cells.len() == 5 && cells[1].split_whitespace().count() == 5)
            .collect();
        assert_eq!(rows.len(), 5, "the table of docs/service.md#schedules");
        for row in rows {
            let job = |schedule: &str| format!("[[job]]\nname = \"j\"\nschedule = \"{schedule}\"\nrun = \"backup\"\n");
            assert!(validate(&config(&job(row[2]))).is_ok(), "{row:?}");
            assert!(validate(&config(&job(row[1]))).is_err(), "{row:?}");
        }
    }

    #[test]
    fn a_bad_expression_a_bad_zone_and_a_duplicate_are_refused_by_name() {
        let bad = load(&config("[[job]]\nname = \"weekly-drill\"\nschedule = \"0 4 * * Sun\"\nrun = \"drill\"\n"));
        let message = bad.unwrap_err().to_string();
        assert!(message.contains("job \"weekly-drill\"") && message.contains("six"), "{message}");
        // The caret sits under the spot the parser stopped at, on a line of its own.
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 3, "{message}");
        assert!(
            lines[0].ends_with(
                "it has 5 fields, and dr's schedules have six (or seven, with years), seconds \
                                    first: \"0 5 * * * *\" is five past every hour:"
            ),
            "{message}"
        );
        assert_eq!(lines[1], "    0 4 * * Sun");
        assert_eq!(lines[2], "            ^ 'Sun' is not a valid month name.", "under the fifth field, the month");
        assert!(!message.contains("\\n"), "{message}");
        let zone = load(&config("[service]\ntimezone = \"Mars/Olympus\"\n"));
        assert!(zone.unwrap_err().to_string().contains("Mars/Olympus"));
        let twice = "[[job]]\nname = \"a\"\nschedule = \"0 * * * * *\"\nrun = \"backup\"\n";
        let message = load(&config(&format!("{twice}{twice}"))).unwrap_err().to_string();
        assert!(message.contains("defined twice"), "{message}");
    }
}
