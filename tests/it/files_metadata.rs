//! The files side of the chunked format on real directories: a tree walked, written as tree lines, read back and
//! restored (data copied from the source by offset, in pieces, out of order, as chunks arrive from packs) comes
//! back equal by `find -printf '%P %y %m %s %T@ %l %u:%g'` and by xattrs, hard links staying hard links; and as
//! a user who is not root, a restore keeps what it may and warns once about the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use dr::files::{
    Excludes, MetadataWalk, Selection, TreeEntry, TreeExtraction, TreeKind, TreeReader, TreeWriter, WalkItem,
    path_selected,
};
use filetime::FileTime;

/// `find DIR -printf '%P %y %m %s %T@ %l %u:%g\n' | sort`, run for real.
fn find_listing(dir: &Path) -> String {
    let out = Command::new("find").arg(dir).arg("-printf").arg("%P %y %m %s %T@ %l %u:%g\\n").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    lines.sort();
    String::from_utf8_lossy(&lines.join(&b'\n')).into_owned()
}

/// A tree with every kind of metadata the format keeps; whether user xattrs could be set on it.
fn plant_tree(root: &Path) -> bool {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("a/b/c/big.bin"), &big).unwrap();
    fs::write(root.join("a/one.txt"), b"one\n").unwrap();
    fs::write(root.join("a/empty-file"), b"").unwrap();
    fs::write(root.join("hard1"), b"shared by two names\n").unwrap();
    fs::hard_link(root.join("hard1"), root.join("a/hard2")).unwrap();
    fs::write(root.join("photo.jpg"), b"\xff\xd8jpeg").unwrap();
    let xattrs = xattr::set(root.join("photo.jpg"), "user.origin", b"camera \x00\xff").is_ok();
    if xattrs {
        xattr::set(root.join("a/b"), "user.dir", b"on a directory").unwrap();
    }
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::write(root.join("secret"), b"0600\n").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"name-\xff\xfe")), b"not UTF-8\n").unwrap();
    fs::write(root.join("orphan"), b"uid 12345 has no name\n").unwrap();
    std::os::unix::fs::lchown(root.join("orphan"), Some(12345), Some(12345)).unwrap();
    symlink("a/one.txt", root.join("link")).unwrap();
    symlink("missing/target", root.join("dangling")).unwrap();
    std::os::unix::fs::lchown(root.join("dangling"), Some(12345), Some(12345)).unwrap();
    for (path, mode) in [("setuid", 0o4755), ("secret", 0o600), ("sticky", 0o1777), ("a/b/c", 0o750), ("", 0o711)] {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Nanosecond mtimes on everything, links too, deepest first so that no later change moves them.
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(root).into_iter().map(|e| e.unwrap().into_path()).collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in paths.iter().enumerate() {
        let time = FileTime::from_unix_time(1_700_000_000 + i as i64 * 1000, 123_456_789 - i as u32 * 1000);
        filetime::set_symlink_file_times(path, time, time).unwrap();
    }
    xattrs
}

/// Walks `root` into tree lines, as a backup would.
fn tree_of(root: &Path) -> Vec<u8> {
    let excludes = Excludes::new(&[]).unwrap();
    let mut writer = TreeWriter::new(Vec::new());
    for item in MetadataWalk::new("uploads", root, &excludes) {
        match item.unwrap() {
            WalkItem::Entry(entry, _) => writer.write(&entry).unwrap(),
            WalkItem::Skipped(why) => panic!("nothing is skipped here: {why}"),
        }
    }
    writer.finish().unwrap()
}

/// Restores `tree` into `target`, each file's data read from `data_root` and written in 64 KiB pieces, last
/// piece first, after every entry was created (as pack after pack arrives). Returns the warnings.
fn restore(tree: &[u8], data_root: &Path, target: &Path) -> Vec<String> {
    restore_only(tree, b"", data_root, target)
}

/// [`restore`] of the part `filter` selects (`dr restore --path`): a first pass over the tree, then the second.
fn restore_only(tree: &[u8], filter: &[u8], data_root: &Path, target: &Path) -> Vec<String> {
    let mut selection = Selection::new(filter, TreeReader::new(tree, "tree")).unwrap();
    let entries: Vec<TreeEntry> =
        TreeReader::new(tree, "tree").map(|e| e.unwrap()).filter_map(|e| selection.select(e)).collect();
    assert!(selection.matched() > 0, "the snapshot has {}", String::from_utf8_lossy(filter));
    let mut extraction = TreeExtraction::prepare("uploads", target, false).unwrap();
    let mut slots = Vec::new();
    for entry in &entries {
        if let Some(slot) = extraction.create(entry).unwrap() {
            slots.push((slot, fs::read(data_root.join(entry.relative_path())).unwrap()));
        }
    }
    for (slot, data) in &slots {
        let pieces: Vec<(usize, &[u8])> = data.chunks(64 * 1024).enumerate().collect();
        for (i, piece) in pieces.into_iter().rev() {
            extraction.write_at(*slot, (i * 64 * 1024) as u64, piece).unwrap();
        }
    }
    let mut warnings = extraction.finish_metadata(entries.into_iter()).unwrap();
    warnings.extend(extraction.commit(false).unwrap());
    warnings
}

fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            files.push((entry.path().strip_prefix(root).unwrap().to_path_buf(), fs::read(entry.path()).unwrap()));
        }
    }
    files
}

#[test]
fn a_walked_tree_restores_with_its_metadata_exactly() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip("restoring owners (uid 12345) needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    let xattrs = plant_tree(&source);
    let tree = tree_of(&source);
    let text = String::from_utf8_lossy(&tree);
    assert!(
        text.contains("\"type\":\"hardlink\",\"link\":\"a/hard2\""),
        "the first path in walk order holds the data:\n{text}"
    );
    assert!(text.contains("\"path_hex\":\"6e616d652dfffe\""), "{text}");

    let target = dir.path().join("restored");
    let warnings = restore(&tree, &source, &target);
    assert_eq!(warnings, Vec::<String>::new());

    let (original, restored) = (find_listing(&source), find_listing(&target));
    assert_eq!(restored, original);
    assert!(original.contains("setuid f 4755 ") && original.contains(" 12345:12345"), "{original}");
    assert!(
        original.contains("big.bin f 644 300000 1700000000.123456789") && original.contains("sticky d 1777"),
        "{original}"
    );
    assert_eq!(contents(&target), contents(&source));
    let (one, two) = (fs::metadata(target.join("hard1")).unwrap(), fs::metadata(target.join("a/hard2")).unwrap());
    assert_eq!((one.ino(), one.nlink()), (two.ino(), 2), "a hard link stays a hard link");
    assert_eq!(fs::read_link(target.join("dangling")).unwrap(), Path::new("missing/target"));
    if xattrs {
        assert_eq!(xattr::get(target.join("photo.jpg"), "user.origin").unwrap().unwrap(), b"camera \x00\xff");
        assert_eq!(xattr::get(target.join("a/b"), "user.dir").unwrap().unwrap(), b"on a directory");
    } else {
        eprintln!("SKIPPED (part): the temporary directory's filesystem keeps no user xattrs");
    }
    // A second backup of the restored tree describes it exactly as the first described the original.
    assert_eq!(String::from_utf8_lossy(&tree_of(&target)), text);
}

#[test]
fn a_filtered_restore_brings_back_one_directory_or_file_with_its_parents_and_hard_link_data() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip("restoring owners (uid 12345) needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    plant_tree(&source);
    let tree = tree_of(&source);
    let original = find_listing(&source);
    // `hard1` is the second path of its inode: its data is stored under `a/hard2`, which the filter leaves out.
    for filter in ["a/b", "hard1", "/a/b/c/big.bin"] {
        let target = dir.path().join(format!("only-{}", filter.replace('/', "_")));
        assert_eq!(restore_only(&tree, filter.as_bytes(), &source, &target), Vec::<String>::new());
        let normalized = dr::files::normalize_filter(filter.as_bytes());
        let expected: Vec<&str> = original
            .lines()
            .filter(|line| path_selected(&normalized, line.split(' ').next().unwrap().as_bytes()))
            .collect();
        assert_eq!(find_listing(&target), expected.join("\n"), "{filter}");
        let wanted = Path::new(std::str::from_utf8(&normalized).unwrap());
        let restored = contents(&target);
        assert!(
            !restored.is_empty()
                && restored.iter().all(|(p, data)| p.starts_with(wanted) && *data == fs::read(source.join(p)).unwrap())
        );
    }
}

/// What [`restore_as_nobody`] restores: the entries, and each file's data.
fn nobody_tree() -> Vec<(TreeEntry, &'static [u8])> {
    let entry = |path: &str, kind: TreeKind, mode: u32, size: u64| TreeEntry {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        user: Some("root".into()),
        group: Some("root".into()),
        mtime: (1_700_000_000, 987_654_321),
        size,
        chunks: if size > 0 { vec![dr::chunks::ChunkId([7; 32])] } else { vec![] },
        xattrs: vec![],
        incomplete: None,
        object: None,
    };
    let mut file = entry("d/f", TreeKind::File, 0o440, 5);
    // Set before the read-only mode (a user may set user.* only on what it may write); trusted.* only root may.
    file.xattrs = vec![(b"trusted.k".to_vec(), b"t".to_vec()), (b"user.k".to_vec(), b"u".to_vec())];
    vec![
        (entry("", TreeKind::Dir, 0o755, 0), b""),
        (entry("d", TreeKind::Dir, 0o550, 0), b""),
        (file.clone(), b"hello"),
        (
            TreeEntry {
                path: b"d/g".to_vec(),
                kind: TreeKind::HardLink { link: b"d/f".to_vec() },
                size: 0,
                chunks: vec![],
                ..file
            },
            b"",
        ),
        (entry("d/l", TreeKind::Symlink { target: b"f".to_vec() }, 0o777, 0), b""),
    ]
}

/// Runs as `nobody` (started by the test below through setpriv, this test binary again): restores
/// [`nobody_tree`] into `$DR_TEST_NOBODY_DIR/target` and checks it. Without the variable it does nothing.
#[test]
fn restore_as_nobody() {
    let Some(dir) = std::env::var_os("DR_TEST_NOBODY_DIR") else { return };
    let target = Path::new(&dir).join("target");
    let mut extraction = TreeExtraction::prepare("uploads", &target, false).unwrap();
    for (entry, data) in nobody_tree() {
        if let Some(slot) = extraction.create(&entry).unwrap() {
            extraction.write_at(slot, 0, data).unwrap();
        }
    }
    let mut warnings = extraction.finish_metadata(nobody_tree().into_iter().map(|(e, _)| e)).unwrap();
    warnings.extend(extraction.commit(false).unwrap());
    assert_eq!(warnings.len(), 2, "one warning per kind of thing not restored: {warnings:?}");
    assert!(warnings[0].contains("owners were not restored"), "{warnings:?}");
    assert!(warnings[1].contains("trusted.*") && warnings[1].contains("trusted.k"), "{warnings:?}");
    let file = fs::metadata(target.join("d/f")).unwrap();
    assert_eq!((file.mode() & 0o7777, file.uid()), (0o440, nix::unistd::Uid::effective().as_raw()));
    assert_eq!((file.mtime(), file.mtime_nsec()), (1_700_000_000, 987_654_321));
    assert_eq!(fs::read(target.join("d/f")).unwrap(), b"hello");
    assert_eq!((fs::metadata(target.join("d/g")).unwrap().ino(), file.nlink()), (file.ino(), 2));
    if xattr::get(target.join("d/f"), "user.k").is_ok() {
        assert_eq!(xattr::get(target.join("d/f"), "user.k").unwrap().unwrap(), b"u");
    }
    let d = fs::metadata(target.join("d")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.mtime_nsec()), (0o550, 987_654_321), "directories last");
    let root = fs::metadata(&target).unwrap();
    assert_eq!((root.mode() & 0o7777, root.mtime_nsec()), (0o755, 987_654_321), "the root's metadata on the target");
    println!("RESTORED AS NOBODY");
}

#[test]
fn a_restore_by_a_user_keeps_what_it_may_and_warns_once_about_the_rest() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip("switching to the user nobody needs root");
        return;
    }
    let Some(setpriv) = common::require("setpriv") else { return };
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["files_metadata::restore_as_nobody", "--exact", "--nocapture", "--test-threads=1"])
        .env("DR_TEST_NOBODY_DIR", dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("RESTORED AS NOBODY"), "the helper ran:\n{stdout}\n{stderr}");
}
