//! A repository in a local directory (or a mounted network filesystem).
//!
//! Visibility comes from `rename`: every object is written to a hidden sibling (`.NAME.partial-RANDOM`),
//! synced, and renamed into place, then the directory is synced. A crash leaves at most a hidden partial file,
//! which `list` never shows; `stale_uploads` finds it for `dr prune`, which deletes it once older than the
//! grace, together with the directories a failed or killed backup left empty.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use super::{
    Leftovers, ObjectMeta, ObjectReader, ObjectWriter, PendingUpload, Store, UploadKind, check_key, store_error,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    location: String,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        let root = root.into();
        let location = root.display().to_string();
        LocalStore { root, location }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn error(&self, operation: &'static str, key: &str, e: io::Error) -> Error {
        store_error(&self.location, operation, key, e)
    }

    /// Opening an object to read it: here, and only here, a missing file is a missing object.
    fn open_error(&self, key: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            return Error::ObjectMissing { key: key.to_string() };
        }
        self.error("read", key, e)
    }

    /// Creates a hidden temporary file beside `path`.
    async fn create_partial(&self, key: &str, path: &Path) -> Result<(tokio::fs::File, PathBuf)> {
        let parent = path.parent().unwrap_or(&self.root);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let partial = parent.join(format!(".{name}.partial-{:016x}", rand::random::<u64>()));
        // A delete of the directory's last object removes the directory (`remove_empty_parents`), and may do so
        // between making it and creating the file in it (two lockers racing, one releasing): make it again.
        let mut attempts = 0;
        loop {
            tokio::fs::create_dir_all(parent).await.map_err(|e| self.error("write", key, e))?;
            match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&partial).await {
                Ok(file) => return Ok((file, partial)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 16 => attempts += 1,
                Err(e) => return Err(self.error("write", key, e)),
            }
        }
    }
}

/// The key a hidden partial file (`.NAME.partial-XXXXXXXXXXXXXXXX`) was written for: `NAME`, or `None` for
/// any other file.
fn partial_of(file_name: &str) -> Option<&str> {
    let (name, random) = file_name.strip_prefix('.')?.rsplit_once(".partial-")?;
    let random_ok = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
    (random_ok && !name.is_empty()).then_some(name)
}

/// Removes the directories above `path` that are left empty, up to (not including) `root`.
async fn remove_empty_parents(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || tokio::fs::remove_dir(d).await.is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Collects, deepest first, the directories below `dir` that hold no file and were last changed before
/// `before`; returns whether `dir` itself is such a directory.
fn collect_empty(dir: &Path, before: std::time::SystemTime, found: &mut Vec<PathBuf>) -> io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let path = entry.path();
            if collect_empty(&path, before, found)? {
                found.push(path);
            } else {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    let old = std::fs::symlink_metadata(dir)?.modified().is_ok_and(|m| m < before);
    Ok(empty && old)
}

/// Renames a synced partial file into place and syncs the directory, so the rename survives a crash.
async fn commit(partial: &Path, path: &Path) -> io::Result<()> {
    tokio::fs::rename(partial, path).await?;
    if let Some(parent) = path.parent() {
        let parent = parent.to_path_buf();
        tokio::task::spawn_blocking(move || crate::files::sync_directory(&parent))
            .await
            .map_err(io::Error::other)??;
    }
    Ok(())
}

#[async_trait]
impl Store for LocalStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let (mut file, partial) = self.create_partial(key, &path).await?;
        let result = async {
            file.write_all(&data).await?;
            file.sync_all().await?;
            drop(file);
            commit(&partial, &path).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(self.error("write", key, e));
        }
        Ok(())
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path_of(key)?;
        let (file, partial) = self.create_partial(key, &path).await?;
        Ok(Box::new(LocalWriter { store: self.clone(), key: key.to_string(), file, partial: Some(partial), path }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| self.open_error(key, e))?;
        // Reads of 1 MiB keep the number of blocking-pool round trips low on large objects.
        Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, file)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(object_meta(key.to_string(), &meta))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the deepest directory the prefix names, not the whole repository.
        let dir_part = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let start = if dir_part.is_empty() { self.root.clone() } else { self.path_of(dir_part)? };
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            if !start.exists() {
                return Ok(found);
            }
            let walker = walkdir::WalkDir::new(&start)
                .sort_by_file_name()
                .into_iter()
                // Hidden entries are partial uploads (or not ours); they are never objects.
                .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
            // An entry deleted while the walk runs (a lock released, a prune at work) is simply not listed: a
            // listing is a snapshot of a moment, as on S3.
            let vanished = |e: &walkdir::Error| e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound);
            for entry in walker {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if vanished(&e) => continue,
                    Err(e) => return Err(store_error(&location, "list", &prefix_owned, e)),
                };
                if !entry.file_type().is_file() {
                    continue;
                }
                let Ok(relative) = entry.path().strip_prefix(&root) else {
                    continue;
                };
                let Some(key) = relative.to_str().map(str::to_string) else {
                    continue;
                };
                if !key.starts_with(&prefix_owned) {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if vanished(&e) => continue,
                    Err(e) => return Err(store_error(&location, "list", &key, e)),
                };
                found.push(object_meta(key, &meta));
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
        .map_err(|e| store_error(&self.location, "list", prefix, e))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.error("delete", key, e)),
        }
        // Tidy up directories the delete emptied; a non-empty directory simply stays.
        remove_empty_parents(&self.root, &path).await;
        Ok(())
    }

    fn leftovers(&self) -> Option<&dyn Leftovers> {
        Some(self)
    }
}

#[async_trait]
impl Leftovers for LocalStore {
    async fn stale_uploads(&self, before: DateTime<Utc>) -> Result<Vec<PendingUpload>> {
        let root = self.root.clone();
        let location = self.location.clone();
        let before = std::time::SystemTime::from(before);
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
                // Entries that vanish or cannot be read while the walk runs are not partial files of ours.
                let Ok(entry) = entry else { continue };
                let file_name = entry.file_name().to_string_lossy();
                let Some(name) = partial_of(&file_name).filter(|_| entry.file_type().is_file()) else { continue };
                let Some(modified) = entry.metadata().ok().and_then(|m| m.modified().ok()) else { continue };
                if modified >= before {
                    continue; // perhaps a writer at work
                }
                let Some(parent) = entry.path().parent().and_then(|p| p.strip_prefix(&root).ok()) else { continue };
                let Some(key) = parent.join(name).to_str().map(str::to_string) else { continue };
                found.push(PendingUpload {
                    key,
                    upload_id: file_name.into_owned(),
                    initiated: Some(DateTime::<Utc>::from(modified)),
                    kind: UploadKind::PartialFile,
                });
            }
            found
        })
        .await
        .map_err(|e| store_error(&location, "list", "", e))
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let path = self.path_of(&upload.key)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // Only ever a partial file beside the key, never anything the id might otherwise name.
        if upload.kind != UploadKind::PartialFile
            || upload.upload_id.contains('/')
            || partial_of(&upload.upload_id) != Some(name)
        {
            return Err(Error::Usage(format!("{:?} is not a partial file of {}", upload.upload_id, upload.key)));
        }
        let partial = path.with_file_name(&upload.upload_id);
        match tokio::fs::remove_file(&partial).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.error("delete", &upload.key, e)),
        }
        remove_empty_parents(&self.root, &partial).await;
        Ok(())
    }

    async fn empty_directories(&self, prefix: &str, before: DateTime<Utc>) -> Result<Vec<String>> {
        let start = self.path_of(prefix.trim_end_matches('/'))?;
        let root = self.root.clone();
        let location = self.location.clone();
        let prefix_owned = prefix.to_string();
        let before = std::time::SystemTime::from(before);
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            match collect_empty(&start, before, &mut found) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(store_error(&location, "list", &prefix_owned, e)),
            }
            Ok(found
                .iter()
                .filter_map(|dir| dir.strip_prefix(&root).ok().and_then(Path::to_str).map(str::to_string))
                .collect())
        })
        .await
        .map_err(|e| store_error(&self.location, "list", prefix, e))?
    }

    async fn remove_empty_directory(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_dir(&path).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }
}

fn object_meta(key: String, meta: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta { key, size: meta.len(), modified: meta.modified().ok().map(DateTime::<Utc>::from) }
}

struct LocalWriter {
    store: LocalStore,
    key: String,
    file: tokio::fs::File,
    /// The hidden file being written; taken by `finish` or `abort`, removed on drop otherwise.
    partial: Option<PathBuf>,
    path: PathBuf,
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.file.write_all(&chunk).await.map_err(|e| self.store.error("write", &self.key, e))
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        let Some(partial) = self.partial.take() else { return Ok(()) };
        let result = async {
            self.file.flush().await?;
            self.file.sync_all().await?;
            commit(&partial, &self.path).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(self.store.error("write", &self.key, e));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let Some(partial) = self.partial.take() else { return Ok(()) };
        match tokio::fs::remove_file(&partial).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.store.error("delete", &self.key, e)),
        }
    }
}

impl Drop for LocalWriter {
    /// A writer dropped unfinished (its task was aborted) removes its partial file; only a crash leaves one.
    fn drop(&mut self) {
        if let Some(partial) = self.partial.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Puts and deletes racing in one directory (lock objects do): a delete that empties the directory removes
    /// it, and a put must still land even when that happens between making the directory and writing in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn puts_racing_deletes_that_empty_their_directory_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()));
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..400 {
                        let key = format!("locks/{t}-{i}.json");
                        store.put(&key, Bytes::from_static(b"{}")).await.unwrap();
                        store.delete(&key).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(!dir.path().join("locks").exists(), "the last delete removed the emptied directory");
    }

    #[tokio::test]
    async fn stale_partial_files_and_empty_directories_are_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let killed = dir.path().join("objects/a/app");
        std::fs::create_dir_all(&killed).unwrap();
        std::fs::write(killed.join(".pg_dump.zst.age.partial-0123456789abcdef"), b"half").unwrap();
        std::fs::write(killed.join(".not-ours"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("objects/b/config")).unwrap();
        store.put("objects/c/files", Bytes::from_static(b"whole")).await.unwrap();
        let later = Utc::now() + chrono::Duration::seconds(5);

        assert!(store.stale_uploads(Utc::now() - chrono::Duration::seconds(60)).await.unwrap().is_empty());
        let stale = store.stale_uploads(later).await.unwrap();
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].key, "objects/a/app/pg_dump.zst.age");
        assert_eq!(store.empty_directories("objects/", later).await.unwrap(), ["objects/b/config", "objects/b"]);

        store.abort_upload(&stale[0]).await.unwrap();
        assert!(!killed.join(".pg_dump.zst.age.partial-0123456789abcdef").exists());
        assert!(killed.join(".not-ours").exists(), "only partial files are stale uploads");
        for empty in store.empty_directories("objects/", later).await.unwrap() {
            store.remove_empty_directory(&empty).await.unwrap();
        }
        assert!(!dir.path().join("objects/b").exists());
        assert_eq!(store.list("").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut writer = store.put_stream("objects/a/b").await.unwrap();
        writer.write(Bytes::from_static(b"half")).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("objects/a")).unwrap().count(), 1, "the hidden partial file");
        drop(writer);
        assert!(store.list("").await.unwrap().is_empty());
        assert!(store.head("objects/a/b").await.unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("objects/a")).unwrap().count(), 0, "the partial file is gone");
    }
}
