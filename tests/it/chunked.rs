//! Chunked files sources, end to end through the `dr` binary: a tree comes back exactly (metadata to the
//! nanosecond, links as links), an unchanged tree is not read again, new data is stored once across files,
//! snapshots and sources, a backup host needs no identity, damage is named, and prune frees what no snapshot
//! needs while every kept snapshot still restores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, config_command, run};

/// A files-only site whose sources are chunked.
struct ChunkedSite {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    /// Environment for every `dr` run (an S3 repository's credentials).
    env: Vec<(&'static str, String)>,
    /// More configuration, appended to dr.toml.
    extra: String,
}

impl ChunkedSite {
    fn new() -> ChunkedSite {
        ChunkedSite::with_repository(None, Vec::new())
    }

    /// `repository`: the `[repository]` section (an S3 bucket); a local directory when `None`.
    fn with_repository(repository: Option<String>, env: Vec<(&'static str, String)>) -> ChunkedSite {
        let dir = tempfile::Builder::new().prefix("dr-chunked-").tempdir().unwrap();
        let key = dr::KeyPair::generate();
        key.write_identity_file(&dir.path().join("identity.txt")).unwrap();
        fs::write(dir.path().join("recipient.txt"), key.recipient()).unwrap();
        let repo_url = format!("file://{}", dir.path().join("repo").display());
        let repository = repository.unwrap_or_else(|| format!("[repository]\nurl = \"{repo_url}\"\n"));
        let site = ChunkedSite { config_path: dir.path().join("dr.toml"), env, extra: String::new(), dir };
        fs::create_dir_all(site.path("uploads")).unwrap();
        fs::create_dir_all(site.path("media")).unwrap();
        fs::write(site.path("repository.toml"), repository).unwrap();
        site.write_config(true);
        site
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn recipient(&self) -> String {
        fs::read_to_string(self.path("recipient.txt")).unwrap()
    }

    /// dr.toml: two chunked sources, `uploads` and `media`; with or without the identity (a backup host has
    /// only the recipient and the dedup key file).
    fn write_config(&self, with_identity: bool) {
        let identity = if with_identity {
            format!("identity_file = \"{}\"\n", self.path("identity.txt").display())
        } else {
            String::new()
        };
        let text = format!(
            "{repository}\n[encryption]\nrecipients = [\"{recipient}\"]\n{identity}\
             dedup_key_file = \"{key_file}\"\n\n[cache]\ndir = \"{cache}\"\n\n[retention]\nkeep_last = 1\n\n\
             [[files]]\nname = \"uploads\"\npath = \"{uploads}\"\nformat = \"chunked\"\n\n\
             [[files]]\nname = \"media\"\npath = \"{media}\"\nformat = \"chunked\"\n",
            repository = fs::read_to_string(self.path("repository.toml")).unwrap(),
            recipient = self.recipient(),
            key_file = self.path("dedup.key").display(),
            cache = self.path("cache").display(),
            uploads = self.path("uploads").display(),
            media = self.path("media").display(),
        ) + &self.extra;
        fs::write(&self.config_path, text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = config_command(&self.config_path, args);
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    fn dr(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }

    /// `dr backup --json`: the report.
    fn backup(&self) -> serde_json::Value {
        self.dr(&["backup", "--json"]).ok().json()
    }

    fn restore(&self, snapshot: &str, into: &Path, extra: &[&str]) -> Run {
        let mut command = self.command(&["restore", "--to", snapshot, "--only", "uploads"]);
        command.arg("--into").arg(format!("uploads={}", into.display())).args(extra);
        run(&mut command)
    }
}

/// The source's chunked report in a backup report.
fn chunked(report: &serde_json::Value, source: &str) -> serde_json::Value {
    report["sources"].as_array().unwrap().iter().find(|s| s["name"] == source).unwrap()["chunked"].clone()
}

/// What `find -printf '%P %y %m %s %T@ %l %u:%g'` says of a tree, sorted: the definition of "equal".
fn find_listing(root: &Path) -> Vec<String> {
    let output = Command::new("find").arg(root).arg("-printf").arg("%P %y %m %s %T@ %l %u:%g\n").output().unwrap();
    assert!(output.status.success());
    let mut lines: Vec<String> =
        String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect();
    lines.sort();
    lines
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Sets a file's (or link's) modification time with nanoseconds, not following links.
fn touch(path: &Path, seconds: i64, nanos: u32) {
    let time = filetime::FileTime::from_unix_time(seconds, nanos);
    filetime::set_symlink_file_times(path, time, time).unwrap();
}

/// A tree with every kind of entry and metadata a photo site's uploads can have.
fn write_tree(root: &Path) {
    fs::create_dir_all(root.join("2026/11")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("2026/11/a.jpg"), random_bytes(200_000, 1)).unwrap();
    fs::write(root.join("2026/11/b.jpg"), random_bytes(30_000, 2)).unwrap();
    // Larger than the minimum chunk: cut by the chunker into several chunks.
    fs::write(root.join("2026/video.mp4"), random_bytes(6 << 20, 3)).unwrap();
    fs::write(root.join("private.txt"), b"secret").unwrap();
    fs::set_permissions(root.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::hard_link(root.join("2026/11/a.jpg"), root.join("a-hardlink.jpg")).unwrap();
    std::os::unix::fs::symlink("2026/11/a.jpg", root.join("latest.jpg")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::chown(root.join("2026/11/b.jpg"), Some(12345), Some(54321)).unwrap();
    let _ = xattr::set(root.join("2026/11/a.jpg"), "user.origin", b"camera");
    use std::os::unix::ffi::OsStrExt;
    let latin = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
    fs::write(root.join(latin), b"latin-1 name").unwrap();
    // Older than a second, every one: a file modified within the second it is read is read again next time.
    let files = ["2026/11/a.jpg", "2026/11/b.jpg", "2026/video.mp4", "private.txt", "latest.jpg", "dangling"];
    for (n, path) in files.iter().enumerate() {
        touch(&root.join(path), 1_732_545_744 + n as i64, 123_456_789 + n as u32);
    }
    touch(&root.join(latin), 1_732_545_000, 1);
    for dir in ["2026/11", "2026", "empty", ""] {
        touch(&root.join(dir), 1_700_000_000, 987_654_321);
    }
}

#[test]
fn a_tree_comes_back_exactly_and_an_unchanged_one_is_not_read_again() {
    let site = ChunkedSite::new();
    write_tree(&site.path("uploads"));
    fs::write(site.path("media/other.bin"), random_bytes(100_000, 9)).unwrap();
    site.dr(&["init"]).ok();
    assert!(site.path("dedup.key").exists(), "init writes the dedup key file");
    assert_eq!(fs::metadata(site.path("dedup.key")).unwrap().permissions().mode() & 0o777, 0o600);

    let first = site.backup();
    let uploads = chunked(&first, "uploads");
    assert_eq!(uploads["files_unchanged"], 0);
    assert!(uploads["chunks_added"].as_u64().unwrap() >= 7, "{uploads}");

    let restored = site.path("restored");
    site.restore("latest", &restored, &[]).ok();
    assert_eq!(find_listing(&restored), find_listing(&site.path("uploads")));
    let linked = |root: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(root.join("a-hardlink.jpg")).unwrap().ino()
            == fs::metadata(root.join("2026/11/a.jpg")).unwrap().ino()
    };
    assert!(linked(&restored), "a hard link comes back as a hard link");
    if let Ok(Some(value)) = xattr::get(site.path("uploads/2026/11/a.jpg"), "user.origin") {
        assert_eq!(xattr::get(restored.join("2026/11/a.jpg"), "user.origin").unwrap(), Some(value));
    }

    // Nothing changed: every file comes from the cache, and only the tree is new (if anything).
    common::next_second();
    let second = site.backup();
    let uploads = chunked(&second, "uploads");
    let files = first["sources"][0]["plain_size"].as_u64().unwrap();
    assert!(files > 0);
    assert_eq!(uploads["files_unchanged"].as_u64().unwrap(), 5, "{uploads}");
    assert!(uploads["bytes_added"].as_u64().unwrap() < 10_000, "{uploads}");

    // One new photo: one new chunk (and the tree's changed chunk).
    fs::write(site.path("uploads/2026/11/c.jpg"), random_bytes(150_000, 4)).unwrap();
    let third = site.backup();
    let uploads = chunked(&third, "uploads");
    assert!(uploads["chunks_added"].as_u64().unwrap() <= 2, "{uploads}");
    assert!(uploads["bytes_added"].as_u64().unwrap() < 160_000, "{uploads}");

    // A file copied into the other source is stored once.
    fs::copy(site.path("uploads/2026/video.mp4"), site.path("media/video-copy.mp4")).unwrap();
    let fourth = site.backup();
    assert!(chunked(&fourth, "media")["bytes_added"].as_u64().unwrap() < 100_000, "{fourth}");

    // The older snapshot still restores as it was.
    let first_id = first["snapshot"].as_str().unwrap();
    let again = site.path("again");
    site.restore(first_id, &again, &[]).ok();
    assert_eq!(find_listing(&again), find_listing(&restored));
}

#[test]
fn a_path_restores_one_directory_or_file_and_a_full_target_is_refused_without_force() {
    let site = ChunkedSite::new();
    write_tree(&site.path("uploads"));
    site.dr(&["init"]).ok();
    site.backup();

    let part = site.path("part");
    site.restore("latest", &part, &["--path", "2026/11"]).ok();
    let mut found = common::entries_below(&part);
    found.sort();
    assert!(found.iter().any(|e| e.contains("2026/11/a.jpg")), "{found:?}");
    assert!(!found.iter().any(|e| e.contains("video.mp4") || e.contains("private.txt")), "{found:?}");
    assert_eq!(fs::read(part.join("2026/11/b.jpg")).unwrap(), fs::read(site.path("uploads/2026/11/b.jpg")).unwrap());

    let missing = site.restore("latest", &site.path("none"), &["--path", "2026/12"]).fails(1);
    assert!(missing.error().contains("--path 2026/12") && missing.error().contains("no such"), "{}", missing.stderr);
    assert!(!site.path("none").exists(), "nothing is left behind");

    let refused = site.restore("latest", &part, &["--path", "private.txt"]).fails(1);
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);
    site.restore("latest", &part, &["--path", "private.txt", "--force"]).ok();
    assert_eq!(fs::read(part.join("private.txt")).unwrap(), b"secret");
    assert!(!part.join("2026").exists(), "--force replaces the directory with the selection");
}

#[test]
fn a_backup_host_needs_no_identity_and_without_a_key_file_it_is_told_what_to_do() {
    let site = ChunkedSite::new();
    write_tree(&site.path("uploads"));
    site.dr(&["init"]).ok();
    site.write_config(false);
    let report = site.backup();
    assert!(chunked(&report, "uploads")["chunks_added"].as_u64().unwrap() > 0);

    fs::remove_file(site.path("dedup.key")).unwrap();
    let refused = site.dr(&["backup"]).fails(1);
    let error = refused.error();
    assert!(error.contains("dedup key"), "{}", refused.stderr);
    assert!(refused.hint().unwrap_or_default().contains("dr dedup-key"), "{}", refused.stderr);

    // Where the identity is, the key is given out for the backup host.
    site.write_config(true);
    site.dr(&["dedup-key", "--output", site.path("dedup.key").to_str().unwrap()]).ok();
    site.write_config(false);
    site.dr(&["backup"]).ok();
}

#[test]
fn a_damaged_pack_is_named_by_verify_and_a_restore_fails_leaving_the_target_as_it_was() {
    let site = ChunkedSite::new();
    write_tree(&site.path("uploads"));
    site.dr(&["init"]).ok();
    site.backup();
    site.dr(&["verify"]).ok();

    // The largest pack holds the video: flip a byte in its middle.
    let packs = site.path("repo/packs");
    let pack =
        common::files_below(&packs).into_iter().max_by_key(|p| fs::metadata(packs.join(p)).unwrap().len()).unwrap();
    let len = fs::metadata(packs.join(&pack)).unwrap().len();
    common::flip_byte(&packs.join(&pack), (len / 2) as i64);
    let verify = site.dr(&["verify"]).fails(1);
    assert!(verify.all_output().contains(&pack), "{}", verify.all_output());

    let target = site.path("target");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("keep.txt"), b"mine").unwrap();
    let failed = site.restore("latest", &target, &["--force"]);
    assert_ne!(failed.code, 0, "{}", failed.all_output());
    assert!(failed.all_output().contains("packs/"), "{}", failed.all_output());
    assert_eq!(common::entries_below(&target), vec!["keep.txt".to_string()]);
}

#[test]
fn prune_deletes_what_no_kept_snapshot_needs_and_the_kept_one_still_restores() {
    let site = ChunkedSite::new();
    write_tree(&site.path("uploads"));
    site.dr(&["init"]).ok();
    site.backup();
    let packs_before = common::files_below(&site.path("repo/packs")).len();
    // Replace most of the data: the old chunks belong only to the first snapshot.
    fs::remove_file(site.path("uploads/2026/video.mp4")).unwrap();
    fs::write(site.path("uploads/2026/new.mp4"), random_bytes(3 << 20, 77)).unwrap();
    common::next_second();
    site.backup();

    let report = site.dr(&["prune", "--json"]).ok().json();
    assert_eq!(report["totals"]["snapshots_removed"], 1, "{report}");
    let packs = &report["packs"];
    assert!(
        packs["packs_dead"].as_array().unwrap().len() + packs["packs_repacked"].as_array().unwrap().len() > 0,
        "{report}"
    );
    assert!(packs_before > 0);
    let restored = site.path("restored");
    site.restore("latest", &restored, &[]).ok();
    assert_eq!(find_listing(&restored), find_listing(&site.path("uploads")));
    site.dr(&["verify", "--all"]).ok();
    // A second prune has nothing left to do.
    let again = site.dr(&["prune", "--json"]).ok().json();
    assert_eq!(again["totals"]["packs_deleted"], 0, "{again}");
}

#[test]
fn an_s3_repository_holds_the_same_format() {
    let Some(garage) = common::garage::Garage::start() else { return };
    let site = ChunkedSite::with_repository(Some(garage.repository_toml("site", None)), garage.env());
    write_tree(&site.path("uploads"));
    site.dr(&["init"]).ok();
    site.backup();
    fs::write(site.path("uploads/2026/11/c.jpg"), random_bytes(150_000, 4)).unwrap();
    let second = site.backup();
    assert_eq!(chunked(&second, "uploads")["files_unchanged"].as_u64().unwrap(), 5, "{second}");
    let restored = site.path("restored");
    site.restore("latest", &restored, &[]).ok();
    assert_eq!(find_listing(&restored), find_listing(&site.path("uploads")));
    site.dr(&["verify", "--all"]).ok();
}

/// The break-glass procedure (runbooks/files-break-glass.md) as written: the stdlib-only script, `age` and
/// `zstd`, against a repository dr wrote, gives back the same tree as `dr restore`.
#[test]
fn the_break_glass_script_restores_what_dr_wrote_without_dr() {
    for tool in ["python3", "age", "zstd"] {
        if common::require(tool).is_none() {
            return;
        }
    }
    let site = ChunkedSite::new();
    write_tree(&site.path("uploads"));
    site.dr(&["init"]).ok();
    site.backup();
    fs::write(site.path("uploads/2026/11/c.jpg"), random_bytes(150_000, 4)).unwrap();
    touch(&site.path("uploads/2026/11/c.jpg"), 1_732_545_900, 5);
    touch(&site.path("uploads/2026/11"), 1_700_000_000, 987_654_321);
    let snapshot = site.backup()["snapshot"].as_str().unwrap().to_string();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/dr-files-restore.py");
    let target = site.path("break-glass");
    let output = Command::new("python3")
        .arg(&script)
        .args(["--repo", site.path("repo").to_str().unwrap(), "--snapshot", &snapshot, "--source", "uploads"])
        .args(["--identity", site.path("identity.txt").to_str().unwrap(), "--into", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("checked by age and zstd only"),
        "the script found the dedup key with the identity and checked every chunk's id"
    );
    assert_eq!(find_listing(&target), find_listing(&site.path("uploads")));

    // One directory, as --path.
    let part = site.path("break-glass-part");
    let output = Command::new("python3")
        .arg(&script)
        .args(["--repo", site.path("repo").to_str().unwrap(), "--snapshot", "latest", "--source", "uploads"])
        .args(["--identity", site.path("identity.txt").to_str().unwrap(), "--into", part.to_str().unwrap()])
        .args(["--path", "2026/11"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(fs::read(part.join("2026/11/c.jpg")).unwrap(), fs::read(site.path("uploads/2026/11/c.jpg")).unwrap());
    assert!(!part.join("private.txt").exists());
}

/// The script against an independent Python writer of the format (tests/fixtures/chunked_repo.py): many packs,
/// several index objects, a forged chunk, damage and wrong keys (tests/fixtures/chunked_breakglass_check.sh).
#[test]
fn the_break_glass_script_passes_its_checks_against_an_independent_writer() {
    for tool in ["python3", "age", "age-keygen", "zstd"] {
        if common::require(tool).is_none() {
            return;
        }
    }
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chunked_breakglass_check.sh");
    let output = Command::new("bash").arg(check).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");
}

/// The keys in the bucket under `prefix`, read behind dr's back.
fn bucket_keys(garage: &common::garage::Garage, prefix: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listed =
            garage.client().await.list_objects_v2().bucket(&garage.bucket).prefix(prefix).send().await.unwrap();
        listed.contents().iter().filter_map(|o| o.key().map(String::from)).collect()
    })
}

/// A backup that the store stops halfway (it refuses the third pack) commits nothing and leaves no partial pack;
/// the packs it stored are indexed, and the next backup stores only what they do not hold.
#[test]
fn a_backup_the_store_stops_midway_commits_nothing_and_the_next_reuses_its_packs() {
    let Some(garage) = common::garage::Garage::start() else { return };
    let proxy = common::faults::FaultProxy::start(&garage.endpoint);
    let repository = garage.repository_toml("site", Some(&proxy.url()));
    let mut site = ChunkedSite::with_repository(Some(repository), garage.env());
    // Two photos a pack: a pack is closed before a third would take it past 2 MiB.
    site.extra = "\n[chunking]\npack_size = \"2MiB\"\n".to_string();
    site.write_config(true);
    let total: usize = 12 * 700_000;
    for n in 0..12u64 {
        fs::write(site.path(&format!("uploads/photo-{n:02}.jpg")), random_bytes(700_000, 100 + n)).unwrap();
        touch(&site.path(&format!("uploads/photo-{n:02}.jpg")), 1_732_545_744, 0);
    }
    site.dr(&["init"]).ok();

    let refused = proxy.add(
        common::faults::Rule::new("PUT", "/packs/", common::faults::Action::Error { status: 403, close: false })
            .after(2)
            .always(),
    );
    let failed = site.dr(&["backup"]).fails(1);
    assert!(proxy.fired(refused) > 0, "{}", failed.stderr);
    assert!(failed.error().contains("packs/"), "the refused object is named: {}", failed.stderr);
    assert!(bucket_keys(&garage, "site/snapshots/").is_empty(), "no snapshot");
    let packs = bucket_keys(&garage, "site/packs/");
    assert_eq!(packs.len(), 2, "the two packs the store took, no partial one: {packs:?}");
    assert!(!bucket_keys(&garage, "site/index/").is_empty(), "they are indexed");

    proxy.clear();
    let report = site.backup();
    let added = chunked(&report, "uploads")["bytes_added"].as_u64().unwrap() as usize;
    // Four photos are in the two packs stored: eight are added again (and the tree, and frame headers).
    assert!(added < total - 3 * 700_000, "the two stored packs are reused: {added} of {total} bytes added again");
    let restored = site.path("restored");
    site.restore("latest", &restored, &[]).ok();
    assert_eq!(find_listing(&restored), find_listing(&site.path("uploads")));
}

/// A source that switches from tar to chunked (its configuration had no `format` before dr had chunks): the
/// old tar snapshot restores, verifies and prunes as before, next to the chunked one.
#[test]
fn tar_snapshots_keep_working_beside_chunked_ones() {
    let site = common::FilesSite::new();
    let tar_snapshot = site.init_and_backup();
    let text = fs::read_to_string(&site.config_path).unwrap().replace("format = \"tar\"\n", "");
    fs::write(&site.config_path, text + "\n[retention]\nkeep_last = 2\n").unwrap();
    common::next_second();
    let chunked_snapshot = site.dr(&["backup"]).ok().stdout.trim().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(common::manifest_path(&site.repo, &chunked_snapshot)).unwrap()).unwrap();
    assert_eq!(manifest["format"], 2, "{manifest}");
    assert_eq!(manifest["sources"][1]["format"], "chunked", "{manifest}");

    for (snapshot, dir) in [(&tar_snapshot, "from-tar"), (&chunked_snapshot, "from-chunked")] {
        let target = site.path(dir);
        let mut command = site.command(&["restore", "--to", snapshot, "--only", "uploads"]);
        command.arg("--into").arg(format!("uploads={}", target.display()));
        run(&mut command).ok();
        assert_eq!(
            common::listing(&target, &[]),
            common::listing(&site.path("site/uploads"), &common::UPLOAD_EXCLUDES),
            "{snapshot}"
        );
    }
    site.dr(&["verify", "--all"]).ok();
    common::next_second();
    site.dr(&["backup"]).ok();
    let pruned = site.dr(&["prune", "--json"]).ok().json();
    assert_eq!(pruned["totals"]["snapshots_removed"], 1, "the tar snapshot goes: {pruned}");
    site.dr(&["verify", "--all"]).ok();
}
