//! A file that changes while `dr backup` reads it is stored as far as it was read and said to be incomplete:
//! `dr backup` commits the snapshot and exits with 3 naming the files, `dr snapshots` and `dr verify` list them,
//! and a restore names them and never gives back the archive's zero padding as if it were data.
//!
//! Deterministic without any hook in dr: the test waits until dr has the file open and has read part of it
//! (its descriptor's position in /proc), stops the whole process with SIGSTOP, changes the file, and lets it go
//! on with SIGCONT. The files are large and sparse so that the read is still under way when it is caught.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::FilesSite;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SIZE: u64 = 128 << 20;
const HEAD: &[u8] = b"the first bytes of a file that is large, mostly a hole";

/// A sparse file of `SIZE` bytes that starts with `HEAD`.
fn large_sparse_file(path: &Path) {
    let mut file = fs::File::create(path).unwrap();
    file.write_all(HEAD).unwrap();
    file.set_len(SIZE).unwrap();
}

/// The position of `pid`'s open descriptor on `path`, if it has one.
fn read_position(pid: u32, path: &Path) -> Option<u64> {
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if fs::read_link(fd.path()).ok().as_deref() == Some(path) {
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).ok()?;
            return info.lines().find_map(|l| l.strip_prefix("pos:")).and_then(|p| p.trim().parse().ok());
        }
    }
    None
}

/// True when every thread of `pid` is stopped.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
    })
}

/// Waits until dr has read part of `path` (so it took the file's size already and is not done with it), then
/// stops dr and returns how far it has read. Fails the test if dr finished the file unseen.
fn stop_while_reading(child: &Child, path: &Path) -> u64 {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "dr never read {}", path.display());
        if read_position(pid, path).is_some_and(|pos| pos > 0) {
            kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
            while !all_threads_stopped(pid) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let pos = read_position(pid, path).expect("the file is still open while dr is stopped");
            assert!(0 < pos && pos < SIZE, "caught {} at {pos} of {SIZE}", path.display());
            return pos;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn resume(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT).unwrap();
}

fn read_head(path: &Path, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fs::File::open(path).unwrap().read_exact(&mut bytes).unwrap();
    bytes
}

#[test]
fn files_that_shrink_or_grow_while_read_make_an_incomplete_snapshot_that_says_so_and_restores_without_padding() {
    files_that_change_while_read("tar");
}

/// The same promises for a chunked source, which stores exactly the bytes it read (it has no header that
/// declared a size to pad to).
#[test]
fn a_chunked_source_stores_files_that_change_while_read_as_read_and_says_so() {
    files_that_change_while_read("chunked");
}

fn files_that_change_while_read(format: &str) {
    let site = FilesSite::new();
    let audit = site.path("audit.jsonl");
    let config =
        fs::read_to_string(&site.config_path).unwrap().replace("format = \"tar\"", &format!("format = \"{format}\""));
    fs::write(&site.config_path, format!("{config}\n[audit]\npath = \"{}\"\n", audit.display())).unwrap();
    site.dr(&["init"]).ok();
    let logs = site.path("site/uploads/logs");
    fs::create_dir_all(&logs).unwrap();
    let (shrinks, grows) = (logs.join("a-shrinks.log"), logs.join("b-grows.log"));
    large_sparse_file(&shrinks);
    large_sparse_file(&grows);

    let child = site.command(&["backup"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Cut down to what dr has read so far: the file now holds exactly what the snapshot can hold of it.
    let read = stop_while_reading(&child, &shrinks);
    OpenOptions::new().write(true).open(&shrinks).unwrap().set_len(read).unwrap();
    resume(&child);
    stop_while_reading(&child, &grows);
    let mut appended = OpenOptions::new().write(true).open(&grows).unwrap();
    appended.seek(SeekFrom::End(0)).unwrap();
    appended.write_all(b"a line written during the backup\n").unwrap();
    resume(&child);
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());

    // Committed, but not whole: exit code 3 and a warning naming both files.
    assert_eq!(output.status.code(), Some(3), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let snapshot = stdout.trim().to_string();
    assert!(common::manifest_path(&site.repo, &snapshot).exists(), "the snapshot is committed: {stdout}");
    let warning = stderr.lines().find(|l| l.starts_with("warning: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(!stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
    assert!(warning.contains(&snapshot) && warning.contains("2 files"), "{warning}");
    assert!(warning.contains("logs/a-shrinks.log shrank") && warning.contains("logs/b-grows.log grew"), "{warning}");
    assert!(stderr.lines().last().unwrap().starts_with("hint: "), "{stderr}");
    // The audit log says so too, with the count only (the paths stay in the encrypted index).
    let entry: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&audit).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!((entry["action"].as_str(), entry["outcome"].as_str()), (Some("backup"), Some("success")), "{entry}");
    assert_eq!(entry["detail"], "2 files stored incomplete (changed while read)", "{entry}");

    // The public manifest counts them and names nothing.
    let manifest = fs::read_to_string(common::manifest_path(&site.repo, &snapshot)).unwrap();
    let public: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let uploads = public["sources"].as_array().unwrap().iter().find(|s| s["name"] == "uploads").unwrap();
    assert_eq!(uploads["incomplete_files"], 2, "{uploads}");
    assert!(!manifest.contains("shrinks") && !manifest.contains("grows"), "paths stay private");

    let listed = site.dr(&["snapshots"]).ok().stdout;
    assert!(listed.contains("uploads") && listed.contains("INCOMPLETE: 2 files"), "{listed}");
    let json = site.dr(&["snapshots", "--json"]).ok().json();
    assert_eq!(json[0]["incomplete_files"], 2, "{json}");

    // Verify: the objects are whole (exit 0), and the incomplete files are listed with what happened.
    let verified = site.dr(&["verify"]).ok().stdout;
    assert!(
        verified.contains(&format!(
            "incomplete: uploads: logs/a-shrinks.log shrank while it was read: {read} bytes read of the {SIZE}"
        )),
        "{verified}"
    );
    assert!(verified.contains("incomplete: uploads: logs/b-grows.log grew while it was read"), "{verified}");
    let json = site.dr(&["verify", "--json"]).ok().json();
    assert_eq!(json["snapshots"][0]["incomplete_files"].as_array().unwrap().len(), 2, "{json}");

    // The weekly report lists them too.
    let report = site.dr(&["report"]).ok().stdout;
    assert!(report.contains("hold files stored incomplete") && report.contains("## Incomplete files"), "{report}");
    assert!(report.contains("logs/a-shrinks.log shrank") && report.contains("logs/b-grows.log grew"), "{report}");
    let json = site.dr(&["report", "--format", "json"]).ok().json();
    assert_eq!(json["snapshots"][0]["incomplete_files"].as_array().unwrap().len(), 2, "{json}");

    // A drill restores them as a restore does: its files check passes with a warning that names them.
    let drill = site.dr(&["drill"]);
    assert_eq!(drill.code, 0, "{}", drill.all_output());
    assert!(drill.all_output().contains("2 files stored incomplete"), "{}", drill.all_output());

    // A restore names both; the shrunk file comes back as the bytes read, never padded with zeros to the size
    // it had when opened; the grown one as the bytes it had then.
    let restored = site.path("restored");
    let run = site.restore_into(&restored, &[]).ok();
    let said = run.all_output();
    assert!(said.contains("logs/a-shrinks.log shrank while it was backed up"), "{said}");
    assert!(said.contains("logs/b-grows.log grew while it was backed up"), "{said}");
    let back = restored.join("uploads/logs");
    assert_eq!(fs::metadata(back.join("a-shrinks.log")).unwrap().len(), read, "no zero padding");
    assert_eq!(fs::read(back.join("a-shrinks.log")).unwrap(), fs::read(&shrinks).unwrap());
    assert_eq!(fs::metadata(back.join("b-grows.log")).unwrap().len(), SIZE);
    assert_eq!(read_head(&back.join("b-grows.log"), HEAD.len()), HEAD);
}
