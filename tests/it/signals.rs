//! Stopping a backup with SIGINT or SIGTERM: it exits with 128 + the signal, says so in one line, commits
//! nothing, and leaves not even a hidden partial file behind; the next backup works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{DATABASE, Site, sql};

/// Every file under `dir`, hidden ones (partial uploads) included.
fn files_under(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect()
}

async fn stopped_by(signal: nix::sys::signal::Signal, expected_code: i32, name: &str) {
    let site = Site::new().await;
    // About 150 MB of poorly compressible rows, so the dump is still streaming when the signal comes.
    sql(
        &site.db,
        DATABASE,
        "CREATE TABLE bulk AS SELECT i, md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) AS payload
         FROM generate_series(1, 1500000) AS i",
    )
    .await;

    let mut child = site.command(&["backup"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let objects = site.repo.join("objects");
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under(&objects).is_empty() {
        assert!(Instant::now() < deadline, "the backup never started writing");
        assert!(child.try_wait().unwrap().is_none(), "the backup finished before it could be stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(expected_code), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors, [format!("error: stopped by {name} before the command finished")], "{stderr}");
    assert!(stderr.contains("hint: an interrupted backup leaves no snapshot"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).trim().is_empty(), "no snapshot id is printed");

    let snapshots = site.dr(&["snapshots", "--json"]).ok().json();
    assert_eq!(snapshots.as_array().unwrap().len(), 0, "nothing was committed");
    assert_eq!(files_under(&objects), Vec::<String>::new(), "no object, not even a hidden partial one");
    // The attempt is on record as interrupted, for the weekly report.
    let report = site.dr(&["report", "--format", "json"]).ok().json();
    let failed = report["failed_backups"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["outcome"], "interrupted", "{report}");
    assert_eq!(failed[0]["reason"], "cancelled before it finished");

    sql(&site.db, DATABASE, "DROP TABLE bulk").await;
    let snapshot = site.backup();
    let verify = site.dr(&["verify", "--to", &snapshot]).ok();
    assert!(verify.stdout.contains(&snapshot), "{}", verify.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_backup_and_leaves_nothing() {
    stopped_by(nix::sys::signal::Signal::SIGTERM, 143, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_a_backup_and_leaves_nothing() {
    stopped_by(nix::sys::signal::Signal::SIGINT, 130, "SIGINT").await;
}
