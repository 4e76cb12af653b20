//! The `dr` binary run the way the production image runs it (see the Dockerfile): `dr serve` as UID 10001
//! under tini, tini being PID 1 of its own PID namespace, with the whole root filesystem read-only except the
//! state volume, and the configuration owned by root and read-only. `dr healthcheck` (the image's HEALTHCHECK)
//! answers, a scheduled backup writes a snapshot, and SIGTERM, sent to PID 1 as `docker stop` does, ends it
//! with exit 0 well within the grace period. A database is backed up and drilled in the same conditions.
//!
//! No Docker engine runs on the test machines; namespaces (`unshare`) and `setpriv` give the same process
//! tree, user and mount view. Needs root, tini, unshare and setpriv (tests/run installs tini). The binary is this
//! test build's own `dr` (what is tested is dr under tini, in the image's conditions, not the optimizer: a
//! separate `cargo build --release` here compiled the whole dependency tree a second time); `$DR_RELEASE_BIN`
//! runs it on another binary, e.g. the release build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};

/// The image's user (Dockerfile: `useradd --uid 10001`).
const UID: u32 = 10001;
/// `[service] grace` of the test's configuration: SIGTERM must end the service within it.
const GRACE: Duration = Duration::from_secs(10);

/// Whether this machine can run the test; under CI a missing piece is a failure, not a skip.
fn prerequisites() -> bool {
    let missing: Vec<&str> = ["tini", "unshare", "setpriv"].into_iter().filter(|tool| which(tool).is_none()).collect();
    let problem = if !Uid::effective().is_root() {
        Some("needs root (namespaces, setpriv)".to_string())
    } else if !missing.is_empty() {
        Some(format!("needs {} (tests/run installs them)", missing.join(", ")))
    } else {
        None
    };
    match problem {
        None => true,
        Some(problem) => {
            common::skip(&format!("the container test {problem}"));
            false
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

/// The binary the image would ship: this build's, or `$DR_RELEASE_BIN`.
fn image_binary() -> PathBuf {
    std::env::var_os("DR_RELEASE_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dr")), PathBuf::from)
}

/// A container's view, laid out in a temporary directory: the binary, a root-owned read-only configuration,
/// the site's files (read-only to dr), the secrets and the one writable volume.
struct Image {
    root: tempfile::TempDir,
    port: u16,
}

impl Image {
    fn new() -> Image {
        Image::with_sources("", None)
    }

    /// `extra_toml` is appended to the configuration (more sources); `pgpass` becomes the libpq password file
    /// secret, read through `PGPASSFILE` as compose sets it.
    fn with_sources(extra_toml: &str, pgpass: Option<&str>) -> Image {
        let root = tempfile::tempdir().unwrap();
        let image = Image { root, port: common::free_port() };
        fs::set_permissions(image.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for dir in ["bin", "etc", "site/uploads/2026", "secrets", "data", "data/tmp", "data/state"] {
            fs::create_dir_all(image.path(dir)).unwrap();
        }
        fs::copy(image_binary(), image.path("bin/dr")).unwrap();
        // The image's `useradd dr`: initdb and postgres (a drill's scratch cluster) need their user to have a
        // name. The namespace mounts these over /etc/passwd and /etc/group.
        let passwd = fs::read_to_string("/etc/passwd").unwrap();
        fs::write(image.path("etc/passwd"), format!("{passwd}dr:x:{UID}:{UID}::/var/lib/dr:/usr/sbin/nologin\n"))
            .unwrap();
        let group = fs::read_to_string("/etc/group").unwrap();
        fs::write(image.path("etc/group"), format!("{group}dr:x:{UID}:\n")).unwrap();
        fs::set_permissions(image.path("bin/dr"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(image.path("site/uploads/2026/cat.jpg"), b"\xff\xd8 a cat, not really a jpeg").unwrap();
        fs::write(image.path("site/uploads/2026/dog.jpg"), vec![7u8; 300_000]).unwrap();

        // The identity is a secret file owned by the service user, like a compose secret the host prepared.
        let mut keygen = Command::new(image.path("bin/dr"));
        keygen.args(["keygen", "--output"]).arg(image.path("secrets/dr-identity"));
        let keygen = output_of_new_program(&mut keygen);
        assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
        let recipient = String::from_utf8_lossy(&keygen.stdout)
            .split_whitespace()
            .find(|word| word.starts_with("age1"))
            .expect("keygen prints the recipient")
            .to_string();
        for dir in ["secrets", "data", "data/tmp", "data/state"] {
            chown(&image.path(dir), UID);
            fs::set_permissions(image.path(dir), fs::Permissions::from_mode(0o700)).unwrap();
        }
        chown(&image.path("secrets/dr-identity"), UID);
        if let Some(pgpass) = pgpass {
            fs::write(image.path("secrets/pgpass"), pgpass).unwrap();
            fs::set_permissions(image.path("secrets/pgpass"), fs::Permissions::from_mode(0o600)).unwrap();
            chown(&image.path("secrets/pgpass"), UID);
        }

        let config = format!(
            r#"[repository]
url = "file://{data}/repo"

[encryption]
recipients = ["{recipient}"]
identity_file = "{secrets}/dr-identity"

[[files]]
name = "uploads"
path = "{uploads}"

[objectives]
rpo = "1h"

[service]
listen = "0.0.0.0:{port}"
state_dir = "{data}/state"
grace = "{grace}s"

[[job]]
name = "backup"
schedule = "*/2 * * * * *"
run = "backup"
{extra_toml}
"#,
            data = image.path("data").display(),
            secrets = image.path("secrets").display(),
            uploads = image.path("site/uploads").display(),
            port = image.port,
            grace = GRACE.as_secs(),
        );
        fs::write(image.config(), config).unwrap();
        fs::set_permissions(image.config(), fs::Permissions::from_mode(0o444)).unwrap();

        // `dr init` as the service user, as `docker compose run --rm dr init` would.
        let init = image.as_service_user(&["init"]).output().unwrap();
        assert!(init.status.success(), "dr init: {}", String::from_utf8_lossy(&init.stderr));
        image
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn config(&self) -> PathBuf {
        self.path("etc/dr.toml")
    }

    /// The image's environment, and nothing of the test runner's.
    fn environment(&self) -> Vec<(String, String)> {
        vec![
            ("DR_CONFIG".into(), self.config().display().to_string()),
            ("HOME".into(), self.path("data").display().to_string()),
            ("TMPDIR".into(), self.path("data/tmp").display().to_string()),
            ("RUST_LOG".into(), "info".into()),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("PGPASSFILE".into(), self.path("secrets/pgpass").display().to_string()),
        ]
    }

    /// `dr ARGS` as UID 10001 with no capabilities, outside the namespaces (the health check's view).
    fn as_service_user(&self, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args([&format!("--reuid={UID}"), &format!("--regid={UID}"), "--clear-groups", "--inh-caps=-all"])
            .arg("--")
            .arg(self.path("bin/dr"))
            .args(args)
            .env_clear()
            .envs(self.environment());
        command
    }

    /// `dr ARGS` as the image runs it (`docker run IMAGE ARGS`): tini as PID 1 of a new PID namespace, as
    /// UID 10001, in a mount namespace where `/` is read-only and only the volume is writable.
    fn run_in_container(&self, args: &[&str]) -> Child {
        let script = r#"set -eu
mount --bind "$VOLUME" "$VOLUME"
mount --bind "$ETC/passwd" /etc/passwd
mount --bind "$ETC/group" /etc/group
mount -o remount,bind,ro /
exec setpriv --reuid="$SERVICE_UID" --regid="$SERVICE_UID" --clear-groups --no-new-privs --inh-caps=-all -- \
    env -i DR_CONFIG="$DR_CONFIG" HOME="$HOME" TMPDIR="$TMPDIR" RUST_LOG="$RUST_LOG" PATH="$PATH" \
    PGPASSFILE="$PGPASSFILE" tini -- "$DR" "$@""#;
        Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--mount-proc", "--", "/bin/sh", "-c", script, "sh"])
            .args(args)
            .env_clear()
            .envs(self.environment())
            .env("VOLUME", self.path("data"))
            .env("ETC", self.path("etc"))
            .env("SERVICE_UID", UID.to_string())
            .env("DR", self.path("bin/dr"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// The processes `pid` started (`/proc/PID/task/PID/children`).
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A line of `/proc/PID/status`, e.g. `Uid` or `NSpid`, split into its fields.
fn status_field(pid: u32, field: &str) -> Vec<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().skip(1).map(str::to_string).collect()
}

/// The name of `pid`, or "" once it has exited (a set-up `mount` may end between listing and reading).
fn process_name(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

#[track_caller]
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn snapshots(image: &Image) -> Vec<PathBuf> {
    match fs::read_dir(image.path("data/repo/snapshots")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn serve_runs_as_the_image_runs_it_and_stops_cleanly_on_sigterm() {
    if !prerequisites() {
        return;
    }
    let image = Image::new();
    let mut service = image.run_in_container(&["serve"]);

    // The process tree a container has: tini is PID 1, dr its child, both as the service user.
    // Until the set-up script execs tini, PID 1 is `sh` with `mount` as its child: wait past that.
    let mut tini = 0;
    wait_for("tini to start dr", || {
        tini = children(service.id()).first().copied().unwrap_or(0);
        tini != 0
            && process_name(tini) == "tini"
            && children(tini).first().is_some_and(|&child| process_name(child) == "dr")
    });
    let dr = children(tini)[0];
    assert_eq!(status_field(tini, "NSpid").last().unwrap(), "1", "tini is PID 1 of its namespace");
    assert_eq!(process_name(dr), "dr");
    for pid in [tini, dr] {
        assert_eq!(status_field(pid, "Uid"), vec![UID.to_string(); 4], "real, effective, saved, fs uid");
    }
    assert_eq!(status_field(dr, "NoNewPrivs"), vec!["1"]);
    let mounts = fs::read_to_string(format!("/proc/{dr}/mounts")).unwrap();
    let root_options =
        mounts.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f[1] == "/").unwrap()[3];
    assert!(root_options.split(',').any(|o| o == "ro"), "dr sees / read-only: {root_options}");
    assert_eq!(status_field(dr, "CapEff"), vec!["0000000000000000"]);

    // The HEALTHCHECK: `dr healthcheck` reads [service] listen (0.0.0.0) and asks over loopback.
    wait_for("dr healthcheck to pass", || image.as_service_user(&["healthcheck"]).output().unwrap().status.success());

    // Scheduled backups write snapshots into the volume, as the service user, with the rest read-only.
    wait_for("a scheduled snapshot", || !snapshots(&image).is_empty());
    for snapshot in snapshots(&image) {
        assert_eq!(fs::metadata(&snapshot).unwrap().uid(), UID, "{} is the service user's", snapshot.display());
    }
    wait_for("readiness", || image.as_service_user(&["healthcheck", "--ready"]).output().unwrap().status.success());

    // `docker stop`: SIGTERM to PID 1. tini passes it on; dr finishes or cancels its job within the grace.
    let stopping = Instant::now();
    kill(Pid::from_raw(tini as i32), Signal::SIGTERM).unwrap();
    let deadline = stopping + GRACE;
    let status = loop {
        if let Some(status) = service.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = service.kill();
            panic!("dr serve did not stop within the grace period ({GRACE:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(service.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(log.contains("dr serve stopped"), "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
    eprintln!("stopped in {:?}", stopping.elapsed());

    // Every snapshot the service committed is whole: the identity reads back every object.
    let verify =
        image.as_service_user(&["verify", "--all"]).output().expect("dr verify as the service user after the stop");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

#[test]
fn serve_refuses_to_start_when_its_state_dir_is_not_writable() {
    if !prerequisites() {
        return;
    }
    let image = Image::new();
    // The volume forgotten: the state directory is on the read-only root (here: owned by root, mode 0755).
    fs::remove_dir_all(image.path("data/state")).unwrap();
    fs::create_dir(image.path("data/state")).unwrap();
    fs::set_permissions(image.path("data/state"), fs::Permissions::from_mode(0o755)).unwrap();
    let output = image.as_service_user(&["serve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("[service] state_dir") && stderr.contains("must be a writable directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn healthcheck_fails_with_one_clear_line_when_no_service_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dr.toml");
    let port = common::free_port();
    fs::write(&config, format!("[repository]\nurl = \"file:///nowhere\"\n\n[service]\nlisten = \"0.0.0.0:{port}\"\n"))
        .unwrap();
    let run = common::run(&mut common::config_command(&config, &["healthcheck"]));
    let error = run.user_error(1);
    assert!(error.contains(&format!("dr serve at http://127.0.0.1:{port}/healthz: no answer")), "{error}");
}

/// What the test above emulates must be what the Dockerfile says: the user, tini, the command, the
/// environment and the health check. A change to one without the other fails here.
#[test]
fn the_dockerfile_runs_dr_as_this_test_does() {
    let dockerfile = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let runtime = dockerfile.split("AS runtime").nth(1).expect("a runtime stage");
    for line in [
        &format!("USER {UID}:{UID}"),
        r#"ENTRYPOINT ["/usr/bin/tini", "--", "dr"]"#,
        r#"CMD ["serve"]"#,
        "STOPSIGNAL SIGTERM",
        "TMPDIR=/var/lib/dr/tmp",
        "HOME=/var/lib/dr",
        "DR_CONFIG=/etc/dr/dr.toml",
    ] {
        assert!(runtime.contains(line), "the runtime stage has `{line}`");
    }
    let healthcheck = runtime.lines().find(|l| l.starts_with("HEALTHCHECK")).expect("a HEALTHCHECK");
    assert!(healthcheck.contains(r#"CMD ["dr", "healthcheck""#), "{healthcheck}");
    assert!(runtime.contains(&format!("useradd --system --uid {UID} --gid {UID}")));
}

/// The site's database as the container reaches it: over TCP, with a password (scram), not over a socket.
struct SourceDatabase {
    server: dr::pg::ScratchPostgres,
    _hba_dir: tempfile::TempDir,
}

const SOURCE_PASSWORD: &str = "container-test-password";

impl SourceDatabase {
    fn start(runtime: &tokio::runtime::Runtime) -> SourceDatabase {
        // Readable by the user the server runs as (postgres, when the tests run as root).
        let hba_dir = tempfile::tempdir().unwrap();
        fs::set_permissions(hba_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let hba = hba_dir.path().join("pg_hba.conf");
        fs::write(&hba, "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n").unwrap();
        fs::set_permissions(&hba, fs::Permissions::from_mode(0o644)).unwrap();
        let settings = vec![
            ("listen_addresses".to_string(), "127.0.0.1".to_string()),
            ("hba_file".to_string(), hba.display().to_string()),
        ];
        let server = dr::pg::ScratchPostgres::start(&dr::pg::ScratchOptions { settings, ..Default::default() })
            .expect("starting the source PostgreSQL");
        runtime.block_on(async {
            common::sql(&server, "postgres", &format!("ALTER ROLE postgres PASSWORD '{SOURCE_PASSWORD}'")).await;
            common::sql(&server, "postgres", "CREATE DATABASE isntgram").await;
            common::sql(
                &server,
                "isntgram",
                "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
                 CREATE TABLE posts (id bigserial PRIMARY KEY, user_id bigint REFERENCES users, caption text);
                 INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 500) AS i;
                 INSERT INTO posts (user_id, caption) SELECT 1 + i % 500, 'Sunset nº ' || i
                 FROM generate_series(1, 5000) AS i;",
            )
            .await;
        });
        SourceDatabase { server, _hba_dir: hba_dir }
    }

    fn toml(&self) -> String {
        format!(
            "\n[[postgres]]\nname = \"app\"\nurl = \"postgres://postgres@127.0.0.1:{}/isntgram\"\nglobals = true\n",
            self.server.port()
        )
    }

    fn pgpass(&self) -> String {
        format!("127.0.0.1:{}:*:postgres:{SOURCE_PASSWORD}\n", self.server.port())
    }
}

/// `docker compose run --rm dr backup`, then `... dr drill`: pg_dump reads the password from the PGPASSFILE
/// secret, and the drill's embedded scratch cluster (initdb, postgres) runs as UID 10001 under the read-only
/// root, in `$TMPDIR` on the volume, with tini reaping it; the drill passes and leaves the volume's tmp empty.
#[test]
fn a_database_is_backed_up_and_drilled_inside_the_container() {
    if !prerequisites() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let source = SourceDatabase::start(&runtime);
    let image = Image::with_sources(&source.toml(), Some(&source.pgpass()));

    let backup = image.run_in_container(&["backup"]).wait_with_output().unwrap();
    assert!(backup.status.success(), "dr backup: {}", String::from_utf8_lossy(&backup.stderr));
    let drill = image.run_in_container(&["drill", "--json"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&drill.stderr);
    assert!(drill.status.success(), "dr drill: {stderr}");
    let record: serde_json::Value = serde_json::from_slice(&drill.stdout).unwrap();
    assert_eq!((record["passed"].as_bool(), record["succeeded"].as_bool()), (Some(true), Some(true)), "{record:#}");
    let checks = record["checks"].as_array().unwrap();
    let row_counts = checks.iter().find(|c| c["name"] == "row counts app").expect("a row count check");
    assert_eq!(row_counts["status"], "pass", "{record:#}");
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{record:#}");

    // The drill's scratch cluster and restored files lived in $TMPDIR and are gone; what it wrote to the
    // repository belongs to the service user.
    let leftovers: Vec<_> = fs::read_dir(image.path("data/tmp")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(leftovers.is_empty(), "left in $TMPDIR: {leftovers:?}");
    let drills: Vec<_> = fs::read_dir(image.path("data/repo/drills")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(drills.len(), 1, "{drills:?}");
    assert_eq!(fs::metadata(&drills[0]).unwrap().uid(), UID);
}

/// Runs a program that was just written. Another test's child, forked while the file was open for writing,
/// holds that descriptor until it execs, and Linux refuses to run a file open for writing (ETXTBSY): wait for it.
fn output_of_new_program(command: &mut Command) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            result => return result.unwrap(),
        }
    }
}
