//! The drill's checks: each compares what came back with what the snapshot recorded at backup time, and
//! reports every difference it finds, not just the first.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::expect::Expectation;
use crate::chunks::{ChunkId, ChunkKeys, Chunker};
use crate::config::DrillCheck;
use crate::engine::SourceRestore;
use crate::files::{EntryKind, IncompleteFile, IndexEntry, TreeEntry, TreeKind, sha256_file};
use crate::pg::{describe, quote_ident};
use crate::repo::drill_record::{Check, CheckStatus};
use crate::repo::manifest::{FilesDetails, GlobalsDetails, Manifest, TableRows};

/// A files check lists at most this many problems (and says how many more): a wiped uploads directory would
/// otherwise put every one of its paths into the record.
const MAX_FILE_PROBLEMS: usize = 200;

fn check(name: impl Into<String>, problems: Vec<String>, pass_detail: String, fail_detail: String) -> Check {
    let failed = !problems.is_empty();
    Check {
        name: name.into(),
        status: if failed { CheckStatus::Fail } else { CheckStatus::Pass },
        detail: if failed { fail_detail } else { pass_detail },
        problems,
    }
}

/// Every object of the restored sources was read to its end with its size, SHA-256, decryption and
/// decompression checked (by the restore itself, or by the files check for an index).
pub fn objects(manifest: &Manifest, sources: &[String], verified: &BTreeSet<String>, errors: &[String]) -> Check {
    let expected: Vec<&str> = manifest
        .sources
        .iter()
        .filter(|s| sources.contains(&s.name))
        .flat_map(|s| s.objects.iter().map(|o| o.key.as_str()))
        .collect();
    let mut problems: Vec<String> =
        expected.iter().filter(|k| !verified.contains(**k)).map(|k| format!("{k}: not read to the end")).collect();
    problems.extend(errors.iter().cloned());
    check(
        "objects",
        problems,
        format!("{} objects read back: SHA-256, decryption and decompression checked to the end", expected.len()),
        format!(
            "{} of {} objects could not be read back whole",
            expected.len() - verified.len().min(expected.len()),
            expected.len()
        ),
    )
}

/// The restore of one database finished without errors; its warnings are listed.
pub fn pg_restore(report: &SourceRestore) -> Check {
    let name = format!("pg_restore {}", report.name);
    if let Some(error) = &report.error {
        return Check {
            name,
            status: CheckStatus::Fail,
            detail: error.lines().next().unwrap_or_default().to_string(),
            problems: error.lines().skip(1).map(str::to_string).collect(),
        };
    }
    let status = if report.warnings.is_empty() { CheckStatus::Pass } else { CheckStatus::Warn };
    let detail = match report.warnings.len() {
        0 => "finished without errors or warnings".to_string(),
        n => format!("finished without errors, {n} warning(s)"),
    };
    Check { name, status, detail, problems: report.warnings.clone() }
}

/// Each table holds exactly the rows counted in the dump's own snapshot at backup time.
pub async fn row_counts(source: &str, client: &Client, tables: &[TableRows]) -> Check {
    let mut problems = Vec::new();
    let mut rows = 0i64;
    for table in tables {
        let qualified = format!("{}.{}", quote_ident(&table.schema), quote_ident(&table.table));
        match client.query_one(&format!("SELECT count(*) FROM {qualified}"), &[]).await {
            Ok(row) => {
                let restored: i64 = row.get(0);
                rows += restored;
                if restored != table.rows {
                    problems.push(format!(
                        "{}.{}: {restored} rows restored, {} recorded at backup",
                        table.schema, table.table, table.rows
                    ));
                }
            }
            Err(e) => problems.push(format!("{}.{}: {}", table.schema, table.table, describe(&e))),
        }
    }
    check(
        format!("row counts {source}"),
        problems,
        format!("{} tables, {rows} rows: every count equals the backup's", tables.len()),
        "restored row counts differ from the counts recorded at backup".to_string(),
    )
}

/// The check for a database that could not be reached at all after its restore.
pub fn unreachable(name: String, message: String) -> Check {
    Check { name, status: CheckStatus::Fail, detail: message, problems: Vec::new() }
}

/// The roles the globals recorded exist on the scratch server, and the restored database has the recorded
/// owner (`owner`, when the snapshot recorded one). A different owner only warns: the restore could not change
/// it (a scratch server's user that may not), and the data is there all the same.
pub async fn roles(source: &str, client: &Client, globals: &GlobalsDetails, owner: Option<&str>) -> Check {
    let name = format!("roles {source}");
    let existing: BTreeSet<String> = match client.query("SELECT rolname::text FROM pg_roles", &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => return unreachable(name, describe(&e)),
    };
    let problems =
        globals.roles.iter().filter(|r| !existing.contains(*r)).map(|r| format!("role {r}: missing")).collect();
    let mut pass = format!("{} roles from the globals exist", globals.roles.len());
    if !globals.role_passwords {
        pass.push_str(" (backed up without password hashes: set passwords after a real restore)");
    }
    let mut result = check(name, problems, pass, "roles recorded at backup are missing".to_string());
    let Some(owner) = owner else { return result };
    let actual = client
        .query_one("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()", &[])
        .await
        .map(|row| row.get::<_, String>(0));
    let problem = match actual {
        Ok(actual) if actual == owner => {
            result.detail.push_str(&format!("; the database is owned by {owner}"));
            return result;
        }
        Ok(actual) => format!("the database is owned by {actual}, not by {owner} as at backup"),
        Err(e) => format!("the database's owner could not be read: {}", describe(&e)),
    };
    if result.status == CheckStatus::Pass {
        result.status = CheckStatus::Warn;
        result.detail = problem.clone();
    }
    result.problems.push(problem);
    result
}

/// How long a user check may run unless it says otherwise.
const USER_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// A user check from `[[drill.check]]`, in a read-only session (a check must not change what the next one
/// sees) under a statement timeout (a check must not hang the drill).
pub async fn user(client: &Client, user_check: &DrillCheck, expectation: &Expectation) -> Check {
    let timeout = user_check.timeout.unwrap_or(USER_CHECK_TIMEOUT);
    let session =
        format!("SET default_transaction_read_only = on; SET statement_timeout = {}", timeout.as_millis().max(1));
    if let Err(e) = client.batch_execute(&session).await {
        return unreachable(user_check.name.clone(), format!("could not prepare the session: {}", describe(&e)));
    }
    let answer = match first_value(client, &user_check.sql).await {
        Ok(answer) => answer,
        Err(message) => return unreachable(user_check.name.clone(), format!("query failed: {message}")),
    };
    let shown = answer.as_deref().map_or("NULL (or no row)".to_string(), |a| format!("{a:?}"));
    let ok = expectation.accepts(answer.as_deref());
    Check {
        name: user_check.name.clone(),
        status: if ok { CheckStatus::Pass } else { CheckStatus::Fail },
        detail: format!("got {shown}, expected {expectation}"),
        problems: Vec::new(),
    }
}

/// The first column of the first row, as PostgreSQL's text output.
async fn first_value(client: &Client, sql: &str) -> Result<Option<String>, String> {
    let messages = client.simple_query(sql).await.map_err(|e| describe(&e))?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })
        .flatten())
}

/// A restored directory tree equals the index written at backup: every entry present with its kind, every
/// regular file with its size and SHA-256, nothing extra; the totals equal the manifest's.
pub fn files(source: &str, root: &Path, index: &[IndexEntry], details: Option<&FilesDetails>) -> Check {
    let mut problems = Vec::new();
    let mut expected_paths = BTreeSet::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in index {
        let relative = entry_path(entry);
        expected_paths.insert(relative.clone());
        let path = root.join(&relative);
        let shown = relative.display();
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(_) => {
                problems.push(format!("{shown}: missing"));
                continue;
            }
        };
        match entry.kind {
            EntryKind::Dir if !metadata.is_dir() => problems.push(format!("{shown}: not a directory")),
            EntryKind::Symlink => match std::fs::read_link(&path) {
                Ok(target) if entry.target.as_deref().is_none_or(|t| Path::new(t) == target) => {}
                Ok(target) => problems.push(format!("{shown}: link to {}, not {:?}", target.display(), entry.target)),
                Err(_) => problems.push(format!("{shown}: not a symlink")),
            },
            EntryKind::File if !metadata.is_file() => problems.push(format!("{shown}: not a regular file")),
            EntryKind::File => {
                files += 1;
                bytes += metadata.len();
                if entry.size.is_some_and(|size| size != metadata.len()) {
                    problems.push(format!("{shown}: {} bytes, the index says {:?}", metadata.len(), entry.size));
                } else if let Some(expected) = &entry.sha256 {
                    match sha256_file(&path) {
                        Ok(actual) if &actual == expected => {}
                        Ok(_) => problems.push(format!("{shown}: content differs (SHA-256)")),
                        Err(e) => problems.push(format!("{shown}: unreadable: {e}")),
                    }
                }
            }
            EntryKind::Dir => {}
        }
    }
    for extra in walk(root).into_iter().filter(|p| !expected_paths.contains(p)) {
        problems.push(format!("{}: not in the backup's index", extra.display()));
    }
    // The manifest's bytes are the archive's, which include the zero padding of files that shrank while they
    // were read; a restore leaves that padding out.
    if let Some(details) = details
        && (details.files, details.restored_bytes()) != (files, bytes)
    {
        problems.push(format!(
            "{files} files / {bytes} bytes restored, the manifest says {} / {}",
            details.files,
            details.restored_bytes()
        ));
    }
    // Not a failure (the tree is what the backup could read), but never silent.
    let incomplete: Vec<String> =
        index.iter().filter_map(|e| e.incomplete.as_ref().map(|i| format!("{} {}", e.path, i.describe()))).collect();
    let passed = format!(
        "{files} files, {} and {} entries in all: every digest equals the index",
        crate::units::bytes(bytes),
        index.len()
    );
    files_verdict(source, problems, passed, "index", &incomplete)
}

/// A restored chunked tree equals the snapshot's tree: every entry present with its kind, permission bits and
/// modification time to the nanosecond (and, when the drill runs as root, its owner), every file with its size
/// and content: its chunks are cut again from the restored bytes and their ids recomputed with the repository's
/// key, so a file that differs by one byte fails. Nothing extra; the totals equal the manifest's.
pub fn tree(
    source: &str,
    root: &Path,
    entries: impl Iterator<Item = crate::Result<TreeEntry>>,
    keys: &ChunkKeys,
    details: Option<&FilesDetails>,
) -> Check {
    let mut problems = Vec::new();
    let mut expected_paths = BTreeSet::new();
    let (mut files, mut bytes, mut count) = (0u64, 0u64, 0usize);
    let as_root = nix::unistd::geteuid().is_root();
    let mut chunker = Chunker::new(keys.chunking.file_sizes(), keys.key.gear_seed());
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(format!("the snapshot's tree cannot be read: {e}"));
                break;
            }
        };
        count += 1;
        let relative = PathBuf::from(OsString::from_vec(entry.path.clone()));
        let path = root.join(&relative);
        let shown = if entry.path.is_empty() { "(the root)".to_string() } else { relative.display().to_string() };
        if !entry.path.is_empty() {
            expected_paths.insert(relative.clone());
        }
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(_) => {
                problems.push(format!("{shown}: missing"));
                continue;
            }
        };
        use std::os::unix::fs::MetadataExt;
        let kind_ok = match &entry.kind {
            TreeKind::Dir => metadata.is_dir(),
            TreeKind::File | TreeKind::HardLink { .. } => metadata.is_file(),
            TreeKind::Symlink { .. } => metadata.file_type().is_symlink(),
        };
        if !kind_ok {
            let kind = match entry.kind {
                TreeKind::Dir => "directory",
                TreeKind::File | TreeKind::HardLink { .. } => "regular file",
                TreeKind::Symlink { .. } => "symlink",
            };
            problems.push(format!("{shown}: not a {kind}"));
            continue;
        }
        if let TreeKind::Symlink { target } = &entry.kind {
            match std::fs::read_link(&path) {
                Ok(found) if found.as_os_str().as_encoded_bytes() == target.as_slice() => {}
                Ok(found) => problems.push(format!("{shown}: link to {}", found.display())),
                Err(e) => problems.push(format!("{shown}: unreadable link: {e}")),
            }
        } else if metadata.mode() & 0o7777 != entry.mode {
            problems.push(format!("{shown}: mode {:o}, the tree says {:o}", metadata.mode() & 0o7777, entry.mode));
        }
        if (metadata.mtime(), metadata.mtime_nsec() as u32) != entry.mtime {
            problems.push(format!(
                "{shown}: modified {}.{:09}, the tree says {}.{:09}",
                metadata.mtime(),
                metadata.mtime_nsec(),
                entry.mtime.0,
                entry.mtime.1
            ));
        }
        // Owners by name are mapped to this host's ids on restore; only numeric ones must come back as they were.
        if as_root
            && entry.user.is_none()
            && entry.group.is_none()
            && (metadata.uid(), metadata.gid()) != (entry.uid, entry.gid)
        {
            problems.push(format!(
                "{shown}: owner {}:{}, the tree says {}:{}",
                metadata.uid(),
                metadata.gid(),
                entry.uid,
                entry.gid
            ));
        }
        if matches!(entry.kind, TreeKind::HardLink { .. }) {
            files += 1;
        }
        if !matches!(entry.kind, TreeKind::File) {
            continue;
        }
        files += 1;
        bytes += metadata.len();
        if metadata.len() != entry.size {
            problems.push(format!("{shown}: {} bytes, the tree says {}", metadata.len(), entry.size));
            continue;
        }
        match chunk_ids_of(&path, entry.size, &mut chunker, keys) {
            Ok(ids) if ids == entry.chunks => {}
            Ok(_) => problems.push(format!("{shown}: content differs (chunk ids)")),
            Err(e) => problems.push(format!("{shown}: unreadable: {e}")),
        }
    }
    for extra in walk(root).into_iter().filter(|p| !expected_paths.contains(p)) {
        problems.push(format!("{}: not in the backup's tree", extra.display()));
    }
    if let Some(details) = details
        && (details.files, details.bytes) != (files, bytes)
    {
        problems.push(format!(
            "{files} files / {bytes} bytes restored, the manifest says {} / {}",
            details.files, details.bytes
        ));
    }
    // Not a failure (the tree is what the backup could read), but never silent.
    let incomplete: Vec<String> =
        details.map(|d| d.incomplete.iter().map(IncompleteFile::describe).collect()).unwrap_or_default();
    let passed = format!(
        "{files} files, {} and {count} entries in all: every file's chunks, mode and time equal the tree",
        crate::units::bytes(bytes)
    );
    files_verdict(source, problems, passed, "tree", &incomplete)
}

/// The verdict of a files check: its problems (the first [`MAX_FILE_PROBLEMS`] named), and the files stored
/// incomplete in either detail; a tree that is otherwise whole but holds such files is a warning, never silent.
/// `against` names what the restored tree was compared with (the backup's `index` or `tree`).
fn files_verdict(
    source: &str,
    mut problems: Vec<String>,
    passed: String,
    against: &str,
    incomplete: &[String],
) -> Check {
    let incomplete_note = incomplete_note(incomplete);
    let total = problems.len();
    if total > MAX_FILE_PROBLEMS {
        problems.truncate(MAX_FILE_PROBLEMS);
        problems.push(format!("... and {} more", total - MAX_FILE_PROBLEMS));
    }
    let mut check = check(
        format!("files {source}"),
        problems,
        format!("{passed}{incomplete_note}"),
        format!("{total} differences from the backup's {against}{incomplete_note}"),
    );
    if check.status == CheckStatus::Pass && !incomplete.is_empty() {
        check.status = CheckStatus::Warn;
    }
    check
}

/// The chunk ids of a file as a backup would cut them.
fn chunk_ids_of(path: &Path, size: u64, chunker: &mut Chunker, keys: &ChunkKeys) -> crate::Result<Vec<ChunkId>> {
    let file = std::fs::File::open(path).map_err(|e| crate::Error::io(format!("reading {}", path.display()), e))?;
    let mut ids = Vec::new();
    chunker
        .for_each_chunk(file, size, |data| {
            ids.push(keys.key.chunk_id(data));
            Ok(())
        })
        .map_err(|e| e.into_error(path))?;
    Ok(ids)
}

/// What a files check adds about files stored incomplete (`path what happened` each): nothing when there are
/// none, else their count and the first of them.
fn incomplete_note(incomplete: &[String]) -> String {
    match incomplete.len() {
        0 => String::new(),
        n => format!(
            "; {} stored incomplete (changed while backed up): {}",
            crate::units::plural(n, "file"),
            incomplete.iter().take(MAX_FILE_PROBLEMS).cloned().collect::<Vec<_>>().join("; ")
        ),
    }
}

fn entry_path(entry: &IndexEntry) -> PathBuf {
    match entry.path_hex.as_deref().and_then(|h| hex::decode(h).ok()) {
        Some(raw) => PathBuf::from(OsString::from_vec(raw)),
        None => PathBuf::from(&entry.path),
    }
}

/// Every path under `root`, relative to it.
fn walk(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().strip_prefix(root).ok().map(Path::to_path_buf))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn file(path: &str, content: &[u8]) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            path_hex: None,
            kind: EntryKind::File,
            mode: 0o644,
            mtime: 0,
            size: Some(content.len() as u64),
            sha256: Some(hex::encode(Sha256::digest(content))),
            target: None,
            incomplete: None,
        }
    }

    fn dir(path: &str) -> IndexEntry {
        IndexEntry { kind: EntryKind::Dir, size: None, sha256: None, ..file(path, b"") }
    }

    fn details(files: u64, bytes: u64) -> FilesDetails {
        FilesDetails {
            name: "uploads".into(),
            root: "/srv/uploads".into(),
            files,
            directories: 1,
            symlinks: 0,
            bytes,
            skipped: Vec::new(),
            incomplete: Vec::new(),
            replaced: Vec::new(),
        }
    }

    #[test]
    fn a_tree_equal_to_its_index_passes_and_every_difference_is_named() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("a")).unwrap();
        std::fs::write(root.path().join("a/one.jpg"), b"one").unwrap();
        std::fs::write(root.path().join("two.jpg"), b"two!").unwrap();
        let index = vec![dir("a"), file("a/one.jpg", b"one"), file("two.jpg", b"two!")];
        let good = files("uploads", root.path(), &index, Some(&details(2, 7)));
        assert_eq!(good.status, CheckStatus::Pass, "{good:?}");

        // Same size, other bytes; a file gone; a file nobody backed up.
        std::fs::write(root.path().join("two.jpg"), b"TWO!").unwrap();
        std::fs::remove_file(root.path().join("a/one.jpg")).unwrap();
        std::fs::write(root.path().join("stray.txt"), b"?").unwrap();
        let bad = files("uploads", root.path(), &index, Some(&details(2, 7)));
        assert_eq!(bad.status, CheckStatus::Fail);
        assert_eq!(
            bad.problems,
            [
                "a/one.jpg: missing",
                "two.jpg: content differs (SHA-256)",
                "stray.txt: not in the backup's index",
                "1 files / 4 bytes restored, the manifest says 2 / 7",
            ]
        );
    }

    #[test]
    fn a_file_stored_incomplete_is_checked_as_restored_and_named_in_a_warning() {
        use crate::files::{Change, Incomplete, IncompleteFile};
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("app.log"), b"1000 bytes").unwrap();
        // It had 4096 bytes when opened and shrank to 10: the archive holds 4096 (padded), the restore 10.
        let incomplete = Incomplete { change: Change::Shrank, read: 10, archived: 4096 };
        let index = vec![IndexEntry { incomplete: Some(incomplete), ..file("app.log", b"1000 bytes") }];
        let mut details = details(1, 4096);
        details.incomplete.push(IncompleteFile { path: "app.log".into(), path_hex: None, incomplete });
        let check = files("uploads", root.path(), &index, Some(&details));
        assert_eq!(check.status, CheckStatus::Warn, "{check:?}");
        assert!(check.problems.is_empty(), "{check:?}");
        assert!(
            check.detail.contains("1 file stored incomplete") && check.detail.contains("app.log shrank"),
            "{check:?}"
        );
    }
}
