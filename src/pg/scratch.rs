//! A throw-away PostgreSQL server: `initdb` in a temporary directory, listening only on a unix socket in that
//! directory (unless [`ScratchOptions::settings`] say otherwise), stopped and deleted when dropped. `dr demo`,
//! restore drills and the tests use it.
//!
//! PostgreSQL refuses to run as root, so when dr runs as root the server runs as an unprivileged user (the
//! `postgres` system user, else `nobody`) that owns the temporary directory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};

use super::conninfo::ConnInfo;
use super::tools::{self, Want};
use crate::error::{Error, Result};

/// The superuser created in every scratch cluster.
pub const SUPERUSER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Default)]
pub struct ScratchOptions {
    /// Major version to run; `None` takes the newest installed.
    pub major: Option<u32>,
    /// Where to create the temporary directory (default: the system temp directory).
    pub parent_dir: Option<PathBuf>,
    /// Server settings (`postgres -c NAME=VALUE`), applied after the scratch defaults so they win: e.g.
    /// `listen_addresses = 127.0.0.1` with `ssl = on` and an `hba_file` for a TLS test. Files they name must
    /// be readable by the user the server runs as.
    pub settings: Vec<(String, String)>,
}

/// What a scratch server runs with, before [`ScratchOptions::settings`].
///
/// Its data is disposable, so durability only costs time: no fsync, no full-page images. And it exists to take
/// one big restore, so it gets what PostgreSQL's "Populating a Database" advises for one (the settings a
/// careful operator gives a restore target, and the benchmark's server has): memory for index builds, no
/// checkpoint before the WAL reaches a few GB, no autovacuum racing the load and the drill's checks, and new
/// WAL segments not zero-filled first (a fresh cluster creates every segment a restore writes; a used one
/// recycles them). The WAL level stays the default, as on a production server.
fn scratch_settings(major: u32) -> Vec<(String, String)> {
    let mut settings = vec![
        ("listen_addresses", ""),
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "60"),
        ("maintenance_work_mem", "256MB"),
        ("max_wal_size", "4GB"),
        ("checkpoint_timeout", "1h"),
        ("autovacuum", "off"),
    ];
    if major >= 12 {
        settings.push(("wal_init_zero", "off"));
    }
    settings.into_iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

/// A running scratch server. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct ScratchPostgres {
    dir: Option<tempfile::TempDir>,
    server: Option<Child>,
    socket_dir: PathBuf,
    port: u16,
    major: u32,
}

impl ScratchPostgres {
    /// Creates and starts a cluster; blocks for the second or two `initdb` and start-up take.
    pub fn start(options: &ScratchOptions) -> Result<ScratchPostgres> {
        let want = options.major.map_or(Want::Newest, Want::Exact);
        let initdb = tools::find("initdb", want)?;
        let postgres = tools::find("postgres", Want::Exact(initdb.major))?;
        let run_as = unprivileged_user()?;

        let parent = options.parent_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("dr-scratch-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io(format!("creating a scratch directory in {}", parent.display()), e))?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        fs::create_dir(&socket_dir).map_err(|e| Error::io("creating the socket directory", e))?;
        if let Some(user) = &run_as {
            for path in [dir.path(), &socket_dir] {
                nix::unistd::chown(path, Some(user.uid), Some(user.gid))
                    .map_err(|e| Error::io(format!("chown {}", path.display()), e.into()))?;
            }
        }

        let mut init = initdb.command();
        init.arg("--pgdata")
            .arg(&data_dir)
            .arg(format!("--username={SUPERUSER}"))
            .args(["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .current_dir(dir.path());
        as_user(&mut init, run_as.as_ref());
        run_to_end(&mut init, &initdb.path, "initdb")?;

        let port = free_port();
        let log_path = dir.path().join("postgres.log");
        let log = fs::File::create(&log_path).map_err(|e| Error::io("creating the server log", e))?;
        if let Some(user) = &run_as {
            let _ = nix::unistd::chown(&log_path, Some(user.uid), Some(user.gid));
        }
        let mut server = postgres.command();
        server
            .arg("-D")
            .arg(&data_dir)
            .arg("-k")
            .arg(&socket_dir)
            .arg("-p")
            .arg(port.to_string())
            .args(
                scratch_settings(initdb.major)
                    .iter()
                    .chain(&options.settings)
                    .flat_map(|(name, value)| ["-c".to_string(), format!("{name}={value}")]),
            )
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::io("server log", e))?)
            .stderr(log);
        as_user(&mut server, run_as.as_ref());
        let child = server.spawn().map_err(|e| Error::io(format!("starting {}", postgres.path.display()), e))?;

        let mut scratch =
            ScratchPostgres { dir: Some(dir), server: Some(child), socket_dir, port, major: initdb.major };
        scratch.wait_until_ready(&data_dir, &log_path)?;
        Ok(scratch)
    }

    fn wait_until_ready(&mut self, data_dir: &Path, log_path: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = data_dir.join("postmaster.pid");
        loop {
            // Line 8 of postmaster.pid reads "ready" once the server accepts connections.
            if fs::read_to_string(&pid_file).is_ok_and(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready")) {
                return Ok(());
            }
            let exited = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let mut log = String::new();
                let _ = fs::File::open(log_path).and_then(|mut f| f.read_to_string(&mut log));
                let status = exited.map_or("did not start within 60s".to_string(), |s| s.to_string());
                return Err(Error::child_failed("postgres (scratch server)", status, log, None));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection string for one of its databases.
    pub fn url(&self, dbname: &str) -> String {
        format!("host={} port={} user={SUPERUSER} dbname={dbname}", self.socket_dir.display(), self.port)
    }

    pub fn conninfo(&self, dbname: &str) -> ConnInfo {
        // The URL is built from known-good parts; a parse failure is impossible here.
        ConnInfo::parse(&self.url(dbname)).unwrap_or_else(|e| unreachable!("scratch url: {e}"))
    }

    /// Stops the server (fast shutdown) and deletes its directory.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown();
        if let Some(dir) = self.dir.take() {
            remove_scratch_dir(&dir.keep()).map_err(|e| Error::io("removing the scratch directory", e))?;
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        // SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, stop cleanly.
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Leaves the server running and its directory in place (for `--keep`); returns the directory.
    pub fn keep(mut self) -> PathBuf {
        self.server.take();
        self.dir.take().map(tempfile::TempDir::keep).unwrap_or_default()
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            if let Err(e) = remove_scratch_dir(&path) {
                tracing::warn!("could not remove the scratch directory {}: {e}", path.display());
            }
        }
    }
}

/// Removes a stopped scratch server's directory. A server process that is still finishing its shutdown (its
/// statistics file, say) can add an entry while the directory is being removed, and the removal then fails with
/// "directory not empty" half-way (seen in CI after an interrupted drill): it is tried again for a while.
fn remove_scratch_dir(path: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Stops a scratch server that a killed dr left running (an immediate shutdown: its data is disposable), with
/// the `pg_ctl` of the cluster's major version, as the user it runs as. Returns whether one was running.
pub fn stop_leftover(data_dir: &Path) -> Result<bool> {
    let pid = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|line| line.trim().parse::<i32>().ok()));
    let Some(pid) = pid else { return Ok(false) };
    if kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
        return Ok(false);
    }
    let major = fs::read_to_string(data_dir.join("PG_VERSION")).ok().and_then(|v| v.trim().parse().ok());
    let pg_ctl = tools::find("pg_ctl", major.map_or(Want::Newest, Want::Exact))?;
    let mut command = pg_ctl.command();
    command
        .arg("stop")
        .arg("--pgdata")
        .arg(data_dir)
        .args(["--mode=immediate", "--wait", "--timeout=30"])
        .current_dir(data_dir)
        .stdin(Stdio::null());
    as_user(&mut command, unprivileged_user()?.as_ref());
    run_to_end(&mut command, &pg_ctl.path, "pg_ctl stop")?;
    Ok(true)
}

/// Runs a PostgreSQL tool to its end; a non-zero exit is a [`Error::ChildFailed`] quoting its stderr.
fn run_to_end(command: &mut Command, path: &Path, program: &str) -> Result<()> {
    let output = command.output().map_err(|e| Error::io(format!("running {}", path.display()), e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(Error::child_failed(program, output.status.to_string(), stderr, None));
    }
    Ok(())
}

struct RunAs {
    uid: Uid,
    gid: Gid,
}

/// `None` when not root (the server runs as us); otherwise the user to run it as.
fn unprivileged_user() -> Result<Option<RunAs>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            return Ok(Some(RunAs { uid: user.uid, gid: user.gid }));
        }
    }
    Err(Error::ToolNotFound {
        tool: "an unprivileged user to run PostgreSQL as (running as root; create a `postgres` user)".into(),
        wanted: None,
    })
}

fn as_user(command: &mut Command, user: Option<&RunAs>) {
    use std::os::unix::process::CommandExt;
    if let Some(user) = user {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
}

/// A port number no TCP listener uses now; with a private socket directory it only names the socket file.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(54_329)
}
