//! A chunked files source put back into a bucket (a bucket source's own, or `--into NAME=s3://bucket/prefix`).
//!
//! The tree is first restored whole into the restore's private run directory, exactly as into a directory:
//! every chunk is read and checked there, so a damaged snapshot stops the restore before the bucket is
//! touched. Then each object is uploaded from the staged copy with the headers and user metadata the snapshot
//! kept, `concurrency` at once (a large one as a multipart upload of equal parts). With `--force` into a
//! bucket that held objects, the objects under the prefix that the snapshot does not hold are deleted at the
//! end, so that the prefix is the snapshot's, as a directory target is replaced whole.
//!
//! The staged copy needs free space for the source's size; it is removed with the run directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::task::JoinSet;

use crate::engine::chunked::TreeObject;
use crate::engine::chunked::bucket::bucket_error;
use crate::engine::chunked::restore::ChunkedReader;
use crate::error::{Error, Result};
use crate::files::{ObjectInfo, TreeEntry, TreeKind, normalize_filter, path_selected};
use crate::progress::ProgressTask;
use crate::store::s3::S3Store;

/// Bytes read from a staged file per write into its upload.
const PIECE: usize = 1 << 20;

/// What went into the bucket.
#[derive(Debug, Default)]
pub(super) struct Uploaded {
    pub objects: u64,
    pub bytes: u64,
    /// Objects under the prefix that the snapshot does not hold, deleted (`--force` into a bucket with objects).
    pub deleted: u64,
    /// Entries a bucket cannot hold (symlinks, hard links of a directory source), left out.
    pub left_out: Vec<String>,
}

/// How one restore into a bucket goes.
pub(super) struct BucketUpload<'a> {
    pub source_name: &'a str,
    pub store: &'a S3Store,
    /// Where the tree was restored, whole and checked.
    pub staged: &'a Path,
    pub concurrency: usize,
    /// Delete what the snapshot does not hold (with `--force`, into a bucket that held objects, whole).
    pub replace: bool,
    pub path: Option<&'a str>,
}

impl BucketUpload<'_> {
    /// Uploads every object of the tree from the staged copy.
    pub async fn run(
        &self,
        reader: &ChunkedReader,
        tree: &TreeObject,
        tree_key: &str,
        task: Arc<dyn ProgressTask>,
    ) -> Result<Uploaded> {
        let (sender, mut entries) = tokio::sync::mpsc::channel::<TreeEntry>(256);
        let filter = normalize_filter(self.path.unwrap_or_default().as_bytes());
        let tree_entries = reader.tree_entries(tree, tree_key);
        // The tree streams out of its packs on a blocking thread, as for a directory restore.
        let lister = tokio::task::spawn_blocking(move || -> Result<()> {
            for entry in tree_entries {
                let entry = entry?;
                if path_selected(&filter, &entry.path) && sender.blocking_send(entry).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut uploaded = Uploaded::default();
        let mut keys = HashSet::new();
        let mut uploads: JoinSet<Result<u64>> = JoinSet::new();
        while let Some(entry) = entries.recv().await {
            let Some((key, headers)) = object_of(&entry, &mut uploaded.left_out) else { continue };
            while uploads.len() >= self.concurrency.max(1) {
                uploaded.bytes += joined(uploads.join_next().await)?;
                uploaded.objects += 1;
            }
            keys.insert(key.clone());
            let file = (entry.kind == TreeKind::File).then(|| self.staged.join(entry.relative_path()));
            let (store, task, name) = (self.store.clone(), task.clone(), self.source_name.to_string());
            uploads.spawn(async move {
                // The target bucket's refusals in its own words (the repository's errors pass as they are).
                upload(&store, &key, headers, file, task.as_ref()).await.map_err(|e| bucket_error(&name, e, true))
            });
        }
        while let Some(done) = uploads.join_next().await {
            uploaded.bytes += joined(Some(done))?;
            uploaded.objects += 1;
        }
        lister.await.map_err(|e| Error::io("reading the tree", std::io::Error::other(e)))??;
        if self.replace && self.path.is_none() {
            let target_error = |e| bucket_error(self.source_name, e, true);
            for object in self.store.list_objects().await.map_err(target_error)? {
                if !keys.contains(&object.key) {
                    self.store.delete_object(&object.key).await.map_err(target_error)?;
                    uploaded.deleted += 1;
                }
            }
        }
        tracing::info!(
            source = self.source_name,
            objects = uploaded.objects,
            deleted = uploaded.deleted,
            "uploaded into {}",
            crate::store::Store::location(self.store)
        );
        Ok(uploaded)
    }
}

/// The key and headers of an entry that becomes an object: a file, or a folder object a bucket source had.
fn object_of(entry: &TreeEntry, left_out: &mut Vec<String>) -> Option<(String, ObjectInfo)> {
    let key = String::from_utf8_lossy(&entry.path).into_owned();
    match &entry.kind {
        TreeKind::File => Some((key, entry.object.clone().unwrap_or_default())),
        // A folder object (`photos/`) has its ETag; a directory implied by keys has none, and needs no object.
        TreeKind::Dir => entry.object.as_ref().filter(|o| !o.etag.is_empty()).map(|o| (format!("{key}/"), o.clone())),
        TreeKind::Symlink { .. } | TreeKind::HardLink { .. } => {
            left_out.push(format!("{key}: a bucket holds no links"));
            None
        }
    }
}

/// One object: its staged file's bytes (none for a folder object), with its headers.
async fn upload(
    store: &S3Store,
    key: &str,
    headers: ObjectInfo,
    file: Option<PathBuf>,
    task: &dyn ProgressTask,
) -> Result<u64> {
    let mut writer = store.put_stream_with(key, headers).await?;
    let mut sent = 0u64;
    if let Some(path) = file {
        let read_error = |e: std::io::Error| Error::io(format!("reading the staged {}", path.display()), e);
        let file = tokio::fs::File::open(&path).await.map_err(read_error)?;
        let mut pieces = tokio_util::io::ReaderStream::with_capacity(file, PIECE);
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(read_error)?;
            sent += piece.len() as u64;
            task.advance(piece.len() as u64);
            writer.write(piece).await?;
        }
    }
    writer.finish().await?;
    Ok(sent)
}

fn joined(done: Option<std::result::Result<Result<u64>, tokio::task::JoinError>>) -> Result<u64> {
    match done {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(Error::io("uploading an object", std::io::Error::other(e))),
        None => Ok(0),
    }
}
