//! Shared fixtures for the integration tests: a real PostgreSQL (a scratch cluster started from the machine's
//! own binaries), a seeded site, a files tree, a key pair and a configuration, driven through the real `dr`
//! binary.
//!
//! # The rule for what a test needs from outside
//!
//! A test that needs something besides PostgreSQL and the `dr` binary (Garage, the `age` CLI and the other
//! stock tools, tini and the container namespaces, root) asks for it through [`require`] (a tool) or
//! [`skip`] (anything else), and nowhere else:
//! - under CI (`CI` set to anything but empty, `0` or `false`; `.ci/run` sets `CI=true`) a missing prerequisite
//!   FAILS the test with a message naming it and how to get it (`tests/run` installs every one), so that a CI
//!   run never passes by skipping;
//! - elsewhere the test is skipped with a `SKIPPED:` line on stderr, so that a developer without Garage can
//!   still run the rest.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod faults;
pub mod garage;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use dr::files::{Excludes, tree_listing};
use dr::pg::{ScratchOptions, ScratchPostgres, connect, inspect};

pub const DATABASE: &str = "isntgram";
pub const UPLOAD_EXCLUDES: [&str; 3] = ["*.tmp", "cache/**", "/private"];

const DEMO_SQL: &str = include_str!("../../src/demo/sample_site.sql");
const FIXTURE_SQL: &str = include_str!("../fixtures/site.sql");

/// A site to back up: database, files, key pair, configuration and an initialized repository.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub db: ScratchPostgres,
    pub config_path: PathBuf,
    pub identity: PathBuf,
    pub recipient: String,
    pub repo: PathBuf,
}

/// The outcome of one `dr` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "dr failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "a panic is never an acceptable error:\n{}", self.stderr);
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "no stack traces:\n{}", self.stderr);
        self
    }

    /// The `error:` line (there must be exactly one) and the `hint:` line.
    #[track_caller]
    pub fn error(&self) -> String {
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "exactly one error line expected:\n{}", self.stderr);
        errors[0].to_string()
    }

    pub fn hint(&self) -> Option<String> {
        self.stderr.lines().find(|l| l.starts_with("hint: ")).map(String::from)
    }

    /// A user-caused failure as the CLI must render it: exit `code`, no panic, exactly one `error:` line and a
    /// `hint:` line that ends the output. Returns the error line.
    #[track_caller]
    pub fn user_error(self, code: i32) -> String {
        let run = self.fails(code);
        let error = run.error();
        let last = run.stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(last.starts_with("hint: "), "the output must end with a hint:\n{}", run.stderr);
        error
    }

    /// Everything dr printed, for checks that something never appears anywhere.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Whether this is a CI run, where a missing prerequisite fails instead of skipping (see the module's doc).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A prerequisite of the calling test is missing (`reason` says which and how to get it): under CI the test
/// fails; elsewhere it is skipped with a notice, and the caller returns.
#[track_caller]
pub fn skip(reason: &str) {
    assert!(!in_ci(), "{reason} (CI=true: a test that needs it fails instead of skipping)");
    eprintln!("SKIPPED: {reason}");
}

/// `tool` on PATH or in cargo's bin directory (where `cargo install garage` puts Garage); when it is missing,
/// [`skip`] (fails under CI) and `None`.
#[track_caller]
pub fn require(tool: &str) -> Option<PathBuf> {
    let found = find_tool(tool);
    if found.is_none() {
        skip(&format!("{tool} is not installed; tests/run installs it"));
    }
    found
}

/// `tool` on PATH or in cargo's bin directory.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(cargo_bin).map(|dir| dir.join(tool)).find(|p| p.is_file())
}

/// A snapshot test: `actual` must equal the file at `path` (relative to the repository root), so that a
/// rendered sample in docs/ cannot drift from what dr renders. With `DR_UPDATE_SNAPSHOTS=1` the file is
/// rewritten instead (then review the diff and commit it).
#[track_caller]
pub fn assert_snapshot(path: &str, actual: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var("DR_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        fs::write(&file, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(e, a)| e != a).unwrap_or(0);
        panic!(
            "{path} differs from what is rendered now, first at line {}:\n  file:     {}\n  rendered: {}\n\
             If the change is intended: DR_UPDATE_SNAPSHOTS=1 cargo test --test it <test name>, review, commit.",
            line + 1,
            expected.lines().nth(line).unwrap_or("<end of file>"),
            actual.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

/// Waits until the wall clock enters its next second: snapshot ids have second precision, and a snapshot taken
/// after this sorts after every one taken before (half a second on average, not a fixed 1.1 s).
pub fn next_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(std::time::Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())));
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() <= now.as_secs() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs the `dr` binary with a clean environment for dr's own variables.
pub fn dr_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dr"));
    for var in [
        "DR_CONFIG",
        "DR_REPOSITORY_URL",
        "DR_RECIPIENTS",
        "DR_IDENTITY_FILE",
        "DR_DEDUP_KEY_FILE",
        "DR_LIMIT_UPLOAD",
        "DR_LIMIT_DOWNLOAD",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    // The dedup keys and file caches dr keeps per repository go under the build's temp directory, not the
    // home directory of whoever runs the tests (each repository's id names its own files there).
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    command.env("XDG_STATE_HOME", scratch.join("dr-state")).env("XDG_CACHE_HOME", scratch.join("dr-cache"));
    command.env_remove("DR_CACHE_DIR");
    command
}

/// The `dr` binary with `--config FILE` and `args`.
pub fn config_command(config: &Path, args: &[&str]) -> Command {
    let mut command = dr_command();
    command.arg("--config").arg(config).args(args);
    command
}

/// A port for a test server (Garage, `dr serve`), taken from below the kernel's ephemeral range (32768 and up on Linux). With `bind(0)`, the
/// port was free when picked but could become the source port of one of the many connections the parallel tests
/// open before Garage bound it, and a test's requests then met a reset (seen in CI). Below that range only
/// listeners that name their port compete; a process-wide counter keeps this process's servers apart, and the
/// bind check skips ports that something else on the machine holds.
pub fn free_port() -> u16 {
    const FIRST: u32 = 16_000;
    const SPAN: u32 = 16_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ctrl-C to a running `dr`, then its exit code and stderr once it has stopped.
pub fn interrupt(child: std::process::Child) -> (Option<i32>, String) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

pub fn run(command: &mut Command) -> Run {
    let output = command.output().expect("running dr");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub async fn scratch() -> ScratchPostgres {
    tokio::task::spawn_blocking(|| ScratchPostgres::start(&ScratchOptions::default()))
        .await
        .unwrap()
        .expect("starting a scratch PostgreSQL")
}

pub async fn sql(server: &ScratchPostgres, dbname: &str, statements: &str) {
    let client = connect(&server.conninfo(dbname)).await.expect("connect");
    client.batch_execute(statements).await.unwrap_or_else(|e| panic!("{statements}: {e:?}"));
}

pub async fn query_strings(server: &ScratchPostgres, dbname: &str, query: &str) -> Vec<String> {
    let client = connect(&server.conninfo(dbname)).await.expect("connect");
    client
        .query(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e:?}"))
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

/// Every table, sequence and large object of a database, as digests.
pub async fn fingerprint(server: &ScratchPostgres, dbname: &str) -> BTreeMap<String, String> {
    let client = connect(&server.conninfo(dbname)).await.expect("connect");
    inspect::fingerprint(&client).await.expect("fingerprint")
}

/// Roles (other than built-in ones) with their password hashes and attributes.
pub async fn roles(server: &ScratchPostgres) -> BTreeMap<String, String> {
    let client = connect(&server.conninfo("postgres")).await.expect("connect");
    client
        .query(
            "SELECT rolname::text, coalesce(rolpassword, '') || ' login=' || rolcanlogin::text
             FROM pg_authid WHERE rolname !~ '^pg_' AND rolname <> 'postgres' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub fn listing(root: &Path, excludes: &[&str]) -> BTreeMap<String, String> {
    let excludes = Excludes::new(&excludes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    tree_listing(root, &excludes).unwrap()
}

impl Site {
    /// A seeded site with an initialized repository.
    pub async fn new() -> Site {
        Site::on(scratch().await).await
    }

    /// [`Site::new`] on a server the caller started (with settings of its own).
    pub async fn on(db: ScratchPostgres) -> Site {
        let dir = tempfile::Builder::new().prefix("dr-test-").tempdir().unwrap();
        sql(&db, "postgres", &format!("CREATE DATABASE {DATABASE}")).await;
        sql(&db, DATABASE, DEMO_SQL).await;
        sql(&db, DATABASE, FIXTURE_SQL).await;
        write_files(&dir.path().join("site"));

        let key = dr::KeyPair::generate();
        let identity = dir.path().join("identity.txt");
        key.write_identity_file(&identity).unwrap();
        let repo = dir.path().join("repo");
        let site =
            Site { config_path: dir.path().join("dr.toml"), recipient: key.recipient(), identity, repo, db, dir };
        site.write_config("");
        site.dr(&["init"]).ok();
        site
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path("site/config")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.path("site/uploads")
    }

    /// Writes dr.toml for this site; `extra` is appended verbatim.
    pub fn write_config(&self, extra: &str) {
        self.write_config_with_repository(&format!("[repository]\nurl = \"file://{}\"\n", self.repo.display()), extra);
    }

    /// Writes dr.toml for this site with `repository` (a whole `[repository]` section, e.g. an S3 one) in place
    /// of the local repository; `extra` is appended verbatim.
    pub fn write_config_with_repository(&self, repository: &str, extra: &str) {
        let text = format!(
            r#"{repository}
[encryption]
recipients = ["{recipient}"]
identity_file = "{identity}"

[[postgres]]
name = "app"
url = "{url}"
globals = true

[[files]]
name = "config"
path = "{config}"
format = "tar"

[[files]]
name = "uploads"
path = "{uploads}"
exclude = [{excludes}]
format = "tar"
{extra}"#,
            recipient = self.recipient,
            identity = self.identity.display(),
            url = self.db.url(DATABASE),
            config = self.config_dir().display(),
            uploads = self.uploads_dir().display(),
            excludes = UPLOAD_EXCLUDES.map(|e| format!("{e:?}")).join(", "),
        );
        fs::write(&self.config_path, text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        config_command(&self.config_path, args)
    }

    pub fn dr(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }

    /// Backs up and returns the snapshot id.
    pub fn backup(&self) -> String {
        let run = self.dr(&["backup"]).ok();
        run.stdout.trim().to_string()
    }

    /// Object keys of a snapshot, from its manifest.
    pub fn objects(&self, snapshot: &str) -> Vec<PathBuf> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(self.repo.join(format!("snapshots/{snapshot}.json"))).unwrap()).unwrap();
        manifest["sources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["objects"].as_array().unwrap().iter())
            .map(|o| self.repo.join(o["key"].as_str().unwrap()))
            .collect()
    }

    pub fn object(&self, snapshot: &str, suffix: &str) -> PathBuf {
        self.objects(snapshot)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no object ending in {suffix}"))
    }
}

/// The site's files: modes, old mtimes, symlinks (one dangling), an empty directory, non-ASCII and long
/// names, and entries the excludes must drop.
pub fn write_files(site: &Path) {
    let config = site.join("config");
    fs::create_dir_all(config.join("nginx")).unwrap();
    fs::write(config.join("app.toml"), "[app]\nname = \"isntgram\"\n").unwrap();
    fs::write(config.join("nginx/site.conf"), "server { listen 80; }\n").unwrap();
    let secret = config.join("secrets.env");
    fs::write(&secret, "SESSION_KEY=abc\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let script = config.join("deploy.sh");
    fs::write(&script, "#!/bin/sh\necho deploy\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

    let uploads = site.join("uploads");
    let month = uploads.join("2026/11");
    fs::create_dir_all(&month).unwrap();
    for i in 1..=30u32 {
        let bytes: Vec<u8> = (0..(i * 1000)).map(|j| (j.wrapping_mul(2_654_435_761) >> 11) as u8 ^ i as u8).collect();
        fs::write(month.join(format!("{i:04}.jpg")), bytes).unwrap();
    }
    fs::write(uploads.join("été 📷 ünïcødé.jpg"), b"non-ascii name").unwrap();
    let long_dir = uploads.join("a-rather-long-directory-name-for-testing-gnu-long-names-in-tar-archives");
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("and-an-equally-long-file-name-that-pushes-the-path-past-one-hundred-bytes.jpg"), b"x")
        .unwrap();
    fs::create_dir_all(uploads.join("albums/empty")).unwrap();
    let restricted = uploads.join("albums/restricted");
    fs::create_dir_all(&restricted).unwrap();
    fs::write(restricted.join("photo.jpg"), b"restricted").unwrap();
    fs::set_permissions(&restricted, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("2026/11/0001.jpg", uploads.join("latest.jpg")).unwrap();
    std::os::unix::fs::symlink("missing.jpg", uploads.join("dangling.jpg")).unwrap();
    // Excluded: by name at any depth, by path from the root.
    fs::write(uploads.join("upload-1.tmp"), b"partial").unwrap();
    fs::write(month.join("resize.tmp"), b"partial").unwrap();
    fs::create_dir_all(uploads.join("cache")).unwrap();
    fs::write(uploads.join("cache/thumb.jpg"), b"thumb").unwrap();
    fs::create_dir_all(uploads.join("private")).unwrap();
    fs::write(uploads.join("private/key"), b"not for backups").unwrap();

    // Old, distinct mtimes, set deepest first so directories keep theirs.
    let mut entries: Vec<PathBuf> =
        walkdir::WalkDir::new(site).min_depth(1).into_iter().map(|e| e.unwrap().path().to_path_buf()).collect();
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in entries.iter().enumerate() {
        let time = filetime::FileTime::from_unix_time(1_700_000_000 + i as i64 * 3_600, 0);
        filetime::set_symlink_file_times(path, time, time).unwrap();
    }
}

/// Adds a table of `mebibytes` MiB of random, incompressible bytes to a database: for dumps that take a moment and
/// objects that span many age chunks (64 KiB each), so damage is found mid-stream rather than at the first read.
pub async fn add_random_table(server: &ScratchPostgres, dbname: &str, table: &str, mebibytes: u32) {
    sql(
        server,
        dbname,
        &format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, data bytea);
             ALTER TABLE {table} ALTER COLUMN data SET STORAGE EXTERNAL;
             INSERT INTO {table}
             SELECT i, decode(string_agg(md5(random()::text), ''), 'hex')
             FROM generate_series(1, {rows}) AS i, generate_series(1, 4096) AS j GROUP BY i",
            rows = mebibytes * 16
        ),
    )
    .await;
}

/// Writes `len` pseudo-random (incompressible) bytes to `path`.
pub fn write_random_file(path: &Path, len: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    fs::write(path, bytes).unwrap();
}

impl Site {
    /// Ids of the committed snapshots, oldest first, as `dr snapshots --json` lists them.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let list = self.dr(&["snapshots", "--json"]).ok().json();
        list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    }

    pub fn manifest_path(&self, snapshot: &str) -> PathBuf {
        manifest_path(&self.repo, snapshot)
    }

    /// The repository key of a snapshot's object (`objects/<id>/<source>/<file>`).
    pub fn object_key(&self, snapshot: &str, suffix: &str) -> String {
        let path = self.object(snapshot, suffix);
        path.strip_prefix(&self.repo).unwrap().to_string_lossy().into_owned()
    }

    /// `--into` arguments that send every source of the site somewhere new: `db` for the database, `dir` for the
    /// two files sources.
    pub fn into_args(db: &str, dir: &Path) -> Vec<String> {
        vec![
            "--into".into(),
            format!("app={db}"),
            "--into".into(),
            format!("config={}", dir.join("config").display()),
            "--into".into(),
            format!("uploads={}", dir.join("uploads").display()),
        ]
    }

    /// Runs dr with `args` followed by `more` (owned strings, e.g. from [`Site::into_args`]).
    pub fn dr_with(&self, args: &[&str], more: &[String]) -> Run {
        let mut command = self.command(args);
        command.args(more);
        run(&mut command)
    }
}

/// Every file, symlink and directory below `root`, hidden ones included, relative; empty when `root` is missing.
pub fn entries_below(root: &Path) -> Vec<String> {
    if !root.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Regular files below `root`, hidden ones included (what a crashed upload could leave behind).
pub fn files_below(root: &Path) -> Vec<String> {
    if !root.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Flips one bit of the byte at `offset` (negative: counted from the end).
pub fn flip_byte(path: &Path, offset: i64) {
    let mut bytes = fs::read(path).unwrap();
    let at = if offset < 0 { bytes.len() - offset.unsigned_abs() as usize } else { offset as usize };
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// Cuts a file down to `fraction` of its length.
pub fn truncate(path: &Path, fraction: f64) {
    let len = fs::metadata(path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len((len as f64 * fraction) as u64).unwrap();
}

pub async fn database_exists(server: &ScratchPostgres, dbname: &str) -> bool {
    let found =
        query_strings(server, "postgres", &format!("SELECT datname::text FROM pg_database WHERE datname = '{dbname}'"))
            .await;
    !found.is_empty()
}

/// A site with only files sources: for the command-line tests that need no PostgreSQL. Its repository is not
/// initialized.
pub struct FilesSite {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub identity: PathBuf,
    pub recipient: String,
    pub repo: PathBuf,
}

impl FilesSite {
    pub fn new() -> FilesSite {
        let dir = tempfile::Builder::new().prefix("dr-test-").tempdir().unwrap();
        write_files(&dir.path().join("site"));
        let key = dr::KeyPair::generate();
        let identity = dir.path().join("identity.txt");
        key.write_identity_file(&identity).unwrap();
        let site = FilesSite {
            config_path: dir.path().join("dr.toml"),
            recipient: key.recipient(),
            identity,
            repo: dir.path().join("repo"),
            dir,
        };
        site.write_config(&site.encryption());
        site
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The `[encryption]` section with this site's recipient and identity.
    pub fn encryption(&self) -> String {
        format!(
            "[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            self.recipient,
            self.identity.display()
        )
    }

    /// Writes dr.toml: the repository, `encryption` (an `[encryption]` section, or anything else) and the
    /// two files sources.
    pub fn write_config(&self, encryption: &str) {
        let text = format!(
            "[repository]\nurl = \"file://{repo}\"\n\n{encryption}\n[[files]]\nname = \"config\"\npath = \"{config}\"\n\
             format = \"tar\"\n\n[[files]]\nname = \"uploads\"\npath = \"{uploads}\"\nexclude = [{excludes}]\nformat = \"tar\"\n",
            repo = self.repo.display(),
            config = self.path("site/config").display(),
            uploads = self.path("site/uploads").display(),
            excludes = UPLOAD_EXCLUDES.map(|e| format!("{e:?}")).join(", "),
        );
        fs::write(&self.config_path, text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        config_command(&self.config_path, args)
    }

    pub fn dr(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }

    /// Initializes the repository and takes a snapshot; returns its id.
    pub fn init_and_backup(&self) -> String {
        self.dr(&["init"]).ok();
        self.dr(&["backup"]).ok().stdout.trim().to_string()
    }

    /// The stored file of a snapshot's object whose key ends with `suffix`.
    pub fn object(&self, snapshot: &str, suffix: &str) -> PathBuf {
        let mut manifest = read_manifest(&self.repo, snapshot);
        self.repo.join(object_entry(&mut manifest, suffix)["key"].as_str().unwrap())
    }

    pub fn object_key(&self, snapshot: &str, suffix: &str) -> String {
        let mut manifest = read_manifest(&self.repo, snapshot);
        object_entry(&mut manifest, suffix)["key"].as_str().unwrap().to_string()
    }

    /// `restore --to latest --into config=DIR/config --into uploads=DIR/uploads` plus `extra`.
    pub fn restore_into(&self, dir: &Path, extra: &[&str]) -> Run {
        let mut command = self.command(&["restore", "--to", "latest"]);
        command
            .arg("--into")
            .arg(format!("config={}", dir.join("config").display()))
            .arg("--into")
            .arg(format!("uploads={}", dir.join("uploads").display()))
            .args(extra);
        run(&mut command)
    }
}

pub fn manifest_path(repo: &Path, snapshot: &str) -> PathBuf {
    repo.join(format!("snapshots/{snapshot}.json"))
}

pub fn read_manifest(repo: &Path, snapshot: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(manifest_path(repo, snapshot)).unwrap()).unwrap()
}

pub fn write_manifest(repo: &Path, snapshot: &str, manifest: &serde_json::Value) {
    fs::write(manifest_path(repo, snapshot), serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
}

/// The manifest entry of the object whose key ends with `suffix`, for editing.
pub fn object_entry<'m>(manifest: &'m mut serde_json::Value, suffix: &str) -> &'m mut serde_json::Value {
    manifest["sources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .flat_map(|s| s["objects"].as_array_mut().unwrap().iter_mut())
        .find(|o| o["key"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no object ending in {suffix}"))
}
