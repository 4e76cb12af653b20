//! Shared fixtures for the integration tests: a real PostgreSQL (a scratch cluster started from the machine's
//! own binaries), a seeded site, a files tree, a key pair and a configuration, driven through the real `dr`
//! binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs the `dr` binary with a clean environment for dr's own variables.
pub fn dr_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dr"));
    for var in ["DR_CONFIG", "DR_REPOSITORY_URL", "DR_RECIPIENTS", "DR_IDENTITY_FILE", "RUST_LOG"] {
        command.env_remove(var);
    }
    command
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
        let dir = tempfile::Builder::new().prefix("dr-test-").tempdir().unwrap();
        let db = scratch().await;
        sql(&db, "postgres", &format!("CREATE DATABASE {DATABASE}")).await;
        sql(&db, DATABASE, DEMO_SQL).await;
        sql(&db, DATABASE, FIXTURE_SQL).await;
        write_files(&dir.path().join("site"));

        let key = dr::KeyPair::generate();
        let identity = dir.path().join("identity.txt");
        key.write_identity_file(&identity).unwrap();
        let repo = dir.path().join("repo");
        let site = Site {
            config_path: dir.path().join("dr.toml"),
            recipient: key.recipient(),
            identity,
            repo,
            db,
            dir,
        };
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
        let text = format!(
            r#"[repository]
url = "file://{repo}"

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

[[files]]
name = "uploads"
path = "{uploads}"
exclude = [{excludes}]
{extra}"#,
            repo = self.repo.display(),
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
        let mut command = dr_command();
        command.arg("--config").arg(&self.config_path).args(args);
        command
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
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(site)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in entries.iter().enumerate() {
        let time = filetime::FileTime::from_unix_time(1_700_000_000 + i as i64 * 3_600, 0);
        filetime::set_symlink_file_times(path, time, time).unwrap();
    }
}
