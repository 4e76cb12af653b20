//! `dr prune` with the real binary, on a local repository and on Garage (S3): real backups, plus a year of
//! crafted snapshots written through the library (clones of a real one at chosen times, so that what prune
//! keeps still verifies and restores), drill records, the leftovers of crashed backups and, on S3, open
//! multipart uploads. A dry run changes nothing (the whole listing is compared); prune then keeps exactly the
//! set docs/retention.md predicts, the newest drill-verified snapshot included, and what it keeps verifies
//! and restores. A prune stopped by SIGINT mid-way (its deletes held at a fault proxy) leaves only orphans,
//! which the next one removes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use common::garage::Garage;
use common::{DATABASE, FilesSite, Run, Site, entries_below};
use dr::repo::drill_record::{DRILL_RECORD_FORMAT, DrillRecord, Measure, ScratchDescription, Tools};
use dr::store::{Leftovers, LocalStore, S3Store};
use dr::{Manifest, Recipients, Repository, SnapshotId, Store};

/// The policy of the local test; docs/retention.md works the same example.
const RETENTION: &str =
    "[retention]\nkeep_last = 2\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 6\nkeep_yearly = 3\n";

/// An id at `at` with a chosen suffix, so that crafted ids are stable.
fn id_at(at: DateTime<Utc>, n: u32) -> SnapshotId {
    format!("{}-{:06x}", at.format("%Y%m%dT%H%M%SZ"), n & 0xff_ffff).parse().unwrap()
}

fn day(year: i32, month: u32, day: u32, hour: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month, day).unwrap().and_hms_opt(hour, 0, 0).unwrap().and_utc()
}

/// `source` again as a snapshot taken at `at`: the same objects (copied by `copy`) under the new id's keys.
async fn clone_manifest<F, Fut>(repo: &Repository, source: &Manifest, id: &SnapshotId, copy: F)
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let at = id.time();
    let mut manifest = source.clone();
    manifest.id = id.clone();
    manifest.started_at = at;
    manifest.finished_at = at + TimeDelta::minutes(5);
    for entry in &mut manifest.sources {
        entry.consistent_at = at;
        for object in &mut entry.objects {
            let key = object.key.replacen(source.id.as_str(), id.as_str(), 1);
            copy(object.key.clone(), key.clone()).await;
            object.key = key;
        }
    }
    repo.commit(&manifest).await.unwrap();
}

/// A drill record of `snapshot`, saved through the library as `dr drill` would.
async fn save_drill(repo: &Repository, recipients: &Recipients, snapshot: &SnapshotId, passed: bool) -> SnapshotId {
    let started_at = snapshot.time() + TimeDelta::hours(1);
    let record = DrillRecord {
        format: DRILL_RECORD_FORMAT,
        id: id_at(started_at, 0xd),
        snapshot: Some(snapshot.clone()),
        started_at,
        finished_at: started_at + TimeDelta::minutes(3),
        hostname: "drill-host".into(),
        dr_version: "test".into(),
        passed,
        succeeded: passed,
        reason: (!passed).then(|| "row counts app: 1 table differs".to_string()),
        snapshot_consistent_at: Some(snapshot.time()),
        scratch: ScratchDescription {
            kind: "embedded".into(),
            location: "/tmp/dr-scratch".into(),
            server_version: None,
            start_seconds: 2.0,
        },
        phases: Vec::new(),
        checks: Vec::new(),
        rpo: Measure { seconds: Some(3600.0), objective_seconds: None },
        rto: Measure { seconds: Some(60.0), objective_seconds: None },
        sizes: Vec::new(),
        anomalies: Vec::new(),
        tools: Tools::default(),
        stream: None,
    };
    repo.save_drill(recipients, &record).await.unwrap();
    record.id
}

fn snapshot_ids(run: Run) -> Vec<String> {
    let list = run.ok().json();
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn set_mtime(path: &Path, at: DateTime<Utc>) {
    let time = filetime::FileTime::from_unix_time(at.timestamp(), 0);
    filetime::set_file_mtime(path, time).unwrap();
}

/// Every file below the repository, hidden ones included, with its size and modification time.
fn full_listing(root: &Path) -> Vec<String> {
    entries_below(root)
        .into_iter()
        .map(|entry| {
            let meta = std::fs::symlink_metadata(root.join(&entry)).unwrap();
            format!("{entry} {} {:?}", meta.len(), meta.modified().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_what_the_policy_and_the_drills_say_and_sweeps_crashed_backups() {
    let site = Site::new().await;
    site.write_config(RETENTION);
    let real = [site.backup(), site.backup()];
    let real_ids: Vec<SnapshotId> = real.iter().map(|id| id.parse().unwrap()).collect();
    assert_eq!(
        real_ids[0].time().date_naive(),
        real_ids[1].time().date_naive(),
        "the two backups straddled midnight UTC, which this test's arithmetic does not cover: run it again"
    );

    // A year of daily snapshots, 2025-01-01 to 2025-12-31 at 04:00, as clones of the first real one (hard links:
    // the same bytes, so the kept ones verify and restore).
    let url = format!("file://{}", site.repo.display());
    let repo = Repository::open(Arc::from(dr::store::open_local(&url).unwrap())).await.unwrap();
    let recipients = Recipients::parse(std::slice::from_ref(&site.recipient)).unwrap();
    let source = repo.manifest(&real_ids[0]).await.unwrap();
    let start = Instant::now();
    let mut crafted = Vec::new();
    let mut at = day(2025, 1, 1, 4);
    while at < day(2026, 1, 1, 0) {
        let id = id_at(at, crafted.len() as u32);
        clone_manifest(&repo, &source, &id, |from, to| {
            let (from, to) = (site.repo.join(from), site.repo.join(to));
            async move {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::hard_link(from, to).unwrap();
            }
        })
        .await;
        crafted.push(id);
        at += TimeDelta::days(1);
    }
    assert_eq!(crafted.len(), 365);
    // The links share the real objects' inodes: date them all back to the start of the timeline, as a year
    // of real backups would be.
    for object in source.objects() {
        set_mtime(&site.repo.join(&object.key), day(2025, 1, 1, 4));
    }
    let crafted_at = |month: u32, d: u32| -> SnapshotId {
        crafted.iter().find(|id| id.time() == day(2025, month, d, 4)).unwrap().clone()
    };

    // Drills: the newest passed one protects 2025-06-15; an older pass and a newer failure do not count.
    save_drill(&repo, &recipients, &crafted_at(3, 1), true).await;
    let protecting = save_drill(&repo, &recipients, &crafted_at(6, 15), true).await;
    save_drill(&repo, &recipients, &crafted_at(7, 1), false).await;

    // What a prune killed after step 2 leaves: ten snapshots whose manifests are gone and objects are not.
    let interrupted: Vec<SnapshotId> = (1..=10).map(|d| crafted_at(2, d)).collect();
    for id in &interrupted {
        repo.forget(id).await.unwrap();
    }
    // A backup that crashed on 2025-12-31, a stray object in a kept snapshot's directory (both old: they go),
    // a backup running now, and one that started two days ago whose last object was written now (both stay).
    let dump = source.objects().next().unwrap().key.clone();
    let put_orphan = |id: &SnapshotId, name: &str, mtime: DateTime<Utc>| {
        let path = site.repo.join(format!("objects/{id}/{name}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(site.repo.join(&dump), &path).unwrap();
        set_mtime(&path, mtime);
        format!("objects/{id}/{name}")
    };
    let crashed = put_orphan(&id_at(day(2025, 12, 31, 5), 0xc), "app/pg_dump.zst.age", day(2025, 12, 31, 5));
    let stray = put_orphan(&crafted_at(12, 31), "stray.bin", day(2025, 12, 31, 5));
    let running = put_orphan(&SnapshotId::new(Utc::now()), "app/pg_dump.zst.age", Utc::now());
    let started_two_days_ago = SnapshotId::new(Utc::now() - TimeDelta::days(2));
    let long_running = put_orphan(&started_two_days_ago, "app/pg_dump.zst.age", Utc::now());
    eprintln!("crafted 365 snapshots and their objects in {:?}", start.elapsed());

    // The dry run: the plan, and not one byte changed.
    let before = full_listing(&site.repo);
    let dry = site.dr(&["prune", "--dry-run"]).ok();
    assert_eq!(full_listing(&site.repo), before, "a dry run changes nothing");
    assert!(dry.stdout.starts_with("dry run: nothing is deleted\n"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains(&format!(
            "keep    {}  2025-06-15 04:00:00  newest snapshot verified by drill {protecting}",
            crafted_at(6, 15)
        )),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!("remove  {}  2025-06-14 04:00:00  not kept by the policy", crafted_at(6, 14)))
    );
    assert!(dry.stdout.contains("would remove 342 of 357 snapshots"), "{}", dry.stdout);
    let plan = site.dr(&["prune", "--dry-run", "--json"]).ok().json();
    assert_eq!(full_listing(&site.repo), before, "a dry run changes nothing");
    let totals = &plan["totals"];
    assert_eq!(totals["snapshots_kept"], 15, "{totals}");
    assert_eq!(totals["snapshots_removed"], 342);
    // 6 objects for each removed snapshot and each interrupted one, the crashed backup's and the stray.
    assert_eq!(totals["objects_deleted"], 6 * 342 + 6 * 10 + 2);
    assert_eq!(totals["orphans_deleted"], 6 * 10 + 2);
    assert_eq!(totals["orphans_young"], 2);
    assert_eq!(plan["dry_run"], true);

    let clock = Instant::now();
    let run = site.dr(&["prune"]).ok();
    eprintln!("dr prune of 357 snapshots (342 removed, 2114 objects deleted) took {:?}", clock.elapsed());
    assert!(run.stdout.contains("removed 342 of 357 snapshots and 2114 objects (62 orphans)"), "{}", run.stdout);
    let expected: BTreeSet<String> = [
        (12, 31),
        (12, 30),
        (12, 29),
        (12, 28),
        (12, 27),
        (12, 26), // daily 7: today, then the last six days of 2025
        (12, 21), // weekly 4: this week, 2026-W01 (12-31), 2025-W52 (12-28), 2025-W51 (12-21)
        (11, 30),
        (10, 31),
        (9, 30),
        (8, 31), // monthly 6: this month, then December to August
        (1, 1),  // yearly 3: this year, 2025, and the oldest snapshot for the count left over
        (6, 15), // the newest snapshot a drill passed on
    ]
    .iter()
    .map(|&(m, d)| crafted_at(m, d).to_string())
    .chain(real.iter().cloned())
    .collect();
    let left: BTreeSet<String> = snapshot_ids(site.dr(&["snapshots", "--json"])).into_iter().collect();
    assert_eq!(left, expected);

    // Exactly the kept snapshots' objects remain, plus the two young orphans.
    let mut objects: BTreeSet<String> = BTreeSet::new();
    for id in &left {
        objects.extend(site.objects(id).iter().map(|p| p.strip_prefix(&site.repo).unwrap().display().to_string()));
    }
    objects.insert(running.clone());
    objects.insert(long_running.clone());
    let on_disk: BTreeSet<String> =
        common::files_below(&site.repo.join("objects")).into_iter().map(|f| format!("objects/{f}")).collect();
    assert_eq!(on_disk, objects);
    assert!(!site.repo.join(&crashed).exists() && !site.repo.join(&stray).exists());
    for id in &interrupted {
        assert!(!site.repo.join(format!("objects/{id}")).exists(), "the directories are tidied up too");
    }
    assert_eq!(entries_below(&site.repo.join("drills")).len(), 3, "drill records are kept");
    assert!(entries_below(&site.repo.join("locks")).is_empty(), "the lock is released");

    // What prune kept is whole, and restores.
    let verify = site.dr(&["verify", "--all", "--json"]).ok().json();
    assert_eq!(verify["snapshots"].as_array().unwrap().len(), 15);
    let restored = site.path("restored");
    site.dr_with(&["restore", "--to", "latest"], &Site::into_args(&site.db.url("restored_after_prune"), &restored))
        .ok();
    assert_eq!(
        common::fingerprint(&site.db, "restored_after_prune").await,
        common::fingerprint(&site.db, DATABASE).await
    );

    // Idempotent: the next prune has nothing to do but report the young orphans.
    let again = site.dr(&["prune"]).ok();
    assert!(again.stdout.contains("removed 0 of 15 snapshots and 0 objects (0 orphans)"), "{}", again.stdout);
    assert!(again.stdout.contains("2 orphans younger than 1d 00h left"), "{}", again.stdout);
}

#[test]
fn prune_refuses_without_a_policy_a_lock_or_a_key_and_deletes_nothing() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    let listing = || full_listing(&site.repo);
    let before = listing();

    for retention in ["", "[retention]\nkeep_last = 0\nkeep_daily = 0\n", "[retention]\norphan_grace = \"1h\"\n"] {
        std::fs::write(
            &site.config_path,
            format!("{}{retention}", std::fs::read_to_string(&site.config_path).unwrap()),
        )
        .unwrap();
        let run = site.dr(&["prune"]);
        let hint = run.hint().unwrap_or_default();
        let error = run.user_error(1);
        assert_eq!(
            error,
            "error: no retention rule is set: prune keeps only what [retention] asks for, and it asks for nothing"
        );
        assert!(hint.contains("keep_last") && hint.contains("--dry-run"), "{hint}");
        site.write_config(&site.encryption());
    }

    // Without the identity, the drill records cannot be read: refused before anything else.
    site.write_config(&format!("[encryption]\nrecipients = [\"{}\"]\n[retention]\nkeep_last = 1\n", site.recipient));
    let error = site.dr(&["prune"]).user_error(1);
    assert!(error.contains("prune needs the private key"), "{error}");

    // Another command holding the repository: prune says who, and waits for nobody by default.
    site.write_config(&format!("{}[retention]\nkeep_last = 1\n", site.encryption()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = runtime.block_on(Repository::open(Arc::new(LocalStore::new(&site.repo)))).unwrap();
    let options = dr::repo::lock::LockOptions::new("backup");
    let held = runtime.block_on(repo.lock(dr::repo::lock::LockKind::Shared, &options)).unwrap();
    let error = site.dr(&["prune"]).user_error(1);
    assert!(error.contains("locked") && error.contains("backup by"), "{error}");
    runtime.block_on(held.release()).unwrap();

    assert_eq!(listing(), before, "nothing was deleted");
    let run = site.dr(&["prune"]).ok();
    assert!(run.stdout.contains(&format!("keep    {snapshot}")) && run.stdout.contains("last 1"), "{}", run.stdout);
    assert!(run.stdout.contains("removed 0 of 1 snapshot and 0 objects"), "{}", run.stdout);
}

/// A backup killed with SIGKILL mid-dump leaves a hidden partial file in `objects/<id>/app/`; failed backups
/// leave empty directories. A snapshot in progress (younger than the grace) is left alone; once older, prune
/// deletes the partial file and the empty directories, and says so, as it aborts S3's open uploads.
#[tokio::test(flavor = "multi_thread")]
async fn prune_deletes_the_partial_files_and_empty_directories_of_killed_backups_after_the_grace() {
    let site = Site::new().await;
    common::add_random_table(&site.db, DATABASE, "blobs", 24).await;
    let kept = site.dr(&["backup", "--only", "config"]).ok().stdout.trim().to_string();
    let objects = site.repo.join("objects");

    let mut child = site.command(&["backup"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = common::files_below(&objects).into_iter().find(|f| f.contains("/app/.pg_dump.zst.age.partial-"));
        if let Some(partial) = found.filter(|f| std::fs::metadata(objects.join(f)).is_ok_and(|m| m.len() >= 1 << 20)) {
            break partial;
        }
        assert!(Instant::now() < deadline, "the backup never started writing the dump");
        assert!(child.try_wait().unwrap().is_none(), "the backup finished before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap(); // SIGKILL: the writer cannot remove its partial file
    child.wait().unwrap();
    // The killed backup's lock would hold prune off until its lease ran out; let it run out now.
    for lock in common::files_below(&site.repo.join("locks")) {
        std::fs::remove_file(site.repo.join("locks").join(lock)).unwrap();
    }
    let killed = partial.split('/').next().unwrap().to_string();
    // What a backup that failed early leaves: the directories it made for its objects, empty.
    let failed = objects.join("20261201T000000Z-00f00d/uploads/sub");
    std::fs::create_dir_all(&failed).unwrap();
    let retention =
        |grace: &str| site.write_config(&format!("[retention]\nkeep_last = 5\norphan_grace = \"{grace}\"\n"));

    // Younger than the grace: perhaps a backup still at work (one whose lock was lost). Left alone.
    retention("1h");
    let young = site.dr(&["prune", "--json"]).ok().json();
    assert_eq!(young["uploads"], serde_json::json!([]), "{young:#}");
    assert_eq!(young["empty_directories"], serde_json::json!([]), "{young:#}");
    assert!(objects.join(&partial).exists() && failed.exists());

    std::thread::sleep(Duration::from_millis(2100));
    retention("1s");
    let dry = site.dr(&["prune", "--dry-run"]).ok();
    let key = format!("objects/{killed}/app/pg_dump.zst.age");
    assert!(dry.stdout.contains(&format!("delete  partial file of {key}, started ")), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("delete  empty directory objects/20261201T000000Z-00f00d/uploads/sub/"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("1 partial file of killed uploads to delete; 3 empty directories to delete"),
        "{}",
        dry.stdout
    );
    assert!(objects.join(&partial).exists(), "a dry run deletes nothing");

    let report = site.dr(&["prune", "--json"]).ok().json();
    assert_eq!(report["uploads"][0]["key"], key.as_str(), "{report:#}");
    assert_eq!(report["uploads"][0]["kind"], "partial_file", "{report:#}");
    assert_eq!(report["totals"]["uploads_aborted"], 1, "{report:#}");
    assert_eq!(report["totals"]["empty_directories_removed"], 3, "{report:#}");
    // Only the committed snapshot is left: no partial file, no directory of the killed or failed backups.
    let left = entries_below(&objects);
    assert!(!left.is_empty() && left.iter().all(|e| e.starts_with(&kept)), "{left:?}");
    site.dr(&["verify", "--all"]).ok();
}

// ---- Garage ----

fn s3_dr(site: &Site, garage: &Garage, args: &[&str]) -> Run {
    let mut command: Command = site.command(args);
    command.envs(garage.env());
    common::run(&mut command)
}

/// Every key in the bucket (all prefixes) with its size and time, and every open upload.
async fn bucket_state(garage: &Garage) -> (Vec<String>, Vec<String>) {
    let client = garage.client().await;
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page =
            client.list_objects_v2().bucket(&garage.bucket).set_continuation_token(token.clone()).send().await.unwrap();
        for object in page.contents() {
            keys.push(format!("{} {:?} {:?}", object.key().unwrap(), object.size(), object.last_modified()));
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => break,
        }
    }
    let mut uploads = garage.open_multipart_uploads().await;
    uploads.sort();
    (keys, uploads)
}

/// Opens a multipart upload under `key` (one part uploaded, never completed): what a killed writer leaves.
async fn open_upload(garage: &Garage, key: &str) {
    let client = garage.client().await;
    let created = client.create_multipart_upload().bucket(&garage.bucket).key(key).send().await.unwrap();
    client
        .upload_part()
        .bucket(&garage.bucket)
        .key(key)
        .upload_id(created.upload_id().unwrap())
        .part_number(1)
        .body(vec![1u8; 1024].into())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_on_s3_removes_snapshots_orphans_and_stale_uploads() {
    let Some(garage) = Garage::start() else { return };
    let prefix = "prune/site";
    let site = Site::new().await;
    let retention = "[retention]\nkeep_last = 2\nkeep_daily = 3\norphan_grace = \"1s\"\n";
    site.write_config_with_repository(&garage.repository_toml(prefix, None), retention);
    s3_dr(&site, &garage, &["init"]).ok();
    let real: Vec<String> = (0..2).map(|_| s3_dr(&site, &garage, &["backup"]).ok().stdout.trim().to_string()).collect();

    // Twenty days of December 2025, cloned from the first backup through the library.
    let store = Arc::new(S3Store::new(garage.options(prefix)).await);
    let repo = Repository::open(store.clone()).await.unwrap();
    let recipients = Recipients::parse(std::slice::from_ref(&site.recipient)).unwrap();
    let source = repo.manifest(&real[0].parse().unwrap()).await.unwrap();
    let crafted: Vec<SnapshotId> = (1..=20).map(|d| id_at(day(2025, 12, d, 4), d)).collect();
    for id in &crafted {
        clone_manifest(&repo, &source, id, |from, to| {
            let store = store.clone();
            async move {
                let bytes = dr::store::get_bytes(store.as_ref(), &from, 64 << 20).await.unwrap();
                store.put(&to, Bytes::from(bytes)).await.unwrap();
            }
        })
        .await;
    }
    let protecting = save_drill(&repo, &recipients, &crafted[9], true).await;
    // A crashed backup's object, a killed upload inside the repository and one outside its prefix.
    let crashed = format!("objects/{}/app/pg_dump.zst.age", id_at(day(2025, 12, 21, 4), 0xc));
    store.put(&crashed, Bytes::from_static(b"left by a crash")).await.unwrap();
    let stale_upload = format!("{prefix}/objects/{}/uploads/files.tar.zst.age", id_at(day(2025, 12, 22, 4), 0xd));
    open_upload(&garage, &stale_upload).await;
    open_upload(&garage, "elsewhere/objects/x").await;
    // Older than the grace of one second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let before = bucket_state(&garage).await;
    let dry = s3_dr(&site, &garage, &["prune", "--dry-run"]).ok();
    assert_eq!(bucket_state(&garage).await, before, "a dry run changes nothing, uploads included");
    assert!(
        dry.stdout.contains(&format!("abort   multipart upload of {}", stale_upload.trim_start_matches("prune/site/")))
    );
    assert!(dry.stdout.contains(&format!("delete  objects/{}/", id_at(day(2025, 12, 21, 4), 0xc))), "{}", dry.stdout);

    let clock = Instant::now();
    let run = s3_dr(&site, &garage, &["prune", "--json"]).ok().json();
    eprintln!("dr prune on S3 of 22 snapshots (17 removed, 103 objects deleted) took {:?}", clock.elapsed());
    assert_eq!(run["totals"]["snapshots_removed"], 17, "{run:#}");
    assert_eq!(run["totals"]["uploads_aborted"], 1);
    let kept: Vec<&str> = run["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "keep")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = [real[1].clone(), real[0].clone()]
        .into_iter()
        .chain([&crafted[19], &crafted[18], &crafted[9]].map(|id| id.to_string()))
        .collect();
    assert_eq!(kept, expected, "last 2, daily 3 (today, 12-20, 12-19), and the drilled 12-10");
    let drilled = run["snapshots"].as_array().unwrap().iter().find(|s| s["id"] == crafted[9].as_str()).unwrap();
    assert_eq!(drilled["reasons"][0], format!("newest snapshot verified by drill {protecting}"));

    assert_eq!(snapshot_ids(s3_dr(&site, &garage, &["snapshots", "--json"])).len(), 5);
    let objects = store.list("objects/").await.unwrap();
    let dirs: BTreeSet<String> = objects.iter().map(|o| o.key.split('/').nth(1).unwrap().to_string()).collect();
    assert_eq!(dirs, expected.iter().cloned().collect(), "only the kept snapshots' objects are left");
    assert_eq!(garage.open_multipart_uploads().await, ["elsewhere/objects/x"], "only the repository's upload");
    assert!(store.list("locks/").await.unwrap().is_empty(), "the lock is released");
    assert_eq!(store.list("drills/").await.unwrap().len(), 1);

    let verify = s3_dr(&site, &garage, &["verify", "--all", "--json"]).ok().json();
    assert_eq!(verify["snapshots"].as_array().unwrap().len(), 5);
    let restored = site.path("restored");
    let mut command = site.command(&["restore", "--to", "latest"]);
    command.args(Site::into_args(&site.db.url("restored_from_s3"), &restored)).envs(garage.env());
    common::run(&mut command).ok();
}

/// SIGINT while prune deletes objects (their DELETEs held at a fault proxy): it stops before the next batch,
/// releases its lock and exits 130, every dropped snapshot's manifest already gone; the next prune deletes the
/// objects left behind.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_prune_leaves_only_orphans_and_the_next_one_removes_them() {
    use common::faults::{Action, FaultProxy, Gate, Rule};
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let prefix = "interrupted";
    let store = Arc::new(S3Store::new(garage.options(prefix)).await);
    let repo = Repository::init(store.clone()).await.unwrap();
    let key = dr::KeyPair::generate();
    let dir = tempfile::tempdir().unwrap();
    key.write_identity_file(&dir.path().join("identity.txt")).unwrap();
    let recipients = Recipients::parse(&[key.recipient()]).unwrap();
    // Thirty crafted snapshots of two small objects each; keep_last 2 drops 28 of them and their 56 objects.
    let template = dr::Manifest {
        format: 1,
        id: id_at(day(2025, 11, 1, 4), 0),
        started_at: day(2025, 11, 1, 4),
        finished_at: day(2025, 11, 1, 4),
        hostname: "web1".into(),
        dr_version: "test".into(),
        sources: Vec::new(),
        private: Repository::seal_private(&recipients, &Default::default()).unwrap(),
    };
    for d in 1..=30 {
        let id = id_at(day(2025, 11, d, 4), d);
        let mut manifest = template.clone();
        manifest.id = id.clone();
        for name in ["a", "b"] {
            let key = format!("objects/{id}/files/{name}");
            store.put(&key, Bytes::from_static(b"data")).await.unwrap();
            manifest.sources.push(dr::repo::manifest::SourceEntry {
                format: None,
                chunked: None,
                name: name.into(),
                kind: dr::repo::manifest::SourceKind::Files,
                consistent_at: id.time(),
                objects: vec![dr::repo::manifest::ObjectEntry {
                    key,
                    role: dr::repo::manifest::ObjectRole::Tar,
                    stored_size: 4,
                    sha256: "0".repeat(64),
                    plain_size: 4,
                }],
                incomplete_files: 0,
            });
        }
        repo.commit(&manifest).await.unwrap();
    }
    let config = dir.path().join("dr.toml");
    std::fs::write(
        &config,
        format!(
            "{}[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\
             [retention]\nkeep_last = 2\norphan_grace = \"1s\"\n",
            garage.repository_toml(prefix, Some(&proxy.url())),
            key.recipient(),
            dir.path().join("identity.txt").display()
        ),
    )
    .unwrap();
    let prune = || {
        let mut command = common::config_command(&config, &["prune"]);
        command.envs(garage.env());
        command
    };

    let gate = Gate::new();
    let held = proxy.add(Rule::new("DELETE", "/objects/", Action::Hold(gate.clone())).after(3).always());
    let child = prune().stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.fired(held) == 0 {
        assert!(Instant::now() < deadline, "prune never reached its object deletions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.open();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error: stopped by SIGINT"), "{stderr}");

    assert!(store.list("locks/").await.unwrap().is_empty(), "the lock is released");
    assert_eq!(repo.snapshot_ids().await.unwrap().len(), 2, "every dropped manifest went first");
    let left = store.list("objects/").await.unwrap().len();
    assert!(left > 4 && left < 60, "stopped half-way through the objects: {left} left");

    // Older than the grace of one second: the next prune sweeps them as orphans.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    proxy.clear();
    let again = common::run(&mut prune()).ok();
    let orphans = left - 4;
    assert!(
        again.stdout.contains(&format!("removed 0 of 2 snapshots and {orphans} objects ({orphans} orphans)")),
        "{}",
        again.stdout
    );
    assert_eq!(store.list("objects/").await.unwrap().len(), 4, "the two kept snapshots' objects");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_uploads_are_listed_page_by_page_and_only_under_the_prefix() {
    let Some(garage) = Garage::start() else { return };
    let mut options = garage.options("paged");
    options.list_page_size = 2;
    let store = S3Store::new(options).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let key = format!("objects/{i}/part");
        open_upload(&garage, &format!("paged/{key}")).await;
        expected.push(key);
    }
    open_upload(&garage, "paged2/objects/0/part").await;
    let now = Utc::now() + TimeDelta::seconds(5);
    let uploads = store.stale_uploads(now).await.unwrap();
    assert_eq!(uploads.iter().map(|u| u.key.clone()).collect::<Vec<_>>(), expected);
    assert!(store.stale_uploads(Utc::now() - TimeDelta::hours(1)).await.unwrap().is_empty(), "none is that old");
    for upload in &uploads {
        store.abort_upload(upload).await.unwrap();
        store.abort_upload(upload).await.expect("aborting twice is fine");
    }
    assert_eq!(garage.open_multipart_uploads().await, ["paged2/objects/0/part"]);
}
