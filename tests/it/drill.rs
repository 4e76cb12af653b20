//! Restore drills against a real PostgreSQL: a good snapshot passes with every check listed and RPO/RTO
//! measured; each kind of failure is caught and named (a damaged object, fewer rows than recorded, a failing
//! user check, a missed RPO or RTO); the scratch cluster and temp dirs are gone afterwards in every outcome; the
//! record is stored encrypted in the repository, also for a drill that failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{DATABASE, Run, Site, query_strings, roles, run, scratch, sql};
use serde_json::Value;

const EXPECTED_CHECKS: [&str; 7] =
    ["objects", "pg_restore app", "row counts app", "roles app", "files config", "files uploads", "shrinkage"];

/// A private temp directory for one dr run: the scratch cluster and the restored files go there, so the
/// test can prove that nothing is left behind.
struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new() -> Tmp {
        Tmp(tempfile::Builder::new().prefix("dr-drill-tmp-").tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Nothing in the directory, and no process running from it (a scratch postgres would be).
    #[track_caller]
    fn assert_clean(&self) {
        let left: Vec<String> = common::entries_below(self.path());
        assert!(left.is_empty(), "the drill left {left:?} behind");
        let needle = self.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let running = processes_mentioning(&needle);
            if running.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes left running from {needle}: {running:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

/// A directory named `prefix...` in the drill's run directory (`$TMPDIR/dr-<uid>/drill-*/`).
fn dir_below(tmp: &Path, prefix: &str) -> Option<PathBuf> {
    walkdir::WalkDir::new(tmp)
        .max_depth(3)
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.file_type().is_dir() && e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path().to_path_buf())
}

fn drill(site: &Site, tmp: &Tmp, args: &[&str]) -> Run {
    let mut command = site.command(&[&["drill"], args].concat());
    command.env("TMPDIR", tmp.path());
    run(&mut command)
}

fn check<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {record:#}"))
}

fn check_names(record: &Value) -> Vec<String> {
    record["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

fn drill_records(site: &Site) -> Vec<PathBuf> {
    match fs::read_dir(site.repo.join("drills")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_of_a_good_snapshot_passes_with_every_check_listed() {
    let site = Site::new().await;
    site.write_config("[objectives]\nrpo = \"1h\"\nrto = \"1h\"\n");
    let snapshot = site.backup();
    let tmp = Tmp::new();

    let human = drill(&site, &tmp, &[]).ok();
    assert!(human.stdout.contains(&format!("of snapshot {snapshot}: PASSED, objectives met")), "{}", human.stdout);
    for name in EXPECTED_CHECKS {
        assert!(human.stdout.contains(&format!("pass  {name}")), "{name} listed as passed:\n{}", human.stdout);
    }
    tmp.assert_clean();

    let record = drill(&site, &tmp, &["--json", "--to", &snapshot]).ok().json();
    tmp.assert_clean();
    assert_eq!(record["snapshot"], snapshot.as_str());
    assert_eq!((record["passed"].as_bool(), record["succeeded"].as_bool()), (Some(true), Some(true)));
    assert!(record["reason"].is_null());
    assert_eq!(check_names(&record), EXPECTED_CHECKS);
    assert!(record["checks"].as_array().unwrap().iter().all(|c| c["status"] == "pass"), "{record:#}");
    assert!(check(&record, "row counts app")["detail"].as_str().unwrap().contains("9 tables"));
    assert!(check(&record, "files uploads")["detail"].as_str().unwrap().contains("every digest equals the index"));

    let rpo = record["rpo"]["seconds"].as_f64().unwrap();
    let rto = record["rto"]["seconds"].as_f64().unwrap();
    assert!(rpo > 0.0 && rpo < 600.0, "RPO is the snapshot's age: {rpo}");
    assert!(rto > 0.0 && rto < 600.0, "RTO: {rto}");
    assert_eq!(record["rpo"]["objective_seconds"], 3600.0);
    let phases: Vec<&str> = record["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["download+decrypt", "pg_restore", "files", "checks"]);
    let phase_sum: f64 = record["phases"].as_array().unwrap().iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    assert!(phase_sum <= rto + 0.001, "the phases ({phase_sum}s) lie within the RTO ({rto}s)");
    assert_eq!(record["scratch"]["kind"], "embedded");
    assert!(record["tools"]["pg_restore"].as_str().unwrap().starts_with("pg_restore (PostgreSQL)"));

    // The weekly report reads both records back from the repository, with the same figures.
    let report = site.dr(&["report", "--format", "json"]).ok().json();
    let drills = report["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 2, "{report:#}");
    assert_eq!(drills[1]["id"], record["id"]);
    assert_eq!(drills[1]["verdict"], "succeeded");
    assert_eq!(drills[1]["rto"]["seconds"], record["rto"]["seconds"]);
    assert_eq!(drills[1]["checks_passed"], EXPECTED_CHECKS.len());
    assert_eq!(report["snapshots"].as_array().unwrap().len(), 1);

    // Both drills left an encrypted record: nothing readable in it without the identity.
    let records = drill_records(&site);
    assert_eq!(records.len(), 2, "{records:?}");
    let text = fs::read_to_string(&records[0]).unwrap();
    assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!text.contains("isntgram") && !text.contains("posts"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_object_fails_the_drill_naming_it_and_leaves_nothing_behind() {
    let site = Site::new().await;
    let snapshot = site.backup();
    let object = site.object(&snapshot, "uploads/files.tar.zst.age");
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&object, bytes).unwrap();
    let tmp = Tmp::new();

    let run = drill(&site, &tmp, &[]).fails(1);
    let error = run.error();
    assert!(error.starts_with("error: drill failed: check \"objects\" failed"), "{error}");
    assert!(run.stdout.contains("FAIL  objects"), "{}", run.stdout);
    assert!(run.stdout.contains("uploads/files.tar.zst.age is corrupt"), "the object is named:\n{}", run.stdout);
    assert!(
        !run.stdout.contains("index.jsonl.zst.age: not read"),
        "the sound index was still checked:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAIL  files uploads"), "{}", run.stdout);
    assert!(run.stdout.contains("pass  row counts app"), "the other sources are still checked:\n{}", run.stdout);
    tmp.assert_clean();
    assert_eq!(drill_records(&site).len(), 1, "a failed drill still writes its record");
    let report = site.dr(&["report"]).ok();
    assert!(report.stdout.contains("failed"), "the report shows the failed drill:\n{}", report.stdout);
    assert!(report.stdout.contains("uploads/files.tar.zst.age is corrupt"), "with its detail:\n{}", report.stdout);
}

/// Rewrites the private half of a snapshot's manifest, as a backup with other facts would have written it.
fn edit_private(site: &Site, snapshot: &str, edit: impl FnOnce(&mut Value)) {
    let path = site.manifest_path(snapshot);
    let mut manifest: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let identities = dr::Identities::load(&site.identity).unwrap();
    let plain = identities.open(manifest["private"].as_str().unwrap(), "test").unwrap();
    let mut private: Value = serde_json::from_slice(&plain).unwrap();
    edit(&mut private);
    let recipients = dr::Recipients::parse(std::slice::from_ref(&site.recipient)).unwrap();
    manifest["private"] = Value::from(recipients.seal(&serde_json::to_vec(&private).unwrap()).unwrap());
    fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// As if the dump had captured fewer rows than the snapshot recorded.
fn inflate_recorded_rows(site: &Site, snapshot: &str, tables: &[(&str, i64)]) {
    edit_private(site, snapshot, |private| {
        for source in private["sources"].as_array_mut().unwrap() {
            for table in source["tables"].as_array_mut().into_iter().flatten() {
                if let Some((_, extra)) = tables.iter().find(|(name, _)| table["table"] == *name) {
                    table["rows"] = Value::from(table["rows"].as_i64().unwrap() + extra);
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_with_fewer_rows_than_recorded_fails_listing_every_mismatch() {
    let site = Site::new().await;
    let snapshot = site.backup();
    let counts = query_strings(&site.db, DATABASE, "SELECT count(*)::text FROM posts").await;
    let posts: i64 = counts[0].parse().unwrap();
    inflate_recorded_rows(&site, &snapshot, &[("posts", 5), ("comments", 1)]);
    let tmp = Tmp::new();

    let run = drill(&site, &tmp, &[]).fails(1);
    assert!(run.error().contains("check \"row counts app\" failed"), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("public.posts: {posts} rows restored, {} recorded at backup", posts + 5)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("public.comments: 3000 rows restored, 3001 recorded at backup"), "{}", run.stdout);
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn user_checks_run_against_the_restored_database_and_a_failing_one_fails_the_drill() {
    let site = Site::new().await;
    site.write_config(
        r#"
[[drill.check]]
name = "users exist"
database = "app"
sql = "select count(*) from users"
expect = ">= 200"

[[drill.check]]
name = "the admin is there"
database = "app"
sql = "select exists (select 1 from users where id = 1)"
expect = "t"

[[drill.check]]
name = "a million posts"
database = "app"
sql = "select count(*) from posts"
expect = "> 1000000"
"#,
    );
    site.backup();
    let tmp = Tmp::new();
    let run = drill(&site, &tmp, &["--json"]).fails(1);
    let record = run.json();
    assert_eq!(check(&record, "users exist")["status"], "pass");
    assert_eq!(check(&record, "the admin is there")["status"], "pass");
    let failed = check(&record, "a million posts");
    assert_eq!(failed["status"], "fail");
    assert_eq!(failed["detail"], "got \"1000\", expected > 1000000");
    assert!(
        run.error().contains("check \"a million posts\" failed: got \"1000\", expected > 1000000"),
        "{}",
        run.stderr
    );
    tmp.assert_clean();

    // A check that cannot even run fails by name too: bad SQL, a write (checks are read-only), a timeout.
    site.write_config(
        r#"
[[drill.check]]
name = "typo"
database = "app"
sql = "select count(*) from postz"
expect = "> 0"

[[drill.check]]
name = "sneaky write"
database = "app"
sql = "delete from comments"
expect = "0"

[[drill.check]]
name = "slow"
database = "app"
sql = "select pg_sleep(30)"
expect = "x"
timeout = "200ms"

[[drill.check]]
name = "still counts"
database = "app"
sql = "select count(*) from comments"
expect = "= 3000"
"#,
    );
    let record = drill(&site, &tmp, &["--json"]).fails(1).json();
    let detail = |name: &str| {
        let found = check(&record, name);
        assert_eq!(found["status"], "fail", "{found}");
        found["detail"].as_str().unwrap().to_string()
    };
    assert!(detail("typo").contains("postz"), "{record:#}");
    assert!(detail("sneaky write").contains("read-only transaction"), "{record:#}");
    assert!(detail("slow").contains("statement timeout"), "{record:#}");
    assert_eq!(check(&record, "still counts")["status"], "pass", "the write did not happen");
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_objectives_fail_the_drill_with_the_figures() {
    let site = Site::new().await;
    site.backup();
    std::thread::sleep(Duration::from_millis(1500));
    let tmp = Tmp::new();

    site.write_config("[objectives]\nrpo = \"1s\"\n");
    let run = drill(&site, &tmp, &["--json"]).fails(1);
    let record = run.json();
    assert_eq!((record["passed"].as_bool(), record["succeeded"].as_bool()), (Some(true), Some(false)));
    assert!(record["rpo"]["seconds"].as_f64().unwrap() > 1.0);
    let error = run.error();
    assert!(error.contains("passed its checks but missed an objective: RPO objective missed"), "{error}");
    assert!(error.contains("the objective is 1.0s"), "{error}");

    site.write_config("[objectives]\nrpo = \"1h\"\nrto = \"1ms\"\n");
    let run = drill(&site, &tmp, &[]).fails(1);
    assert!(run.stdout.contains("PASSED its checks, but MISSED an objective"), "{}", run.stdout);
    assert!(run.stdout.contains("(objective 1ms: MISSED)"), "{}", run.stdout);
    assert!(run.error().contains("RTO objective missed: the restore and checks took"), "{}", run.stderr);
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn shrinkage_is_a_warning_at_backup_and_in_the_drill_not_a_failure() {
    let site = Site::new().await;
    site.backup();
    sql(&site.db, DATABASE, "DELETE FROM comments WHERE id > 1000").await;
    fs::remove_dir_all(site.uploads_dir()).unwrap();
    fs::create_dir(site.uploads_dir()).unwrap();
    let backup = site.dr(&["backup"]).ok();
    // The backing-up host has no identity: it compares the public sizes only.
    assert!(backup.stderr.contains("WARN source uploads shrank by 100%"), "{}", backup.stderr);
    assert!(!backup.stderr.contains("comments"), "{}", backup.stderr);
    let tmp = Tmp::new();
    let record = drill(&site, &tmp, &["--json"]).ok().json();
    let shrinkage = check(&record, "shrinkage");
    assert_eq!(shrinkage["status"], "warn");
    let problems: Vec<&str> = shrinkage["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("source uploads shrank by 100%: 491.0 KiB -> "), "{problems:?}");
    assert_eq!(problems[1], "table app public.comments shrank by 67%: 3000 rows -> 1000 rows");
    assert_eq!(record["anomalies"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scratch_server_gets_its_drill_databases_and_roles_dropped_afterwards() {
    let site = Site::new().await;
    site.backup();
    let server = scratch().await;
    let roles_before = roles(&server).await;
    let databases = |server| async move {
        query_strings(server, "postgres", "SELECT datname::text FROM pg_database ORDER BY 1").await
    };
    let databases_before = databases(&server).await;
    let tmp = Tmp::new();

    let record = drill(&site, &tmp, &["--json", "--scratch-url", &server.url("postgres")]).ok().json();
    assert_eq!(record["scratch"]["kind"], "server");
    assert_eq!(check_names(&record), EXPECTED_CHECKS);
    assert_eq!(databases(&server).await, databases_before, "the dr_drill_* database was dropped");
    assert_eq!(roles(&server).await, roles_before, "the roles the drill created were dropped");
    tmp.assert_clean();

    // Also after a failure.
    site.write_config("[[drill.check]]\nname = \"never\"\ndatabase = \"app\"\nsql = \"select 1\"\nexpect = \"2\"\n");
    drill(&site, &tmp, &["--scratch-url", &server.url("postgres")]).fails(1);
    assert_eq!(databases(&server).await, databases_before);
    assert_eq!(roles(&server).await, roles_before);
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scratch_url_on_the_production_server_is_refused() {
    let site = Site::new().await;
    site.backup();
    let tmp = Tmp::new();
    let production = site.db.url("postgres");
    let error = drill(&site, &tmp, &["--scratch-url", &production]).user_error(1);
    assert!(error.contains("refusing scratch server") && error.contains("source \"app\""), "{error}");
    site.write_config(&format!("[drill]\nscratch_url = \"{production}\"\n"));
    drill(&site, &tmp, &[]).user_error(1);
    let databases = query_strings(&site.db, "postgres", "SELECT datname::text FROM pg_database").await;
    assert!(!databases.iter().any(|d| d.starts_with("dr_drill_")), "{databases:?}");
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_leaves_the_scratch_running_and_says_how_to_connect() {
    let site = Site::new().await;
    site.backup();
    let tmp = Tmp::new();
    let run = drill(&site, &tmp, &["--keep"]).ok();
    let psql = run.stdout.lines().find_map(|l| l.trim().strip_prefix("kept:     app: psql ")).unwrap_or_else(|| {
        panic!("no connection line:\n{}", run.stdout);
    });
    let conninfo = dr::pg::ConnInfo::parse(psql.trim_matches('"')).unwrap();
    let client = dr::pg::connect(&conninfo).await.expect("the kept scratch accepts connections");
    let posts: i64 = client.query_one("SELECT count(*) FROM posts", &[]).await.unwrap().get(0);
    assert_eq!(posts, 1000);
    drop(client);

    // Stop the kept server the way the printed line says, so that the test leaves nothing either.
    let scratch_dir = dir_below(tmp.path(), "dr-scratch-").expect("the kept scratch directory");
    assert!(run.stdout.contains(&scratch_dir.display().to_string()));
    let pid: i32 =
        fs::read_to_string(scratch_dir.join("data/postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for entry in fs::read_dir(tmp.path()).unwrap() {
        fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_drill_cleans_up_and_records_why() {
    let site = Site::new().await;
    // Enough data that the restore is still running when the signal arrives.
    common::add_random_table(&site.db, DATABASE, "bulk", 96).await;
    site.backup();
    let tmp = Tmp::new();
    let mut command = site.command(&["drill", "--jobs", "1"]);
    command.env("TMPDIR", tmp.path()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The files directory is created once the scratch cluster is up: the restore is about to start.
    while dir_below(tmp.path(), "dr-drill-").is_none() {
        assert!(Instant::now() < deadline, "the drill never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (code, stderr) = common::interrupt(child);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("error: stopped by SIGINT"), "{stderr}");
    tmp.assert_clean();
    assert_eq!(drill_records(&site).len(), 1, "the interrupted drill left its record");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_server_version_is_named_with_what_to_install() {
    let site = Site::new().await;
    let snapshot = site.backup();
    // A snapshot of a PostgreSQL 9 server: no such server binaries exist on any test machine.
    edit_private(&site, &snapshot, |private| {
        private["sources"][0]["server_version_num"] = Value::from(90_624);
    });
    let tmp = Tmp::new();
    let run = drill(&site, &tmp, &[]).fails(1);
    let error = run.error();
    assert!(error.contains("cannot find initdb for PostgreSQL 9"), "{error}");
    let hint = run.hint().unwrap();
    assert!(hint.contains("apt-get install postgresql-9") && hint.contains("scratch_url"), "{hint}");
    tmp.assert_clean();
    assert_eq!(drill_records(&site).len(), 1, "the failed drill is on record");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_drill_reports_download_and_pg_restore_as_one_phase() {
    let site = Site::new().await;
    site.backup();
    let tmp = Tmp::new();
    let record = drill(&site, &tmp, &["--json", "--jobs", "1"]).ok().json();
    let phases: Vec<&str> = record["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["download+decrypt", "download+decrypt+pg_restore", "files", "checks"]);
    assert_eq!(check_names(&record), EXPECTED_CHECKS);
    tmp.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_with_nothing_to_restore_fails_on_record() {
    let site = Site::new().await;
    let tmp = Tmp::new();
    let run = drill(&site, &tmp, &["--json"]).fails(1);
    assert_eq!(run.error(), "error: drill failed: the repository holds no snapshots");
    assert!(run.hint().unwrap().contains("dr snapshots"), "the cause's own hint: {:?}", run.hint());
    let record = run.json();
    assert!(record["snapshot"].is_null() && record["passed"] == false, "{record:#}");
    assert_eq!(drill_records(&site).len(), 1, "even this drill is on record, for the weekly report");
    tmp.assert_clean();
}
