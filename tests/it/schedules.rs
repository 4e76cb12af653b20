//! The shipped schedules work as written: every command line of `schedules/dr.crontab` and every `ExecStart`
//! of `schedules/systemd/*.service` runs successfully against a real site (with the site's configuration in
//! place of /etc/dr/dr.toml), and every cron time field is valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::path::Path;

use common::Site;

fn shipped(path: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Runs a shipped `dr ...` command line against `site`: the binary is the one under test, the configuration
/// and the report path are the test's.
fn run_shipped(site: &Site, line: &str) -> common::Run {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| w.replace("/etc/dr/dr.toml", &site.config_path.display().to_string()))
        .map(|w| w.replace("/var/lib/dr/reports", &site.path("reports").display().to_string()))
        .collect();
    assert!(words[0] == "dr" || words[0].ends_with("/dr"), "{line}");
    common::run(common::dr_command().args(&words[1..]))
}

fn valid_cron_field(field: &str, max: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = part.split_once('/').unwrap_or((part, "1"));
        let numbers_ok = |r: &str| r.split('-').all(|n| n.parse::<u32>().is_ok_and(|n| n <= max));
        step.parse::<u32>().is_ok() && (range == "*" || numbers_ok(range))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_crontab_and_the_systemd_units_work_as_written() {
    let site = Site::new().await;
    site.write_config("[retention]\nkeep_last = 5\n");
    fs::create_dir_all(site.path("reports")).unwrap();

    let crontab = shipped("schedules/dr.crontab");
    let entries: Vec<&str> =
        crontab.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('=')).collect();
    assert_eq!(entries.len(), 4, "backup, drill, prune, report");
    for entry in entries {
        let fields: Vec<&str> = entry.split_whitespace().collect();
        for (field, max) in fields[..5].iter().zip([59, 23, 31, 12, 7]) {
            assert!(valid_cron_field(field, max), "{field:?} in {entry:?}");
        }
        assert_eq!(fields[5], "dr", "runs as the dr user: {entry:?}");
        let command = fields[6..].join(" ");
        let run = run_shipped(&site, &command);
        assert_eq!(run.code, 0, "{command}\n{}\n{}", run.stdout, run.stderr);
        if command.contains(" -q") {
            assert!(run.stderr.trim().is_empty(), "-q prints nothing on success: {command}\n{}", run.stderr);
        }
    }
    assert!(site.path("reports/weekly.html").is_file());

    for unit in ["dr-backup.service", "dr-drill.service"] {
        let text = shipped(&format!("schedules/systemd/{unit}"));
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        let run = run_shipped(&site, exec);
        assert_eq!(run.code, 0, "{unit}: {exec}\n{}", run.stderr);
    }
    let timers = shipped("schedules/systemd/dr-backup.timer") + &shipped("schedules/systemd/dr-drill.timer");
    assert_eq!(timers.matches("Persistent=true").count(), 2, "missed runs run once at boot");
    let service = shipped("schedules/systemd/dr.service");
    assert!(service.contains("ExecStart=/usr/local/bin/dr --config /etc/dr/dr.toml serve"));
}
