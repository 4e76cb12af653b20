//! What the engine tells a progress display: a database backup's size estimated from its exported snapshot, a
//! files backup's from a scan, a restore's exact sizes from the manifest, and pg_restore of a staged archive as
//! a named phase rather than a byte counter stuck at zero (and the log lines without a terminal say so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::{Arc, Mutex};

use common::{DATABASE, Site};
use dr::config::Config;
use dr::{BackupOptions, Progress, ProgressTask, Repository, RestoreOptions, Selector};

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Exact(Option<u64>),
    Estimated(Option<u64>),
    Phase,
}

/// One task as the engine described it, and what happened to it.
#[derive(Debug)]
struct Recorded {
    name: String,
    kind: Kind,
    advanced: Mutex<u64>,
    estimate_later: Mutex<Option<u64>>,
    summary: Mutex<Option<String>>,
}

impl ProgressTask for Recorded {
    fn advance(&self, bytes: u64) {
        *self.advanced.lock().unwrap() += bytes;
    }
    fn set_estimate(&self, total: u64) {
        *self.estimate_later.lock().unwrap() = Some(total);
    }
    fn finish(&self, summary: &str) {
        *self.summary.lock().unwrap() = Some(summary.to_string());
    }
}

#[derive(Default)]
struct Recording(Mutex<Vec<Arc<Recorded>>>);

impl Recording {
    fn add(&self, name: &str, kind: Kind) -> Arc<dyn ProgressTask> {
        let task = Arc::new(Recorded {
            name: name.to_string(),
            kind,
            advanced: Mutex::new(0),
            estimate_later: Mutex::new(None),
            summary: Mutex::new(None),
        });
        self.0.lock().unwrap().push(task.clone());
        task
    }

    fn get(&self, name: &str) -> Arc<Recorded> {
        let tasks = self.0.lock().unwrap();
        tasks.iter().find(|t| t.name == name).cloned().unwrap_or_else(|| panic!("no task {name}: {tasks:?}"))
    }
}

impl Progress for Recording {
    fn task(&self, name: &str, total: Option<u64>) -> Arc<dyn ProgressTask> {
        self.add(name, Kind::Exact(total))
    }
    fn estimated_task(&self, name: &str, estimate: Option<u64>) -> Arc<dyn ProgressTask> {
        self.add(name, Kind::Estimated(estimate))
    }
    fn phase(&self, name: &str) -> Arc<dyn ProgressTask> {
        self.add(name, Kind::Phase)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_report_totals_estimates_and_phases() {
    let site = Site::new().await;
    common::add_random_table(&site.db, DATABASE, "blobs", 4).await;
    let config: Config = dr::settings::load(Some(&site.config_path), &|_| None).unwrap().config;
    let store = dr::store::open_local(&site.repo.display().to_string()).unwrap();
    let repo = Repository::open(Arc::from(store)).await.unwrap();

    let backup = Recording::default();
    let options = BackupOptions { only: Vec::new(), cancel: Default::default() };
    let report = dr::backup(&config, &repo, &options, &backup).await.unwrap();
    let app = report.sources.iter().find(|s| s.name == "app").unwrap();
    let dumped = backup.get("app");
    let Kind::Estimated(Some(estimate)) = dumped.kind else { panic!("no estimate for the database: {dumped:?}") };
    // 4 MiB of random bytes dominate both the tables' size and the dump's: the estimate is of the right order
    // (bytea is dumped as hex text, about twice its stored size).
    assert!(estimate > app.plain_size / 4 && estimate < app.plain_size * 4, "{estimate} vs {}", app.plain_size);
    // The dump's plaintext; the source's size adds the roles (globals.sql).
    let dump_size = *dumped.advanced.lock().unwrap();
    assert!(dump_size > app.plain_size / 100 * 99 && dump_size < app.plain_size, "{dump_size} of {}", app.plain_size);
    // A files source starts without a total; its scan supplies one (unless the archive was done first).
    let uploads = backup.get("uploads");
    assert_eq!(uploads.kind, Kind::Estimated(None));

    let restore = Recording::default();
    let options = RestoreOptions {
        path: None,
        selector: Selector::Latest,
        only: vec!["app".into()],
        into: vec![("app".into(), site.db.url("progress_copy"))],
        jobs: 2,
        force: false,
        temp_dir: None,
        point_in_time: false,
        replay_until: None,
    };
    let identities = dr::Identities::load_configured(&config.encryption, "restore").unwrap();
    dr::restore(&config, &repo, identities, &options, &restore).await.unwrap();
    let download = restore.get("app (download)");
    assert_eq!(download.kind, Kind::Exact(Some(dump_size)), "the manifest's plaintext size");
    assert_eq!(*download.advanced.lock().unwrap(), dump_size);
    let pg_restore = restore.get("app (pg_restore)");
    assert_eq!(pg_restore.kind, Kind::Phase);
    assert_eq!(pg_restore.summary.lock().unwrap().as_deref(), Some("restored by pg_restore --jobs 2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_the_pg_restore_phase_is_logged_by_name_not_as_zero_bytes() {
    let site = Site::new().await;
    site.backup();
    let target = format!("app={}", site.db.url("logged_copy"));
    let run = site.dr(&["restore", "--to", "latest", "--only", "app", "--jobs", "2", "--into", &target]).ok();
    let line = run.stderr.lines().find(|l| l.contains("task=") && l.contains("pg_restore")).unwrap_or_else(|| {
        panic!("no pg_restore line:\n{}", run.stderr);
    });
    assert!(!line.contains(" 0 B "), "{line}");
    assert!(line.contains("restored by pg_restore --jobs 2 in "), "{line}");
}
