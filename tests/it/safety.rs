//! What must never happen: a crashed or failed backup that shows up as a snapshot or leaves objects behind, a
//! restore over data that was not meant to be replaced, an archive that writes outside its target, a password
//! on a child's command line. (SIGINT and SIGTERM, which dr handles, are in tests/it/signals.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    DATABASE, FilesSite, Site, UPLOAD_EXCLUDES, add_random_table, database_exists, entries_below, files_below,
    fingerprint, listing, object_entry, query_strings, read_manifest, sql, write_manifest,
};

/// Processes whose parent is `pid`, with their command lines (NUL-separated arguments joined by spaces).
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
        let Some(parent) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) else {
            continue;
        };
        if parent == pid.to_string() {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            children.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    children
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_backup_leaves_no_snapshot_and_the_next_one_works() {
    let site = Site::new().await;
    // Random rows: the dump streams for a moment. The password is not needed (the scratch server trusts local
    // connections) but must travel to pg_dump in its environment, never on its command line.
    add_random_table(&site.db, DATABASE, "blobs", 24).await;
    let url = site.db.url(DATABASE);
    let config = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, config.replace(&url, &format!("{url} password=hunter2"))).unwrap();
    let first = String::from_utf8(site.command(&["backup", "--only", "config"]).output().unwrap().stdout).unwrap();
    let first = first.trim().to_string();
    assert_eq!(site.snapshot_ids(), std::slice::from_ref(&first));

    let mut child = site.command(&["backup"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let objects = site.repo.join("objects");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait until the dump's hidden partial object holds a few chunks: the backup is mid-stream.
    let partial = loop {
        let found = files_below(&objects).into_iter().find(|f| f.contains("/app/.pg_dump.zst.age.partial-"));
        if let Some(partial) = found.filter(|f| fs::metadata(objects.join(f)).is_ok_and(|m| m.len() >= 2 << 20)) {
            break partial;
        }
        assert!(Instant::now() < deadline, "the backup never started writing the dump");
        assert!(child.try_wait().unwrap().is_none(), "the backup finished before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    };
    let children = children_of(child.id());
    let pg_dump = children.iter().find(|(_, cmdline)| cmdline.contains("pg_dump")).expect("pg_dump is running");
    for (_, cmdline) in &children {
        assert!(!cmdline.contains("hunter2"), "a password on a child's command line: {cmdline}");
    }
    let environ = fs::read(format!("/proc/{}/environ", pg_dump.0)).unwrap();
    assert!(environ.split(|b| *b == 0).any(|v| v == b"PGPASSWORD=hunter2"), "pg_dump gets it in PGPASSWORD");

    child.kill().unwrap(); // SIGKILL: a crash, no chance to clean up
    let output = child.wait_with_output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&output.status), Some(9));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));

    // Invisible: no new snapshot, every listed one still verifies. What the crash left is only the hidden
    // partial object of the killed snapshot, and perhaps that snapshot's finished objects, which no manifest
    // names (a later prune deletes them).
    assert_eq!(site.snapshot_ids(), std::slice::from_ref(&first));
    site.dr(&["verify", "--all"]).ok();
    let killed = partial.split('/').next().unwrap().to_string();
    assert_ne!(killed, first);
    for file in files_below(&objects) {
        assert!(file.starts_with(&format!("{first}/")) || file.starts_with(&format!("{killed}/")), "{file}");
    }
    assert!(!site.manifest_path(&killed).exists());

    // Ids have second precision; the next snapshot must sort after the first.
    common::next_second();
    let run = site.dr(&["backup"]).ok();
    assert!(!run.all_output().contains("hunter2"));
    let second = run.stdout.trim().to_string();
    assert_eq!(site.snapshot_ids(), [first, second.clone()]);
    assert!(!fs::read_to_string(site.manifest_path(&second)).unwrap().contains("hunter2"));
    let target = common::scratch().await;
    site.dr(&["restore", "--to", &second, "--only", "app", "--into", &format!("app={}", target.url(DATABASE))]).ok();
    assert_eq!(fingerprint(&target, DATABASE).await, fingerprint(&site.db, DATABASE).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_backup_leaves_no_snapshot_and_no_objects() {
    let site = Site::new().await;
    let objects = site.repo.join("objects");

    // The last source is missing: found before anything is dumped or written (the checks up front), so the
    // backup never starts. (The case below, and tests/it/signals.rs, fail after objects were written.)
    let uploads = site.uploads_dir();
    let moved = site.path("uploads-elsewhere");
    fs::rename(&uploads, &moved).unwrap();
    let run = site.dr(&["backup"]);
    assert!(
        !run.stderr.contains("dumping database"),
        "nothing is dumped for a backup that cannot run:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("backup started"), "{}", run.stderr);
    let error = run.user_error(1);
    assert!(error.contains("\"uploads\"") && error.contains(&uploads.display().to_string()), "{error}");
    assert!(site.snapshot_ids().is_empty());
    assert_eq!(files_below(&objects), Vec::<String>::new(), "no object, not even a hidden partial one");
    fs::rename(&moved, &uploads).unwrap();

    // A role that may read nothing: dr's own row counts in the dump's snapshot fail, and say why.
    sql(&site.db, DATABASE, "CREATE ROLE limited LOGIN").await;
    let config = fs::read_to_string(&site.config_path).unwrap();
    let url = site.db.url(DATABASE);
    let limited = url.replace("user=postgres", "user=limited");
    fs::write(&site.config_path, config.replace(&url, &limited)).unwrap();
    let error = site.dr(&["backup"]).user_error(1);
    let redacted = dr::pg::ConnInfo::parse(&limited).unwrap().redacted();
    assert!(error.contains("(source \"app\")") && error.contains(&redacted), "{error}");
    assert!(error.contains("ERROR: permission denied for"), "{error}");
    assert!(site.snapshot_ids().is_empty());
    assert_eq!(files_below(&objects), Vec::<String>::new());

    // A role that may read the tables but not the large objects: pg_dump fails half-way, and its own message
    // is quoted.
    sql(
        &site.db,
        DATABASE,
        "GRANT USAGE ON SCHEMA public, analytics TO limited;
         GRANT SELECT ON ALL TABLES IN SCHEMA public, analytics TO limited;
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, analytics TO limited;",
    )
    .await;
    let run = site.dr(&["backup"]);
    assert!(run.stderr.contains("permission denied for large object"), "pg_dump's stderr is quoted:\n{}", run.stderr);
    let error = run.user_error(1);
    assert!(error.contains("pg_dump failed"), "{error}");
    assert!(site.snapshot_ids().is_empty());
    assert_eq!(files_below(&objects), Vec::<String>::new());

    // And the next backup, with the problem fixed, works.
    fs::write(&site.config_path, config).unwrap();
    site.backup();
    assert_eq!(site.snapshot_ids().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_targets_that_are_not_empty_and_force_replaces_them() {
    let site = Site::new().await;
    let snapshot = site.backup();
    let at_backup = fingerprint(&site.db, DATABASE).await;
    let config_at_backup = listing(&site.config_dir(), &[]);
    let uploads_in_snapshot = listing(&site.uploads_dir(), &UPLOAD_EXCLUDES);

    // Life goes on after the backup.
    sql(
        &site.db,
        DATABASE,
        "DELETE FROM comments WHERE id % 2 = 0; UPDATE users SET display_name = 'changed';
         CREATE TABLE after_backup (id int PRIMARY KEY); INSERT INTO after_backup VALUES (1)",
    )
    .await;
    fs::write(site.config_dir().join("app.toml"), "changed after the backup\n").unwrap();
    fs::write(site.uploads_dir().join("new-upload.jpg"), "new").unwrap();
    fs::remove_file(site.uploads_dir().join("2026/11/0001.jpg")).unwrap();
    let db_now = fingerprint(&site.db, DATABASE).await;
    let config_now = listing(&site.config_dir(), &[]);
    let uploads_now = listing(&site.uploads_dir(), &[]);

    // Refused, every target named, nothing changed.
    let error = site.dr(&["restore", "--to", "latest"]).user_error(1);
    for name in [site.db.conninfo(DATABASE).redacted(), site.config_dir().display().to_string()] {
        assert!(error.contains(&name), "{name} is named: {error}");
    }
    assert!(error.contains(&site.uploads_dir().display().to_string()), "{error}");
    assert!(error.contains("not empty"), "{error}");
    assert_eq!(fingerprint(&site.db, DATABASE).await, db_now);
    assert_eq!(listing(&site.config_dir(), &[]), config_now);
    assert_eq!(listing(&site.uploads_dir(), &[]), uploads_now, "no staging directory either");

    // A refusal comes before anything is done: a database that would have been created is not.
    let fresh = site.db.url("fresh");
    let error = site.dr(&["restore", "--to", "latest", "--into", &format!("app={fresh}")]).user_error(1);
    assert!(!error.contains("fresh"), "the empty target is fine: {error}");
    assert!(!database_exists(&site.db, "fresh").await);

    // --force: back to the snapshot.
    let run = site.dr(&["restore", "--to", &snapshot, "--force"]).ok();
    assert!(run.stdout.contains(&snapshot), "{}", run.stdout);
    let mut restored = fingerprint(&site.db, DATABASE).await;
    // The database gets the snapshot's objects dropped and recreated; a table created after the backup is not
    // in the snapshot and is left as it is (RestoreOptions::force).
    assert_eq!(restored.remove("public.after_backup").as_deref(), Some(db_now["public.after_backup"].as_str()));
    assert_eq!(restored, at_backup, "every table of the snapshot is back as it was");
    // A directory is replaced whole: it holds exactly what the snapshot holds, so files added since are gone,
    // and so are the ones the excludes kept out of the backup (RestoreOptions::force).
    assert_eq!(listing(&site.config_dir(), &[]), config_at_backup);
    assert_eq!(listing(&site.uploads_dir(), &[]), uploads_in_snapshot);
    assert!(!site.uploads_dir().join("new-upload.jpg").exists() && !site.uploads_dir().join("private").exists());
    let rows =
        query_strings(&site.db, DATABASE, "SELECT count(*)::text FROM users WHERE display_name = 'changed'").await;
    assert_eq!(rows, ["0"]);

    // The same with a streaming restore: --clean inside its one transaction.
    sql(&site.db, DATABASE, "DELETE FROM likes; UPDATE posts SET caption = 'changed again'").await;
    site.dr(&["restore", "--to", &snapshot, "--force", "--only", "app", "--jobs", "1"]).ok();
    let mut restored = fingerprint(&site.db, DATABASE).await;
    restored.remove("public.after_backup");
    assert_eq!(restored, at_backup);
}

/// A tar entry with any name and link name, written byte for byte (the tar crate's builder refuses `..` and
/// absolute names, as it should).
fn raw_entry(tar: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    tar.append(&header, data).unwrap();
}

/// One crafted tar entry: its kind, path and link target.
type Entry<'a> = (tar::EntryType, &'a str, &'a str);

/// An archive of a harmless file followed by `entries`.
fn crafted(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    raw_entry(&mut tar, tar::EntryType::Regular, "harmless.jpg", "", b"fine");
    for (kind, path, link) in entries {
        let data: &[u8] = if *kind == tar::EntryType::Regular { b"evil" } else { b"" };
        raw_entry(&mut tar, *kind, path, link, data);
    }
    tar.into_inner().unwrap()
}

/// Puts `archive` in the repository as the uploads archive of `snapshot`, compressed and encrypted exactly as
/// dr does it, and makes the manifest match it: only the archive's content can give it away.
async fn install(site: &FilesSite, snapshot: &str, archive: Vec<u8>) {
    let store = dr::store::LocalStore::new(&site.repo);
    let recipients = dr::Recipients::parse(std::slice::from_ref(&site.recipient)).unwrap();
    let key = format!("objects/{snapshot}/uploads/files.tar.zst.age");
    let compression = dr::pipeline::Compression { level: 3, threads: 1 };
    let progress: Arc<dyn dr::ProgressTask> = Arc::new(dr::NoProgress);
    let ((), sealed) = dr::pipeline::upload(&store, &key, &recipients, compression, progress, move |writer| {
        writer.write_all(&archive).map_err(|e| dr::Error::io("writing the crafted archive", e))
    })
    .await
    .unwrap();
    let mut manifest = read_manifest(&site.repo, snapshot);
    let entry = object_entry(&mut manifest, "uploads/files.tar.zst.age");
    entry["stored_size"] = sealed.stored_size.into();
    entry["sha256"] = sealed.sha256.into();
    entry["plain_size"] = sealed.plain_size.into();
    write_manifest(&site.repo, snapshot, &manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_archives_cannot_reach_outside_the_target() {
    use tar::EntryType::{Link, Regular, Symlink};
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    // Everything lives in the test's own directory: `outside` is what an attacker would like to reach.
    let restore_dir = site.path("restore");
    let target = restore_dir.join("uploads");
    let outside = site.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "keep me").unwrap();
    let absolute = outside.join("absolute-evil");
    let absolute = absolute.to_str().unwrap();
    let outside_str = outside.to_str().unwrap();
    // From the target, `../../outside` is the outside directory (target = <site>/restore/uploads).
    // What the archive tries, its entries, and what the error must name.
    let cases: Vec<(&str, Vec<Entry<'_>>, &str)> = vec![
        ("a parent-directory path", vec![(Regular, "../evil", "")], "../evil"),
        ("a deeper parent-directory path", vec![(Regular, "a/../../../outside/evil", "")], "a/../../../outside/evil"),
        ("an absolute path", vec![(Regular, absolute, "")], absolute),
        (
            "an absolute symlink and a file through it",
            vec![(Symlink, "link", outside_str), (Regular, "link/evil", "")],
            "\"link\"",
        ),
        (
            "a relative symlink and a file through it",
            vec![(Symlink, "up", "../../outside"), (Regular, "up/evil", "")],
            "\"up\"",
        ),
        ("a hard link to a file outside", vec![(Link, "hard", "../../outside/secret")], "\"hard\""),
        // Written out, `a/..` stays inside; but with `a -> .` it is the target's parent.
        ("a chain of links", vec![(Symlink, "a", "."), (Symlink, "b", "a/.."), (Regular, "b/evil", "")], "\"b\""),
        ("a chain of links whose meaning changes later", vec![(Symlink, "b", "a/.."), (Symlink, "a", ".")], "\"b\""),
        (
            "a file written through a link whose meaning changed",
            vec![(Symlink, "b", "a/.."), (Symlink, "a", "."), (Regular, "b/evil", "")],
            "\"b/evil\"",
        ),
    ];
    let occupied = site.path("occupied");
    fs::create_dir_all(&occupied).unwrap();
    fs::write(occupied.join("existing.jpg"), "existing").unwrap();
    for (what, entries, named) in cases {
        install(&site, &snapshot, crafted(&entries)).await;
        for (dir, force) in [(&target, false), (&occupied, true)] {
            let into = format!("uploads={}", dir.display());
            let mut args = vec!["restore", "--to", "latest", "--only", "uploads", "--into", &into];
            if force {
                args.push("--force");
            }
            let error = site.dr(&args).user_error(1);
            let refused = error.contains("unsafe entry") || error.contains("pointing outside the target");
            assert!(refused && error.contains(named), "{what}: {error}");
            assert_eq!(entries_below(&outside), ["secret"], "{what}: nothing was written outside");
            assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), "keep me", "{what}");
            assert!(
                !restore_dir.exists(),
                "{what}: the target was not even created: {:?}",
                entries_below(&restore_dir)
            );
            assert_eq!(entries_below(&occupied), ["existing.jpg"], "{what}: an existing target is untouched");
        }
    }

    // The same machinery restores an honest archive with inside links.
    install(&site, &snapshot, crafted(&[(Symlink, "a", "."), (Symlink, "b", "a/harmless.jpg")])).await;
    let into = format!("uploads={}", target.display());
    site.dr(&["restore", "--to", "latest", "--only", "uploads", "--into", &into]).ok();
    assert_eq!(fs::read_to_string(target.join("b")).unwrap(), "fine");
    assert_eq!(entries_below(&target), ["a", "b", "harmless.jpg"]);
}

/// With `external_symlinks = true` a link may point anywhere, but nothing is ever written, created or chmod-ed
/// through one.
#[tokio::test(flavor = "multi_thread")]
async fn external_symlinks_are_restored_when_allowed_but_never_written_through() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    let outside = site.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "keep me").unwrap();
    let outside_str = outside.to_str().unwrap();
    let target = site.path("restore/uploads");
    let into = format!("uploads={}", target.display());
    let restore = ["restore", "--to", "latest", "--only", "uploads", "--into", &into, "--force"];

    // Refused by default, with a hint that names the setting.
    install(&site, &snapshot, crafted(&[(Symlink, "current", outside_str)])).await;
    let run = site.dr(&restore);
    let hint = run.hint().unwrap_or_default();
    let error = run.user_error(1);
    assert!(error.contains("\"current\" pointing outside the target"), "{error}");
    assert!(hint.contains("external_symlinks = true"), "{hint}");

    // Allowed for this source: the link comes back as it was.
    let config = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, format!("{config}external_symlinks = true\n")).unwrap();
    site.dr(&restore).ok();
    assert_eq!(fs::read_link(target.join("current")).unwrap(), outside);

    // Still never a way out.
    let mode_before = fs::metadata(&outside).unwrap().permissions();
    let cases: Vec<(&str, Vec<Entry<'_>>)> = vec![
        ("a file through the link", vec![(Symlink, "ext", outside_str), (Regular, "ext/evil", "")]),
        ("a directory under the link", vec![(Symlink, "ext", outside_str), (Directory, "ext/evil", "")]),
        ("a directory entry over the link", vec![(Symlink, "ext", outside_str), (Directory, "ext", "")]),
        ("a hard link through the link", vec![(Symlink, "ext", outside_str), (Link, "hard", "ext/secret")]),
    ];
    for (what, entries) in cases {
        install(&site, &snapshot, crafted(&entries)).await;
        let error = site.dr(&restore).user_error(1);
        assert!(error.contains("unsafe entry"), "{what}: {error}");
        assert_eq!(entries_below(&outside), ["secret"], "{what}: nothing was written outside");
        assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), "keep me", "{what}");
        assert_eq!(fs::metadata(&outside).unwrap().permissions(), mode_before, "{what}: no chmod through a link");
        assert_eq!(fs::read_link(target.join("current")).unwrap(), outside, "{what}: the last restore stands");
    }
}

/// A real tree with a link out of it: the backup warns at once (not at restore time, during an incident), and
/// the setting makes it restorable.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_out_of_the_source_is_reported_at_backup_time() {
    let site = FilesSite::new();
    let uploads = site.path("site/uploads");
    std::os::unix::fs::symlink("/srv/shared/watermark.png", uploads.join("watermark.png")).unwrap();
    std::os::unix::fs::symlink("../../elsewhere", uploads.join("up")).unwrap();
    site.dr(&["init"]).ok();
    let report = site.dr(&["backup", "--json"]).ok().json();
    let warnings = uploads_warnings(&report);
    let warning = warnings.iter().filter_map(|w| w.as_str()).find(|w| w.contains("outside the source")).unwrap();
    assert!(warning.starts_with("2 symlinks point outside the source"), "{warning}");
    assert!(
        warning.contains("watermark.png -> /srv/shared/watermark.png") && warning.contains("up -> ../../elsewhere")
    );
    assert!(warning.contains("external_symlinks = true"), "{warning}");

    let target = site.path("restore/uploads");
    let into = format!("uploads={}", target.display());
    let error = site.dr(&["restore", "--to", "latest", "--only", "uploads", "--into", &into]).user_error(1);
    assert!(error.contains("pointing outside the target"), "{error}");
    assert!(!target.exists(), "a refused restore creates nothing");

    let config = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, format!("{config}external_symlinks = true\n")).unwrap();
    let report = site.dr(&["backup", "--json"]).ok().json();
    let warnings = uploads_warnings(&report);
    assert!(warnings.iter().all(|w| !w.as_str().unwrap().contains("outside the source")), "{warnings:?}");
    site.dr(&["restore", "--to", "latest", "--only", "uploads", "--into", &into]).ok();
    assert_eq!(fs::read_link(target.join("watermark.png")).unwrap(), Path::new("/srv/shared/watermark.png"));
    assert_eq!(fs::read_link(target.join("up")).unwrap(), Path::new("../../elsewhere"));
}

fn uploads_warnings(report: &serde_json::Value) -> Vec<serde_json::Value> {
    let sources = report["sources"].as_array().unwrap();
    let uploads = sources.iter().find(|s| s["name"] == "uploads").unwrap();
    uploads["warnings"].as_array().unwrap().clone()
}
