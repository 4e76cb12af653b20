//! Where a restore, a drill or the demo keeps what it must hold in plaintext while it works, so that nothing of
//! a backup outlives the process that decrypted it, even a process killed with SIGKILL.
//!
//! Every such run works in its own directory under one private root per user, `<temp dir>/dr-<uid>/` (mode
//! 0700; 0711 for root, so that the scratch PostgreSQL's user can reach its own, private, directory inside):
//!
//! ```text
//! $TMPDIR/dr-<uid>/
//!   restore-XXXXXX/   lock        held (flock) for the life of the run; the kernel releases it on any death
//!                     staging     the `.dr-restore-*` directories this run made inside restore targets
//!   drill-XXXXXX/     lock  dr-scratch-XXXXXX/ (the scratch cluster)  dr-drill-XXXXXX/ (restored files)
//! ```
//!
//! A run that ends removes its directory, and the root too once it is empty. Every new run first sweeps the root: a directory whose lock it can
//! take belongs to a run that died, so its scratch PostgreSQL is stopped, the staging directories it listed are
//! removed, and the directory is deleted. A directory marked `kept` (`dr drill --keep`) is left to the user.
//! A parallel restore's staged archive is not even named: it is an unlinked file (see `engine::restore`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Uid;

use crate::error::{Error, Result};
use crate::files::STAGING_PREFIX;

const LOCK: &str = "lock";
/// Marks a run directory the user asked to keep (`--keep`); sweeps leave it alone.
pub const KEPT: &str = "kept";
const STAGING_LIST: &str = "staging";
/// A run directory without a lock file is being created, unless it is older than this.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// This process's run directory: locked while it lives, removed when dropped (unless kept).
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    path: PathBuf,
    /// Held, not read: the lock is what tells a sweep that this run is alive.
    _lock: Option<Flock<File>>,
    keep: bool,
}

impl RunDir {
    /// Sweeps the leftovers of dead runs from the private root in `parent` (default: the system temp
    /// directory), then makes a locked run directory there named after `kind` (`restore`, `drill`, `demo`).
    pub fn create(parent: Option<&Path>, kind: &str) -> Result<RunDir> {
        let mut attempts = 0;
        let (root, path) = loop {
            let root = private_root(parent)?;
            for swept in sweep(&root) {
                tracing::warn!("{swept}");
            }
            let made = tempfile::Builder::new()
                .prefix(&format!("{kind}-"))
                .permissions(fs::Permissions::from_mode(root_mode()))
                .tempdir_in(&root);
            match made {
                Ok(dir) => break (root, dir.keep()),
                // Another run removed the root as it emptied it: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
                Err(e) => return Err(Error::io(format!("creating a private directory in {}", root.display()), e)),
            }
        };
        let fail = |e: io::Error| Error::io(format!("creating a private directory in {}", root.display()), e);
        let mut run = RunDir { root: root.clone(), path, _lock: None, keep: false };
        // Locked before it takes its name: a sweep never finds the lock file unlocked while this run lives.
        let unnamed = run.path.join(format!("{LOCK}.new"));
        let file = OpenOptions::new().create_new(true).write(true).mode(0o600).open(&unnamed).map_err(fail)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| fail(io::Error::from_raw_os_error(errno as i32)))?;
        run._lock = Some(lock);
        fs::rename(&unnamed, run.path.join(LOCK)).map_err(fail)?;
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remembers a staging directory made outside the run directory (inside a restore target), so that a
    /// sweep removes it if this run dies before it does.
    pub fn note_staging(&self, dir: &Path) -> Result<()> {
        let list = self.path.join(STAGING_LIST);
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&list)
            .and_then(|mut f| writeln!(f, "{}", dir.display()))
            .map_err(|e| Error::io(format!("writing {}", list.display()), e))
    }

    /// Leaves the directory in place for the user (`--keep`): marked, so that no sweep removes it.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        if let Err(e) = File::create(self.path.join(KEPT)) {
            tracing::warn!("could not mark {} as kept: {e}", self.path.display());
        }
        self.path.clone()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Removed while the lock is still held (fields drop after this), so no sweep races with it.
        if self.keep {
            return;
        }
        // A child that is still exiting (a scratch server removing its socket) can hold an entry for a moment:
        // "directory not empty" half-way is tried again, for a while, before it is reported.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match fs::remove_dir_all(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if std::time::Instant::now() >= deadline => {
                    tracing::warn!("could not remove {}: {e}", self.path.display());
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        // Fails while other runs use the root, as it should.
        let _ = fs::remove_dir(&self.root);
    }
}

/// The private root in `parent`: made if missing, and refused unless it is a real directory of ours that no
/// one else may write to (it sits in a world-writable directory where anyone could have made it first).
pub fn private_root(parent: Option<&Path>) -> Result<PathBuf> {
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let uid = Uid::effective();
    let root = parent.join(format!("dr-{uid}"));
    match fs::DirBuilder::new().mode(root_mode()).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", root.display()), e)),
    }
    let meta = fs::symlink_metadata(&root).map_err(|e| Error::io(format!("inspecting {}", root.display()), e))?;
    if !meta.file_type().is_dir() || meta.uid() != uid.as_raw() || meta.mode() & 0o022 != 0 {
        return Err(Error::io(
            format!("using {} for decrypted data", root.display()),
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "it is not a directory owned by this user and closed to others; remove it, or set TMPDIR",
            ),
        ));
    }
    Ok(root)
}

fn root_mode() -> u32 {
    if Uid::effective().is_root() { 0o711 } else { 0o700 }
}

/// Removes the run directories of dead runs under `root`; returns one line per directory swept.
pub fn sweep(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root) else { return Vec::new() };
    let mut swept = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || path.join(KEPT).exists() {
            continue;
        }
        // Held until the directory is gone, so that two sweeps never work on one directory.
        let _lock = match File::open(path.join(LOCK)) {
            Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Some(lock),
                Err(_) => continue, // a live run
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
                if age.is_none_or(|age| age < UNLOCKED_GRACE) {
                    continue; // being created
                }
                None
            }
            Err(_) => continue,
        };
        swept.push(sweep_one(&path));
    }
    swept
}

fn sweep_one(path: &Path) -> String {
    let mut what = Vec::new();
    for entry in fs::read_dir(path).into_iter().flatten().filter_map(|e| e.ok()) {
        let data = entry.path().join("data");
        if data.join("postmaster.pid").exists() {
            match crate::pg::scratch::stop_leftover(&data) {
                Ok(true) => what.push(format!("stopped the scratch PostgreSQL in {}", data.display())),
                Ok(false) => {}
                Err(e) => tracing::warn!("could not stop the scratch PostgreSQL in {}: {e}", data.display()),
            }
        }
    }
    for staging in fs::read_to_string(path.join(STAGING_LIST)).unwrap_or_default().lines().map(PathBuf::from) {
        let is_staging = staging.file_name().is_some_and(|n| n.to_string_lossy().starts_with(STAGING_PREFIX));
        let is_dir = fs::symlink_metadata(&staging).is_ok_and(|m| m.file_type().is_dir());
        if is_staging && is_dir {
            match fs::remove_dir_all(&staging) {
                Ok(()) => what.push(format!("removed the staging directory {}", staging.display())),
                Err(e) => tracing::warn!("could not remove {}: {e}", staging.display()),
            }
        }
    }
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
    let mut line = format!("removed {}, left by a dr run that was killed", path.display());
    for item in what {
        line.push_str("; ");
        line.push_str(&item);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_run_is_kept_and_a_dead_one_swept() {
        let parent = tempfile::tempdir().unwrap();
        let live = RunDir::create(Some(parent.path()), "restore").unwrap();
        let mut dead = RunDir::create(Some(parent.path()), "drill").unwrap();
        let outside = parent.path().join(".dr-restore-0123");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("plaintext"), "secret").unwrap();
        dead.note_staging(&outside).unwrap();
        fs::write(dead.path().join("plain.pgdump"), "secret").unwrap();
        // A killed process: the kernel releases its lock, nothing removes its directory.
        dead._lock = None;
        let dead_path = dead.path().to_path_buf();
        std::mem::forget(dead);

        let root = private_root(Some(parent.path())).unwrap();
        let swept = sweep(&root);
        assert_eq!(swept.len(), 1, "{swept:?}");
        assert!(swept[0].contains(".dr-restore-0123"), "{swept:?}");
        assert!(!dead_path.exists());
        assert!(!outside.exists());
        assert!(live.path().exists(), "a live run is never swept");
        drop(live);
        assert!(!root.exists(), "the last run out removes the root");
    }

    #[test]
    fn a_kept_run_is_not_swept() {
        let parent = tempfile::tempdir().unwrap();
        let kept = RunDir::create(Some(parent.path()), "drill").unwrap().keep();
        let root = private_root(Some(parent.path())).unwrap();
        assert!(sweep(&root).is_empty());
        assert!(kept.exists());
    }

    #[test]
    fn a_root_others_may_write_to_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join(format!("dr-{}", Uid::effective()));
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_root(Some(parent.path())).is_err());
    }
}
