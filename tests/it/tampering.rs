//! A damaged repository is never restored from. A flipped byte, a cut-off or missing object, a tampered manifest
//! and the wrong key are each caught by `dr verify` and `dr restore`, named in the error, and stop the restore
//! of that source before its target is touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::path::Path;

use common::{
    DATABASE, FilesSite, Site, UPLOAD_EXCLUDES, database_exists, entries_below, fingerprint, flip_byte, listing,
    object_entry, read_manifest, roles, scratch, sql, truncate, write_manifest, write_random_file,
};

/// Keys of the objects `dr verify --json` reports as bad, with their errors.
fn bad_objects(report: &serde_json::Value) -> Vec<(String, String)> {
    report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["objects"].as_array().unwrap().iter())
        .filter(|o| !o["error"].is_null())
        .map(|o| (o["key"].as_str().unwrap().to_string(), o["error"].as_str().unwrap().to_string()))
        .collect()
}

/// Restores only the database into `url`, with `--jobs jobs` and `extra` arguments.
fn restore_app(site: &Site, url: &str, jobs: &str, extra: &[&str]) -> common::Run {
    let into = format!("app={url}");
    let mut args = vec!["restore", "--to", "latest", "--only", "app", "--jobs", jobs, "--into", &into];
    args.extend_from_slice(extra);
    site.dr(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_the_database_dump_is_named_and_nothing_is_restored() {
    let site = Site::new().await;
    // 2 MiB of random rows: the dump spans many age chunks, so the damage near its end is found only after
    // pg_restore has already been fed most of the archive.
    common::add_random_table(&site.db, DATABASE, "blobs", 2).await;
    let snapshot = site.backup();
    let key = site.object_key(&snapshot, "app/pg_dump.zst.age");
    flip_byte(&site.object(&snapshot, "app/pg_dump.zst.age"), -300);

    let run = site.dr(&["verify"]);
    assert!(run.stdout.contains(&format!("{snapshot} BAD")), "{}", run.stdout);
    let error = run.user_error(1);
    assert!(error.contains(&key) && error.contains("corrupt"), "{error}");

    let run = site.dr(&["verify", "--all", "--json"]);
    let report = run.json();
    run.user_error(1);
    let bad = bad_objects(&report);
    assert_eq!(bad.len(), 1, "only the damaged object is bad: {bad:?}");
    assert_eq!(bad[0].0, key);
    assert!(bad[0].1.contains("age authentication"), "{}", bad[0].1);
    assert_eq!(report["snapshots"][0]["objects"].as_array().unwrap().len(), 6, "the others were checked too");

    // A fresh server: neither a parallel restore (which restores the schema while it stages the archive) nor a
    // streaming one (which feeds pg_restore one transaction and kills it at the damage) leaves anything behind.
    let target = scratch().await;
    for jobs in ["2", "1"] {
        let run = restore_app(&site, &target.url(DATABASE), jobs, &[]);
        // Both create the database they restore into, and take it back.
        assert!(run.stderr.contains("creating the target database"), "--jobs {jobs}: {}", run.stderr);
        let error = run.user_error(1);
        assert!(error.contains(&key) && error.contains("app:"), "--jobs {jobs}: {error}");
        assert!(!database_exists(&target, DATABASE).await, "--jobs {jobs}: the database dr created must go again");
        assert!(roles(&target).await.is_empty(), "--jobs {jobs}: no roles are left behind: {:?}", roles(&target).await);
    }

    // An existing empty database stays empty.
    sql(&target, "postgres", &format!("CREATE DATABASE {DATABASE}")).await;
    let empty = fingerprint(&target, DATABASE).await;
    for jobs in ["2", "1"] {
        restore_app(&site, &target.url(DATABASE), jobs, &[]).user_error(1);
        assert_eq!(fingerprint(&target, DATABASE).await, empty, "--jobs {jobs}: nothing was committed");
    }

    // --force into a database with data: the data is still there, unchanged.
    sql(&target, DATABASE, "CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep VALUES (1), (2)").await;
    let before = fingerprint(&target, DATABASE).await;
    for jobs in ["2", "1"] {
        restore_app(&site, &target.url(DATABASE), jobs, &["--force"]).user_error(1);
        assert_eq!(fingerprint(&target, DATABASE).await, before, "--jobs {jobs} --force: the target is unchanged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_globals_object_or_a_missing_dump_stops_the_restore_before_the_target_is_touched() {
    let site = Site::new().await;
    let snapshot = site.backup();
    let globals = site.object(&snapshot, "app/globals.sql.zst.age");
    let globals_key = site.object_key(&snapshot, "app/globals.sql.zst.age");
    let intact = fs::read(&globals).unwrap();
    truncate(&globals, 0.5);

    let error = site.dr(&["verify"]).user_error(1);
    assert!(error.contains(&globals_key), "{error}");
    let target = scratch().await;
    for jobs in ["2", "1"] {
        let error = restore_app(&site, &target.url(DATABASE), jobs, &[]).user_error(1);
        assert!(error.contains(&globals_key) && error.contains("corrupt"), "--jobs {jobs}: {error}");
        assert!(!database_exists(&target, DATABASE).await, "--jobs {jobs}: no database was created");
        assert!(roles(&target).await.is_empty(), "--jobs {jobs}: no roles were created");
    }

    fs::write(&globals, intact).unwrap();
    let dump = site.object(&snapshot, "app/pg_dump.zst.age");
    let dump_key = site.object_key(&snapshot, "app/pg_dump.zst.age");
    fs::remove_file(&dump).unwrap();
    let run = site.dr(&["verify", "--json"]);
    assert_eq!(
        bad_objects(&run.json()),
        [(dump_key.clone(), format!("object {dump_key} is missing from the repository"))]
    );
    let error = run.user_error(1);
    assert!(error.contains(&dump_key) && error.contains("missing"), "{error}");
    for jobs in ["2", "1"] {
        let error = restore_app(&site, &target.url(DATABASE), jobs, &[]).user_error(1);
        assert!(error.contains(&dump_key) && error.contains("missing"), "--jobs {jobs}: {error}");
        assert!(!database_exists(&target, DATABASE).await, "--jobs {jobs}: no database was created");
        assert!(roles(&target).await.is_empty(), "--jobs {jobs}: no roles were created");
    }
}

/// A files site whose uploads archive spans many age chunks (a 1 MiB incompressible upload).
fn files_site_with_a_large_upload() -> (FilesSite, String) {
    let site = FilesSite::new();
    write_random_file(&site.path("site/uploads/2026/11/large.raw"), 1 << 20);
    let snapshot = site.init_and_backup();
    (site, snapshot)
}

/// Fills `dir` with a few files, as a target that already holds something.
fn occupied(dir: &Path) {
    fs::create_dir_all(dir.join("nested")).unwrap();
    fs::write(dir.join("existing.txt"), "was here before").unwrap();
    fs::write(dir.join("nested/deep.txt"), "also here").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_archive_never_reaches_the_target_directory() {
    let (site, snapshot) = files_site_with_a_large_upload();
    let uploads_key = site.object_key(&snapshot, "uploads/files.tar.zst.age");
    let config_key = site.object_key(&snapshot, "config/files.tar.zst.age");
    // The uploads archive is damaged in its last chunk, after most files were extracted; the config archive
    // is cut short.
    flip_byte(&site.object(&snapshot, "uploads/files.tar.zst.age"), -100);
    truncate(&site.object(&snapshot, "config/files.tar.zst.age"), 0.6);

    let run = site.dr(&["verify", "--all", "--json"]);
    let mut bad = bad_objects(&run.json());
    bad.sort();
    run.user_error(1);
    let keys: Vec<&str> = bad.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, [config_key.as_str(), uploads_key.as_str()], "the index objects are fine: {bad:?}");

    // Missing targets are not even created.
    let fresh = site.path("restored");
    let error = site.restore_into(&fresh, &[]).user_error(1);
    assert!(error.contains("2 of 2 sources failed") && error.contains(&uploads_key), "{error}");
    assert!(error.contains(&config_key), "{error}");
    assert!(!fresh.join("uploads").exists() && !fresh.join("config").exists(), "{:?}", entries_below(&fresh));

    // Occupied targets, even with --force, keep exactly what they had; no staging directory is left.
    let occupied_dir = site.path("occupied");
    occupied(&occupied_dir.join("config"));
    occupied(&occupied_dir.join("uploads"));
    let before = entries_below(&occupied_dir);
    let before_listing = listing(&occupied_dir, &[]);
    for extra in [&[][..], &["--force"][..]] {
        site.restore_into(&occupied_dir, extra).user_error(1);
        assert_eq!(entries_below(&occupied_dir), before, "{extra:?}");
        assert_eq!(listing(&occupied_dir, &[]), before_listing, "{extra:?}");
    }

    // A missing archive is named as missing.
    fs::remove_file(site.object(&snapshot, "uploads/files.tar.zst.age")).unwrap();
    let error = site.dr(&["verify"]).user_error(1);
    assert!(error.contains(&format!("object {uploads_key} is missing")) || error.contains(&config_key), "{error}");
    let run = site.dr(&["verify", "--json"]);
    assert!(
        bad_objects(&run.json())
            .contains(&(uploads_key.clone(), format!("object {uploads_key} is missing from the repository")))
    );
    let error = site.restore_into(&fresh, &["--only", "uploads"]).user_error(1);
    assert!(error.contains(&format!("object {uploads_key} is missing")), "{error}");
    assert!(!fresh.join("uploads").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_index_fails_verify_and_a_restore_warns_naming_it_but_restores_the_files() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    let key = site.object_key(&snapshot, "uploads/index.jsonl.zst.age");
    flip_byte(&site.object(&snapshot, "uploads/index.jsonl.zst.age"), 200);

    let run = site.dr(&["verify", "--json"]);
    let bad = bad_objects(&run.json());
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, key);
    let error = run.user_error(1);
    assert!(error.contains(&key), "{error}");

    // The index only describes the archive (for drills and people); the archive itself is intact and checked
    // against the manifest, so the files come back whole.
    // It is not silent about the damage, though: a warning names the object.
    let restored = site.path("restored");
    let run = site.restore_into(&restored, &[]).ok();
    assert_eq!(listing(&restored.join("uploads"), &[]), listing(&site.path("site/uploads"), &UPLOAD_EXCLUDES));
    let warned = |run: &common::Run, what: &str| {
        run.all_output().lines().any(|l| l.contains("warning") && l.contains(&format!("object {key} is {what}")))
    };
    assert!(warned(&run, "corrupt"), "{}", run.all_output());
    let json = site.restore_into(&site.path("restored-json"), &["--json"]).ok().json();
    let uploads = json["sources"].as_array().unwrap().iter().find(|s| s["name"] == "uploads").unwrap();
    assert!(uploads["warnings"].to_string().contains(&key), "{uploads}");

    // Even a missing index does not stand between an operator and the files.
    fs::remove_file(site.object(&snapshot, "uploads/index.jsonl.zst.age")).unwrap();
    let error = site.dr(&["verify"]).user_error(1);
    assert!(error.contains(&format!("object {key} is missing")), "{error}");
    let again = site.path("restored-again");
    let run = site.restore_into(&again, &[]).ok();
    assert_eq!(listing(&again.join("uploads"), &[]), listing(&site.path("site/uploads"), &UPLOAD_EXCLUDES));
    assert!(warned(&run, "missing"), "{}", run.all_output());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_drill_record_fails_verify_all_naming_it() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    // A drill of a files-only site needs no PostgreSQL; whatever its verdict, it leaves its record.
    site.dr(&["drill"]);
    let records: Vec<_> = fs::read_dir(site.repo.join("drills")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let key = format!("drills/{}", records[0].file_name().unwrap().to_string_lossy());
    site.dr(&["verify", "--all"]).ok();

    // A byte inside the armored age payload: the record no longer decrypts.
    let armored = fs::read_to_string(&records[0]).unwrap();
    let inside = armored.find('\n').unwrap() as i64 + 40;
    flip_byte(&records[0], inside);

    let run = site.dr(&["verify", "--all"]);
    assert!(run.stdout.contains(&format!("{snapshot} ok")), "the snapshot itself is whole: {}", run.all_output());
    assert!(run.stdout.contains("drill records BAD") && run.stdout.contains(&key), "{}", run.stdout);
    let error = run.user_error(1);
    assert!(error.contains(&key) && error.contains("1 drill record"), "{error}");

    let run = site.dr(&["verify", "--all", "--json"]);
    let report = run.json();
    run.user_error(1);
    let bad: Vec<&serde_json::Value> =
        report["drills"].as_array().unwrap().iter().filter(|d| !d["error"].is_null()).collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["key"], key.as_str());
    assert!(bad_objects(&report).is_empty(), "no snapshot object is blamed: {report}");

    // One snapshot's verification is about that snapshot: drill records are read with --all.
    site.dr(&["verify"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_manifest_is_caught() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    let original = fs::read(common::manifest_path(&site.repo, &snapshot)).unwrap();
    let key = site.object_key(&snapshot, "uploads/files.tar.zst.age");

    // A hash that no longer matches the object: the object is what gets named.
    let mut manifest = read_manifest(&site.repo, &snapshot);
    object_entry(&mut manifest, "uploads/files.tar.zst.age")["sha256"] = "ab".repeat(32).into();
    write_manifest(&site.repo, &snapshot, &manifest);
    let error = site.dr(&["verify"]).user_error(1);
    assert!(error.contains(&key) && error.contains("the manifest says abab"), "{error}");
    let restored = site.path("restored");
    let error = site.restore_into(&restored, &["--only", "uploads"]).user_error(1);
    assert!(error.contains(&key) && error.contains("SHA-256"), "{error}");
    assert!(!restored.join("uploads").exists(), "{:?}", entries_below(&restored));

    // A plaintext size that does not match.
    let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let entry = object_entry(&mut manifest, "uploads/files.tar.zst.age");
    entry["plain_size"] = (entry["plain_size"].as_u64().unwrap() - 512).into();
    write_manifest(&site.repo, &snapshot, &manifest);
    let error = site.restore_into(&restored, &["--only", "uploads"]).user_error(1);
    assert!(error.contains(&key) && error.contains("decompresses to"), "{error}");
    assert!(!restored.join("uploads").exists());

    // A manifest that is not JSON any more: the manifest itself is named.
    let manifest_key = format!("snapshots/{snapshot}.json");
    fs::write(common::manifest_path(&site.repo, &snapshot), &original[..original.len() / 2]).unwrap();
    let run = site.dr(&["verify", "--all", "--json"]);
    let report = run.json();
    let manifest_error = report["snapshots"][0]["manifest_error"].as_str().unwrap().to_string();
    assert!(manifest_error.contains(&manifest_key), "{manifest_error}");
    run.user_error(1);
    let error = site.dr(&["restore", "--to", &snapshot]).user_error(1);
    assert!(error.contains(&manifest_key) && error.contains("not a valid manifest"), "{error}");

    // The encrypted half altered.
    let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let private = manifest["private"].as_str().unwrap().to_string();
    let lines: Vec<&str> = private.lines().collect();
    let middle = lines.len() / 2;
    let altered_line: String = lines[middle].chars().rev().collect();
    let altered = private.replacen(lines[middle], &altered_line, 1);
    manifest["private"] = altered.into();
    write_manifest(&site.repo, &snapshot, &manifest);
    let run = site.dr(&["verify", "--all", "--json"]);
    let report = run.json();
    let manifest_error = report["snapshots"][0]["manifest_error"].as_str().unwrap().to_string();
    assert!(manifest_error.contains(&snapshot), "{manifest_error}");
    run.user_error(1);
    let error = site.dr(&["restore", "--to", &snapshot]).user_error(1);
    assert!(error.contains(&format!("object {manifest_key} is corrupt: its encrypted part is damaged")), "{error}");

    // Put back as it was, everything checks out again.
    fs::write(common::manifest_path(&site.repo, &snapshot), &original).unwrap();
    site.dr(&["verify"]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn damage_to_an_object_header_is_not_mistaken_for_the_wrong_key() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    // Byte 40 is inside the X25519 stanza's ephemeral share (after "age-encryption.org/v1\n-> X25519 "). Another
    // valid base64 letter there makes a header that parses but that no identity opens.
    let config = site.object(&snapshot, "config/files.tar.zst.age");
    let mut bytes = fs::read(&config).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    bytes[40] = if bytes[40] == b'A' { b'B' } else { b'A' };
    fs::write(&config, bytes).unwrap();
    // And the first line of another object's header.
    flip_byte(&site.object(&snapshot, "uploads/index.jsonl.zst.age"), 10);

    let run = site.dr(&["verify", "--json"]);
    let mut bad = bad_objects(&run.json());
    bad.sort();
    let error = run.user_error(1);
    assert!(!error.contains("cannot decrypt"), "{error}");
    assert_eq!(bad.len(), 2, "every object was checked, two are bad: {bad:?}");
    assert_eq!(bad[0].0, site.object_key(&snapshot, "config/files.tar.zst.age"));
    assert!(bad[0].1.contains("age header has no recipient this identity can open"), "{}", bad[0].1);
    assert_eq!(bad[1].0, site.object_key(&snapshot, "uploads/index.jsonl.zst.age"));
    assert!(bad[1].1.contains("age header is damaged"), "{}", bad[1].1);

    let restored = site.path("restored");
    let error = site.restore_into(&restored, &["--only", "config"]).user_error(1);
    assert!(error.contains(&bad[0].0) && error.contains("corrupt"), "{error}");
    assert!(!restored.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wrong_identity_is_told_apart_from_damage() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    let other = site.path("other-identity.txt");
    dr::KeyPair::generate().write_identity_file(&other).unwrap();
    site.write_config(&format!(
        "[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
        site.recipient,
        other.display()
    ));

    for args in [&["verify"][..], &["verify", "--all"][..]] {
        let error = site.dr(args).user_error(1);
        assert!(
            error.contains(&other.display().to_string())
                && error.contains("cannot decrypt")
                && error.contains(&snapshot),
            "{args:?}: {error}"
        );
    }
    let restored = site.path("restored");
    let run = site.restore_into(&restored, &[]);
    assert!(run.hint().unwrap().contains("recipients"), "{}", run.stderr);
    let error = run.user_error(1);
    assert!(error.contains("cannot decrypt") && error.contains("other recipients"), "{error}");
    assert!(!restored.exists(), "nothing is created before the key is known to work");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_unusable_identity_is_named() {
    let site = FilesSite::new();
    site.init_and_backup();
    let restored = site.path("restored");
    let recipients_only = format!("[encryption]\nrecipients = [\"{}\"]\n", site.recipient);

    site.write_config(&recipients_only);
    for (args, action) in [(&["verify"][..], "verify"), (&["restore", "--to", "latest"][..], "restore")] {
        let run = site.dr(args);
        assert!(run.hint().unwrap().contains("DR_IDENTITY_FILE"), "{}", run.stderr);
        let error = run.user_error(1);
        assert!(error.contains("no identity configured") && error.contains("identity_file"), "{error}");
        assert!(error.contains(action), "{error}");
    }

    let not_a_key = site.path("not-a-key.txt");
    fs::write(&not_a_key, "this is not a key\n").unwrap();
    let missing = site.path("no-such-identity.txt");
    for path in [&not_a_key, &missing] {
        site.write_config(&format!("{recipients_only}identity_file = \"{}\"\n", path.display()));
        for run in [site.dr(&["verify"]), site.restore_into(&restored, &[])] {
            let error = run.user_error(1);
            assert!(error.contains(&format!("cannot use identity file {}", path.display())), "{error}");
        }
    }
    assert!(!restored.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_manifest_is_listed_as_such_and_the_others_still_are() {
    let site = FilesSite::new();
    let damaged = site.init_and_backup();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let intact = site.dr(&["backup"]).ok().stdout.trim().to_string();
    let manifest = site.repo.join(format!("snapshots/{damaged}.json"));
    fs::write(&manifest, "{ not json").unwrap();

    let run = site.dr(&["snapshots"]);
    let line = run.stdout.lines().find(|l| l.starts_with(&damaged)).unwrap();
    assert!(line.contains(&format!("UNREADABLE: object snapshots/{damaged}.json is corrupt")), "{line}");
    assert!(run.stdout.contains(&intact) && run.stdout.contains("1 snapshot, "), "{}", run.stdout);
    let error = run.user_error(1);
    assert!(error.contains(&format!("snapshots/{damaged}.json")), "{error}");

    let run = site.dr(&["snapshots", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(list[0]["id"], damaged.as_str());
    assert!(list[0]["error"].as_str().unwrap().contains("not a valid manifest"));
    assert_eq!(list[1]["id"], intact.as_str());
    assert!(list[1]["stored_size"].as_u64().unwrap() > 0);
    run.user_error(1);
}
