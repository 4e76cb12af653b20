//! No plaintext of a backup outlives the process that decrypted it: a parallel restore or a drill killed with
//! SIGKILL (no chance to clean up) leaves no decrypted archive, database or files where it staged them, and no
//! scratch PostgreSQL running for longer than it takes the next run to sweep it (docs/operations.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{DATABASE, Site, add_random_table, files_below, fingerprint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The files a dead run's directory may hold until the next run sweeps it: its lock, its list of staging
/// directories. Never data.
const BOOKKEEPING: [&str; 2] = ["lock", "staging"];

/// A run's own files beside the data: its lock, its staging marker, and pg_restore's lists of the archive
/// entries to restore (dump ids, nothing of the data).
fn is_bookkeeping(name: &str) -> bool {
    BOOKKEEPING.contains(&name) || name.ends_with(".list")
}

/// Whether `pid` is a process that still runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// Stops the scratch servers a killed drill left, whatever the test's outcome: a failing test must not leave
/// a PostgreSQL running on the machine.
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGQUIT);
            }
        }
    }
}

/// The size of the largest file under `dir` that `pid` holds open (named or already unlinked).
fn open_file_size_under(pid: u32, dir: &Path) -> u64 {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(|e| e.ok())
        .filter(|fd| fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(dir)))
        .filter_map(|fd| fs::metadata(fd.path()).ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .max()
        .unwrap_or(0)
}

/// Runs until `ready` says so, failing the test if `child` ends first or a minute passes.
fn wait_for(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "dr finished before {what}");
        assert!(Instant::now() < deadline, "dr never got to {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill_9(mut child: Child) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
}

/// Files under `tmp` that are not a dead run's bookkeeping.
fn data_files(tmp: &Path) -> Vec<String> {
    files_below(tmp)
        .into_iter()
        .filter(|f| !Path::new(f).file_name().and_then(|n| n.to_str()).is_some_and(is_bookkeeping))
        .collect()
}

fn with_tmp(mut command: Command, tmp: &Path) -> Command {
    command.env("TMPDIR", tmp).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_parallel_restore_leaves_no_plaintext_and_the_next_one_sweeps() {
    let site = Site::new().await;
    add_random_table(&site.db, DATABASE, "blobs", 48).await;
    let snapshot = site.backup();
    let tmp = site.path("tmp");
    fs::create_dir(&tmp).unwrap();
    let target = common::scratch().await;
    let restore = |database: &str| {
        let mut command = site.command(&["restore", "--to", &snapshot, "--only", "app", "--jobs", "2"]);
        command.args(["--into", &format!("app={}", target.url(database))]);
        with_tmp(command, &tmp)
    };

    // Killed while the decrypted archive is staged (a few MiB of it written, or all and pg_restore at work).
    let mut child = restore("first").spawn().unwrap();
    let pid = child.id();
    wait_for(&mut child, "staging the archive", || open_file_size_under(pid, &tmp) >= 2 << 20);
    kill_9(child);
    let left = data_files(&tmp);
    assert!(left.is_empty(), "a killed restore left decrypted data in $TMPDIR: {left:?}");

    // The next restore works, sweeps what the killed one left, and leaves nothing itself.
    let output = restore(DATABASE).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("left by a dr run that was killed"), "the sweep is logged:\n{stderr}");
    assert_eq!(files_below(&tmp), Vec::<String>::new(), "$TMPDIR after the next restore");
    assert_eq!(fingerprint(&target, DATABASE).await, fingerprint(&site.db, DATABASE).await);
}

/// The data directories of scratch clusters under `tmp`, with their postmasters' pids.
fn postmasters_under(tmp: &Path) -> Vec<(PathBuf, i32)> {
    walkdir::WalkDir::new(tmp)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "postmaster.pid")
        .filter_map(|e| {
            let text = fs::read_to_string(e.path()).ok()?;
            let pid = text.lines().next()?.trim().parse().ok()?;
            Some((e.path().parent()?.to_path_buf(), pid))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_drill_is_swept_by_the_next_run() {
    let site = Site::new().await;
    add_random_table(&site.db, DATABASE, "blobs", 32).await;
    site.backup();
    let tmp = site.path("tmp");
    fs::create_dir(&tmp).unwrap();

    // Killed mid-restore: its scratch cluster is up and the database is being restored into it.
    let mut child = with_tmp(site.command(&["drill"]), &tmp).spawn().unwrap();
    let dr_pid = child.id();
    wait_for(&mut child, "restoring into the scratch cluster", || {
        let restoring = fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1).map(String::from));
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            parent.as_deref() == Some(&dr_pid.to_string()) && String::from_utf8_lossy(&cmdline).contains("pg_restore")
        });
        restoring && !postmasters_under(&tmp).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    kill_9(child);
    let leftovers = postmasters_under(&tmp);
    let _reaper = Reaper(leftovers.iter().map(|(_, pid)| *pid).collect());
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let (data_dir, postmaster) = leftovers[0].clone();
    assert!(alive(postmaster), "the killed drill's scratch PostgreSQL still runs, until a sweep");

    // The next drill stops it, removes its directory (the restored database with it), and passes.
    let output = with_tmp(site.command(&["drill"]), &tmp).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stopped the scratch PostgreSQL"), "the sweep is logged:\n{stderr}");
    assert!(!data_dir.exists(), "the killed drill's cluster is removed: {}", data_dir.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(postmaster) {
        assert!(Instant::now() < deadline, "the killed drill's postmaster {postmaster} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(files_below(&tmp), Vec::<String>::new(), "$TMPDIR after the next drill");
}
