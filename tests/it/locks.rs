//! Repository locks (docs/locks.md) on real stores, a directory and Garage (S3): real `dr` processes where the
//! holder must be another process (a running backup, one killed with SIGKILL), and the library in-process where
//! that is simpler (hand-written stale locks, renewal, a lock deleted behind its holder's back, racing tasks).
//! Leases are 2 seconds here, so that expiry and renewal show within a test's patience.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use common::garage::Garage;
use common::{DATABASE, FilesSite, Run, Site};
use dr::repo::lock::{LockInfo, LockKind, LockOptions};
use dr::store::{LocalStore, ObjectMeta, ObjectReader, ObjectWriter, S3Store};
use dr::{BackupOptions, Config, Error, NoProgress, Repository, Store};

const LEASE: Duration = Duration::from_secs(2);
const LOCK_TOML: &str = "[lock]\nlease = \"2s\"\n";

fn options(purpose: &str, wait: Duration) -> LockOptions {
    LockOptions { purpose: purpose.to_string(), lease: LEASE, wait }
}

async fn local_repository(dir: &Path) -> Repository {
    Repository::init(Arc::new(LocalStore::new(dir))).await.unwrap()
}

/// Live lock objects, as `dr status` will list them.
async fn live_locks(repo: &Repository) -> Vec<LockInfo> {
    repo.locks().await.unwrap().into_iter().filter(|l| !l.expired).filter_map(|l| l.info).collect()
}

/// Waits until the repository holds `count` live locks, while `children` keep running.
async fn wait_for_locks(repo: &Repository, count: usize, children: &mut [&mut Child]) -> Vec<LockInfo> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = live_locks(repo).await;
        if live.len() >= count {
            return live;
        }
        for child in children.iter_mut() {
            assert!(child.try_wait().unwrap().is_none(), "a backup ended before {count} locks were seen");
        }
        assert!(Instant::now() < deadline, "never saw {count} locks: {live:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(mut command: Command) -> Child {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(child: Child) -> Run {
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A seeded site whose backups take a few seconds, with 2-second leases.
async fn slow_site() -> Site {
    let site = Site::new().await;
    site.write_config(LOCK_TOML);
    common::add_random_table(&site.db, DATABASE, "blobs", 48).await;
    site
}

fn assert_locked_by(err: &Error, holder: &LockInfo, pid: u32) {
    let Error::RepositoryLocked { holder: named, since, expires } = err else { panic!("not a lock error: {err:?}") };
    assert_eq!(*named, format!("{} by {}@{} (pid {pid})", holder.purpose, holder.user, holder.hostname));
    assert_eq!(*since, holder.created_at);
    assert!(*expires > Utc::now(), "a live lock: {expires}");
}

// ---- Real processes ----

#[tokio::test(flavor = "multi_thread")]
async fn a_running_backup_keeps_an_exclusive_lock_out_until_it_ends() {
    let site = slow_site().await;
    let repo = Repository::open(Arc::new(LocalStore::new(&site.repo))).await.unwrap();
    let mut backup = spawn(site.command(&["backup"]));
    let held = wait_for_locks(&repo, 1, &mut [&mut backup]).await;
    assert_eq!((held[0].kind, held[0].purpose.as_str(), held[0].pid), (LockKind::Shared, "backup", backup.id()));

    let err = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap_err();
    assert_locked_by(&err, &held[0], backup.id());
    assert_eq!(live_locks(&repo).await.len(), 1, "the refused attempt withdrew its lock object");
    // Listings take no lock.
    site.dr(&["snapshots"]).ok();

    let prune = repo.lock(LockKind::Exclusive, &options("prune", Duration::from_secs(120))).await.unwrap();
    let backup = finish(backup).ok();
    let live = live_locks(&repo).await;
    assert_eq!(live.len(), 1, "the backup released its lock: {live:?}");
    assert_eq!(live[0].purpose, "prune");
    // Nothing blocks a read-only listing of the committed snapshot, even under an exclusive lock.
    assert_eq!(site.snapshot_ids(), [backup.stdout.trim()]);
    prune.release().await.unwrap();
    assert!(repo.locks().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backups_at_once_both_commit() {
    let site = slow_site().await;
    let repo = Repository::open(Arc::new(LocalStore::new(&site.repo))).await.unwrap();
    let mut first = spawn(site.command(&["backup"]));
    let mut second = spawn(site.command(&["backup"]));
    let held = wait_for_locks(&repo, 2, &mut [&mut first, &mut second]).await;
    assert!(held.iter().all(|l| l.kind == LockKind::Shared && l.purpose == "backup"), "{held:?}");
    let (first, second) = (finish(first).ok(), finish(second).ok());
    let mut ids = vec![first.stdout.trim().to_string(), second.stdout.trim().to_string()];
    ids.sort();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(site.snapshot_ids(), ids, "both committed");
    assert!(repo.locks().await.unwrap().is_empty(), "both released");
    site.dr(&["verify", "--all"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holders_lock_expires_after_its_lease() {
    let site = slow_site().await;
    let repo = Repository::open(Arc::new(LocalStore::new(&site.repo))).await.unwrap();
    let mut backup = spawn(site.command(&["backup"]));
    let held = wait_for_locks(&repo, 1, &mut [&mut backup]).await;
    let pid = backup.id();
    backup.kill().unwrap(); // SIGKILL: no clean-up, no release
    finish(backup);

    let err = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap_err();
    assert_locked_by(&err, &held[0], pid);
    let start = Instant::now();
    let prune = repo.lock(LockKind::Exclusive, &options("prune", Duration::from_secs(30))).await.unwrap();
    assert!(Utc::now() >= held[0].expires_at, "taken only once the dead holder's lease ran out");
    assert!(start.elapsed() <= LEASE + Duration::from_secs(6), "and soon after: {:?}", start.elapsed());
    let keys: Vec<String> = repo.locks().await.unwrap().into_iter().map(|l| l.key).collect();
    assert_eq!(keys, [prune.key()], "the expired lock object was removed");
    prune.release().await.unwrap();
    assert!(site.snapshot_ids().is_empty(), "the killed backup committed nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_commands_name_the_holder_and_when_its_lock_expires() {
    let site = FilesSite::new();
    site.init_and_backup();
    let repo = Repository::open(Arc::new(LocalStore::new(&site.repo))).await.unwrap();
    let prune = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap();
    let info = prune.info();
    let restored = site.path("restored");
    for run in [site.dr(&["backup"]), site.dr(&["verify"]), site.restore_into(&restored, &[]), site.dr(&["drill"])] {
        let error = run.user_error(1);
        assert_eq!(
            error,
            format!(
                "error: the repository is locked: prune by {}@{} (pid {}) holds it since {}",
                info.user,
                info.hostname,
                std::process::id(),
                info.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        );
    }
    let hint = site.dr(&["backup"]).fails(1).hint().unwrap();
    assert!(hint.contains("set [lock] wait"), "{hint}");
    // The holder renews its lease while it runs, so the expiry named is a little later each time.
    assert!(hint.contains("its lock expires by itself at "), "{hint}");
    assert!(!restored.exists(), "the blocked restore touched nothing");
    // Read-only listings take no lock.
    assert_eq!(site.dr(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 1);

    // With `wait`, a backup waits for the lock instead.
    site.write_config(&format!("{}[lock]\nlease = \"2s\"\nwait = \"60s\"\n", site.encryption()));
    let backup = spawn(site.command(&["backup"]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    prune.release().await.unwrap();
    let backup = finish(backup).ok();
    assert!(backup.stderr.contains("the repository is locked; waiting up to 1m 00s"), "{}", backup.stderr);
    assert!(backup.stderr.contains("repository lock taken after waiting"), "{}", backup.stderr);
    assert_eq!(site.dr(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 2);
}

// ---- In-process, on any store ----

/// A stale lock (its holder crashed long ago) is deleted and taken over; a live one written by hand blocks.
async fn hand_written_locks(repo: Repository) {
    let write = |expires_in: chrono::Duration, id: &str| {
        let now = Utc::now();
        let info = LockInfo {
            id: id.to_string(),
            kind: LockKind::Exclusive,
            purpose: "prune".to_string(),
            hostname: "gone-host".to_string(),
            pid: 4242,
            user: "root".to_string(),
            dr_version: "0.0.0".to_string(),
            created_at: now - chrono::Duration::hours(1),
            renewed_at: now - chrono::Duration::minutes(10),
            expires_at: now + expires_in,
        };
        let key = format!("locks/{id}.json");
        let repo = repo.clone();
        async move {
            repo.store().put(&key, Bytes::from(serde_json::to_vec(&info).unwrap())).await.unwrap();
            (key, info)
        }
    };
    let (stale_key, _) = write(chrono::Duration::minutes(-5), "20200101T000000Z-stale").await;
    let listed = repo.locks().await.unwrap();
    assert_eq!((listed.len(), listed[0].expired), (1, true), "{listed:?}");
    let lock = repo.lock(LockKind::Exclusive, &options("backup", Duration::ZERO)).await.unwrap();
    assert!(repo.store().head(&stale_key).await.unwrap().is_none(), "the stale lock was deleted");
    lock.release().await.unwrap();

    let (live_key, live) = write(chrono::Duration::minutes(5), "20200101T000000Z-live").await;
    let err = repo.lock(LockKind::Shared, &options("backup", Duration::ZERO)).await.unwrap_err();
    assert_locked_by(&err, &live, 4242);
    assert!(err.hint().unwrap().contains(&live.expires_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()));
    repo.store().delete(&live_key).await.unwrap();
    assert!(repo.locks().await.unwrap().is_empty());
}

/// The holder's renewals keep its lock alive well past one lease.
async fn renewal_keeps_a_lock(repo: Repository) {
    let lock = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap();
    let created = lock.info();
    for _ in 0..5 {
        tokio::time::sleep(LEASE / 2).await;
        assert!(!lock.is_lost());
        let err = repo.lock(LockKind::Shared, &options("backup", Duration::ZERO)).await.unwrap_err();
        assert!(matches!(err, Error::RepositoryLocked { .. }), "{err:?}");
    }
    let live = live_locks(&repo).await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].renewed_at >= created.renewed_at + chrono::Duration::from_std(LEASE).unwrap(), "{live:?}");
    assert!(live[0].expires_at > Utc::now());
    lock.check().unwrap();
    lock.release().await.unwrap();
}

/// A lock whose object is deleted, or replaced, behind its holder's back is lost within a renewal interval.
async fn a_lock_taken_from_its_holder_is_lost(repo: Repository) {
    for replace in [false, true] {
        let lock = repo.lock(LockKind::Shared, &options("backup", Duration::ZERO)).await.unwrap();
        if replace {
            let mut info = lock.info();
            info.hostname = "impostor".to_string();
            repo.store().put(lock.key(), Bytes::from(serde_json::to_vec(&info).unwrap())).await.unwrap();
        } else {
            repo.store().delete(lock.key()).await.unwrap();
        }
        tokio::time::timeout(LEASE, lock.lost()).await.expect("the holder learns it lost the lock within a lease");
        assert!(lock.is_lost() && lock.lost_token().is_cancelled());
        let err = lock.check().unwrap_err();
        let what = if replace { "was replaced" } else { "was deleted" };
        assert!(matches!(err, Error::LockLost { .. }) && err.to_string().contains(what), "{err}");
        assert!(err.to_string().starts_with("backup lost its repository lock: its lock object locks/"), "{err}");
        lock.release().await.unwrap();
        assert!(repo.locks().await.unwrap().is_empty());
    }
}

/// Many tasks want an exclusive lock at once: never two hold it together, and with a wait all get it in turn.
async fn racing_exclusive_locks(repo: Repository, tasks: usize) -> Duration {
    let inside = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (repo, inside, served) = (repo.clone(), inside.clone(), served.clone());
            tokio::spawn(async move {
                let lock = repo
                    .lock(LockKind::Exclusive, &options(&format!("racer {i}"), Duration::from_secs(120)))
                    .await
                    .unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders of an exclusive lock");
                tokio::time::sleep(Duration::from_millis(30)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                served.fetch_add(1, Ordering::SeqCst);
                lock.release().await.unwrap();
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(served.load(Ordering::SeqCst), tasks);
    assert!(repo.locks().await.unwrap().is_empty());
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_lock_is_taken_over_and_a_live_one_blocks() {
    let dir = tempfile::tempdir().unwrap();
    hand_written_locks(local_repository(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_keeps_a_lock_past_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    renewal_keeps_a_lock(local_repository(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_deleted_or_replaced_behind_its_holder_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    a_lock_taken_from_its_holder_is_lost(local_repository(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_exclusive_lockers_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let elapsed = racing_exclusive_locks(local_repository(dir.path()).await, 8).await;
    eprintln!("8 racers served in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_protocol_holds_on_s3() {
    let Some(garage) = Garage::start() else { return };
    let repository = |prefix: &'static str| {
        let options = garage.options(prefix);
        async move { Repository::init(Arc::new(S3Store::new(options).await)).await.unwrap() }
    };
    let (stale, renewal, lost, race) =
        (repository("stale").await, repository("renewal").await, repository("lost").await, repository("race").await);
    let ((), (), (), elapsed) = tokio::join!(
        hand_written_locks(stale),
        renewal_keeps_a_lock(renewal),
        a_lock_taken_from_its_holder_is_lost(lost),
        racing_exclusive_locks(race, 6),
    );
    eprintln!("6 racers served in {elapsed:?} on S3");
}

// ---- Renewal failures, and what the backup does about a lost lock ----

/// A store that can be made to fail (every request) or to stall object uploads, in front of a real one.
#[derive(Debug)]
struct Faulty {
    inner: LocalStore,
    broken: AtomicBool,
    /// Deletes are refused, as for a backed-up host's credentials (docs/s3.md).
    deny_delete: AtomicBool,
    /// While set, uploads of snapshot objects wait: a backup then holds its lock without finishing.
    stall_objects: AtomicBool,
}

impl Faulty {
    fn check(&self, key: &str) -> dr::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::Store {
                location: self.inner.location().to_string(),
                operation: "request",
                key: key.to_string(),
                source: "injected failure".into(),
                hint: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Faulty {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes) -> dr::Result<()> {
        self.check(key)?;
        self.inner.put(key, data).await
    }
    async fn put_stream(&self, key: &str) -> dr::Result<Box<dyn ObjectWriter>> {
        while key.starts_with("objects/") && self.stall_objects.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.check(key)?;
        self.inner.put_stream(key).await
    }
    async fn get(&self, key: &str) -> dr::Result<ObjectReader> {
        self.check(key)?;
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> dr::Result<Option<ObjectMeta>> {
        self.check(key)?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> dr::Result<Vec<ObjectMeta>> {
        self.check(prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> dr::Result<()> {
        self.check(key)?;
        if self.deny_delete.load(Ordering::SeqCst) {
            return Err(Error::StoreAccessDenied {
                location: self.location().to_string(),
                operation: "delete",
                key: key.to_string(),
                source: "AccessDenied".into(),
            });
        }
        self.inner.delete(key).await
    }
}

fn faulty(dir: &Path) -> Arc<Faulty> {
    Arc::new(Faulty {
        inner: LocalStore::new(dir),
        broken: false.into(),
        deny_delete: false.into(),
        stall_objects: false.into(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_that_cannot_be_renewed_for_a_lease_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = faulty(dir.path());
    let repo = Repository::init(store.clone()).await.unwrap();
    let lock = repo.lock(LockKind::Shared, &options("backup", Duration::ZERO)).await.unwrap();
    let broken_at = Instant::now();
    store.broken.store(true, Ordering::SeqCst);
    tokio::time::timeout(LEASE * 2, lock.lost()).await.expect("lost once the lease ran out");
    assert!(broken_at.elapsed() <= LEASE + Duration::from_millis(200), "{:?}", broken_at.elapsed());
    let err = lock.check().unwrap_err();
    assert!(err.to_string().contains("not renewed within its lease of 2.0s"), "{err}");
    assert!(err.hint().unwrap().contains("reachable"), "{:?}", err.hint());
    // Its object is still there, but expired: the next locker removes it.
    store.broken.store(false, Ordering::SeqCst);
    let listed = repo.locks().await.unwrap();
    assert!(listed.len() == 1 && listed[0].expired, "{listed:?}");
    repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap().release().await.unwrap();
    lock.release().await.unwrap();
    assert!(repo.locks().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_that_may_not_be_deleted_expire_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let store = faulty(dir.path());
    let repo = Repository::init(store.clone()).await.unwrap();
    store.deny_delete.store(true, Ordering::SeqCst);
    let backup = repo.lock(LockKind::Shared, &options("backup", Duration::ZERO)).await.unwrap();
    let info = backup.info();
    assert!(matches!(backup.release().await, Err(Error::StoreAccessDenied { .. })));
    // The released lock still blocks a prune until its lease runs out, and no longer than that.
    let err = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap_err();
    assert_locked_by(&err, &info, std::process::id());
    let prune = repo.lock(LockKind::Exclusive, &options("prune", Duration::from_secs(30))).await.unwrap();
    assert!(Utc::now() >= info.expires_at);
    // Left behind, expired and ignored: the released lock and the refused attempt, which could not be withdrawn.
    let listed = repo.locks().await.unwrap();
    let expired: Vec<&str> = listed.iter().filter(|l| l.expired).map(|l| l.key.as_str()).collect();
    assert_eq!(expired.len(), 2, "{listed:?}");
    assert!(expired.contains(&format!("locks/{}.json", info.id).as_str()), "{listed:?}");
    store.deny_delete.store(false, Ordering::SeqCst);
    prune.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_loses_its_lock_commits_nothing() {
    let site = FilesSite::new();
    site.write_config(&format!("{}{LOCK_TOML}", site.encryption()));
    let config: Config = dr::settings::load(Some(&site.config_path), &|_| None).unwrap().config;
    let store = faulty(&site.repo);
    store.stall_objects.store(true, Ordering::SeqCst);
    let repo = Repository::init(store.clone()).await.unwrap();

    let backup = {
        let (config, repo) = (config.clone(), repo.clone());
        tokio::spawn(async move {
            let options = BackupOptions { only: Vec::new(), cancel: Default::default() };
            dr::backup(&config, &repo, &options, &NoProgress).await
        })
    };
    let held = loop {
        if let Some(lock) = repo.locks().await.unwrap().pop() {
            break lock;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Someone takes the lock away (an operator, or a prune that judged it expired).
    repo.store().delete(&held.key).await.unwrap();
    let err = tokio::time::timeout(LEASE * 2, backup).await.expect("the backup stops").unwrap().unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
    assert!(err.to_string().starts_with("backup lost its repository lock"), "{err}");
    store.stall_objects.store(false, Ordering::SeqCst);
    assert!(repo.snapshot_ids().await.unwrap().is_empty(), "nothing committed");
    assert!(repo.store().list("objects/").await.unwrap().is_empty(), "nothing left behind");
    assert!(repo.locks().await.unwrap().is_empty(), "no lock left behind");

    // A backup that keeps its lock commits as always.
    let options = BackupOptions { only: Vec::new(), cancel: Default::default() };
    let report = dr::backup(&config, &repo, &options, &NoProgress).await.unwrap();
    assert_eq!(repo.snapshot_ids().await.unwrap(), [report.snapshot]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_waiting_for_the_lock_can_be_cancelled() {
    let site = FilesSite::new();
    site.write_config(&format!("{}[lock]\nlease = \"2s\"\nwait = \"10m\"\n", site.encryption()));
    let config: Config = dr::settings::load(Some(&site.config_path), &|_| None).unwrap().config;
    let repo = local_repository(&site.repo).await;
    let prune = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap();
    let options = BackupOptions { only: Vec::new(), cancel: Default::default() };
    let cancel = options.cancel.clone();
    let backup = {
        let repo = repo.clone();
        tokio::spawn(async move { dr::backup(&config, &repo, &options, &NoProgress).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(5), backup).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let keys: Vec<String> = repo.locks().await.unwrap().into_iter().map(|l| l.key).collect();
    assert_eq!(keys, [prune.key()], "the waiting backup left no attempt behind");
    prune.release().await.unwrap();
}

// ---- Real processes on S3 ----

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_backups_share_the_repository_and_keep_an_exclusive_lock_out() {
    let Some(garage) = Garage::start() else { return };
    let prefix = "locks/site";
    let site = Site::new().await;
    site.write_config_with_repository(&garage.repository_toml(prefix, None), LOCK_TOML);
    let s3 = |args: &[&str]| {
        let mut command = site.command(args);
        command.envs(garage.env());
        command
    };
    common::run(&mut s3(&["init"])).ok();
    common::add_random_table(&site.db, DATABASE, "blobs", 48).await;
    let repo = Repository::open(Arc::new(S3Store::new(garage.options(prefix)).await)).await.unwrap();

    let mut first = spawn(s3(&["backup"]));
    let mut second = spawn(s3(&["backup"]));
    let held = wait_for_locks(&repo, 2, &mut [&mut first, &mut second]).await;
    let err = repo.lock(LockKind::Exclusive, &options("prune", Duration::ZERO)).await.unwrap_err();
    let Error::RepositoryLocked { holder, .. } = &err else { panic!("{err:?}") };
    let pids = [first.id(), second.id()];
    assert!(
        held.iter().any(|h| *holder == format!("backup by {}@{} (pid {})", h.user, h.hostname, h.pid)),
        "{holder} names one of {held:?}"
    );
    assert!(pids.iter().any(|pid| holder.ends_with(&format!("(pid {pid})"))), "{holder}");

    let prune = repo.lock(LockKind::Exclusive, &options("prune", Duration::from_secs(120))).await.unwrap();
    let (first, second) = (finish(first).ok(), finish(second).ok());
    assert_eq!(live_locks(&repo).await.len(), 1, "both backups released their locks");
    let list = common::run(&mut s3(&["snapshots", "--json"])).ok().json();
    let mut ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected = [first.stdout.trim(), second.stdout.trim()];
    expected.sort();
    assert_eq!(ids, expected, "both committed");
    prune.release().await.unwrap();
    assert!(repo.locks().await.unwrap().is_empty());
}
