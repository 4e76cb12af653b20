//! Giving a restored entry its metadata back: owner, xattrs, mode, times, in that order.
//!
//! The order matters: `chown` clears setuid/setgid (so the mode comes after it) and drops file capabilities
//! (so the xattrs come after it too); a non-root user may set `user.*` xattrs only on a file it may write (so
//! they come before a read-only mode); and every change but the last touches the times.
//!
//! A restore as non-root cannot give files away, nor set `security.*`/`trusted.*` attributes: each is skipped
//! with ONE warning for the whole restore, because a restore run by a user (a drill, a copy to look at) is
//! still worth having, and a line per file would bury everything else.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use filetime::FileTime;
use nix::unistd::{Gid, Group, Uid, User};

use super::tree::{TreeEntry, TreeKind};

/// Applies metadata, remembering name lookups and which warnings were already given.
#[derive(Debug)]
pub(crate) struct MetadataApplier {
    as_root: bool,
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
    warned_owner: bool,
    warned_privileged_xattr: bool,
    warned_no_xattrs: bool,
    warnings: Vec<String>,
}

impl MetadataApplier {
    pub(crate) fn new() -> MetadataApplier {
        MetadataApplier {
            as_root: Uid::effective().is_root(),
            users: HashMap::new(),
            groups: HashMap::new(),
            warned_owner: false,
            warned_privileged_xattr: false,
            warned_no_xattrs: false,
            warnings: Vec::new(),
        }
    }

    /// The warnings given so far, taken.
    pub(crate) fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Owner and group on this host: by name when the name exists here (ids differ between hosts, names are
    /// what the site's configuration refers to), else the numeric id.
    fn owner(&mut self, entry: &TreeEntry) -> (u32, u32) {
        let uid = entry
            .user
            .as_ref()
            .and_then(|name| {
                *self
                    .users
                    .entry(name.clone())
                    .or_insert_with(|| User::from_name(name).ok().flatten().map(|u| u.uid.as_raw()))
            })
            .unwrap_or(entry.uid);
        let gid = entry
            .group
            .as_ref()
            .and_then(|name| {
                *self
                    .groups
                    .entry(name.clone())
                    .or_insert_with(|| Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw()))
            })
            .unwrap_or(entry.gid);
        (uid, gid)
    }

    /// Applies `entry`'s metadata to `path` (which is the entry, created by this restore, not a link to it).
    pub(crate) fn apply(&mut self, path: &Path, entry: &TreeEntry) -> io::Result<()> {
        let (uid, gid) = self.owner(entry);
        if entry.object.is_some() {
            // An object of a bucket has no owner: it stays the restoring user's.
        } else if self.as_root {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        } else if !self.warned_owner && (uid, gid) != (Uid::effective().as_raw(), Gid::effective().as_raw()) {
            self.warned_owner = true;
            self.warnings.push(format!(
                "owners were not restored: only root can give files away, so everything belongs to uid {}",
                Uid::effective()
            ));
        }
        for (name, value) in &entry.xattrs {
            let name = std::ffi::OsStr::from_bytes(name);
            if let Err(e) = xattr::set(path, name, value) {
                self.xattr_failed(name, e)?;
            }
        }
        if !matches!(entry.kind, TreeKind::Symlink { .. }) {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(entry.mode & 0o7777))?;
        }
        let mtime = FileTime::from_unix_time(entry.mtime.0, entry.mtime.1);
        // Never follows a symlink: a link gets its own time, as the source had.
        filetime::set_symlink_file_times(path, mtime, mtime)
    }

    /// An attribute that could not be set: a warning (once) when the target cannot hold xattrs at all or only
    /// root may set this one, an error otherwise.
    fn xattr_failed(&mut self, name: &std::ffi::OsStr, e: io::Error) -> io::Result<()> {
        let privileged = name.as_bytes().starts_with(b"security.") || name.as_bytes().starts_with(b"trusted.");
        let denied = matches!(e.raw_os_error(), Some(nix::libc::EPERM) | Some(nix::libc::EACCES));
        if e.raw_os_error() == Some(nix::libc::ENOTSUP) {
            if !self.warned_no_xattrs {
                self.warned_no_xattrs = true;
                self.warnings.push(format!(
                    "extended attributes were not restored: the target's filesystem does not keep them ({name:?}: {e})"
                ));
            }
            return Ok(());
        }
        if privileged && denied && !self.as_root {
            if !self.warned_privileged_xattr {
                self.warned_privileged_xattr = true;
                self.warnings.push(format!(
                    "security.* and trusted.* extended attributes were not restored: only root may set them \
                     (first: {name:?})"
                ));
            }
            return Ok(());
        }
        Err(io::Error::new(e.kind(), format!("setting extended attribute {name:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entry(user: Option<&str>, uid: u32) -> TreeEntry {
        TreeEntry {
            path: b"f".to_vec(),
            kind: TreeKind::File,
            mode: 0o640,
            uid,
            gid: uid,
            user: user.map(String::from),
            group: user.map(String::from),
            mtime: (1_600_000_000, 42),
            size: 0,
            chunks: vec![],
            xattrs: vec![],
            incomplete: None,
            object: None,
        }
    }

    #[test]
    fn owners_map_by_name_when_the_name_exists_here_else_by_id() {
        if !Uid::effective().is_root() {
            return; // giving files away needs root; the integration tests cover the non-root side
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let mut applier = MetadataApplier::new();
        fs::write(&path, b"").unwrap();
        applier.apply(&path, &entry(Some("nobody"), 12345)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().uid(), nobody.uid.as_raw(), "by name");
        applier.apply(&path, &entry(Some("no-such-user-on-this-host"), 12345)).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 12345), "by id");
        assert_eq!((meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec()), (0o640, 1_600_000_000, 42));
        assert!(applier.take_warnings().is_empty());
    }

    #[test]
    fn a_setuid_mode_survives_the_chown_before_it() {
        if !Uid::effective().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"").unwrap();
        let mut setuid = entry(None, 12345);
        setuid.mode = 0o6755;
        MetadataApplier::new().apply(&path, &setuid).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o6755);
    }
}
