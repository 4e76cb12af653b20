//! Where a chunked source's entries and file contents come from: a directory on this host, or a bucket.
//!
//! The backup (`backup.rs`) walks an [`Origin`]'s entries in walk order, asks the files cache about each file,
//! and hands the rest to chunker threads, which read them through [`Origin::read`]. Everything after that
//! (chunking, packing, the tree, the cache) is the same for both.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::chunks::ChunkerError;
use crate::error::Result;
use crate::files::{Change, Excludes, MetadataWalk, ObjectInfo, WalkItem};

/// One file's contents read through a consumer (the chunker).
pub(crate) enum Contents {
    /// Gone when the chunker came to it (deleted since the walk listed it).
    Vanished,
    Read {
        /// Bytes read, and the size the file had when opened.
        read: u64,
        size: u64,
        /// A local file that changed while it was read.
        change: Option<Change>,
        /// An object's metadata, from its GET.
        object: Option<ObjectInfo>,
        /// An object replaced between the listing and its GET: the newer version was read, whole. Its listing
        /// stamp is not this content's, so it is not cached.
        replaced: bool,
    },
}

/// Reads `reader` (of `size` bytes, as far as known) to its end, returning the bytes read. Called again from
/// the start when an origin retries a read that broke, so it must start over each time.
pub(crate) type Consume<'c> = dyn FnMut(&mut dyn Read, u64) -> std::result::Result<u64, ChunkerError> + 'c;

/// A source of entries and contents for a chunked backup.
pub(crate) trait Origin: Send + Sync {
    /// What the cache header and messages call the root: a directory's path, a bucket's URL.
    fn root(&self) -> String;

    /// The local directory, for symlinks (only a directory has them).
    fn directory(&self) -> Option<&Path> {
        None
    }

    /// Every entry, in walk order.
    fn entries(&self) -> Box<dyn Iterator<Item = Result<WalkItem>> + '_>;

    /// Chunker threads to run: reading a directory is CPU work, reading a bucket waits on the network.
    fn readers(&self) -> usize;

    /// Files handed to a chunker at once, when batching would serialize what should overlap (GETs); `None`:
    /// the backup's own batching.
    fn files_per_job(&self) -> Option<usize> {
        None
    }

    /// Reads the file at `path` (relative, as in the tree) through `consume`; `etag` is the listed version of
    /// an object.
    fn read(&self, path: &[u8], etag: Option<&str>, consume: &mut Consume<'_>) -> Result<Contents>;
}

/// A directory on this host, walked with [`MetadataWalk`].
pub(crate) struct DirectoryOrigin {
    pub name: String,
    pub root: PathBuf,
    pub excludes: Excludes,
}

impl Origin for DirectoryOrigin {
    fn root(&self) -> String {
        self.root.display().to_string()
    }

    fn directory(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn entries(&self) -> Box<dyn Iterator<Item = Result<WalkItem>> + '_> {
        Box::new(MetadataWalk::new(&self.name, &self.root, &self.excludes))
    }

    fn readers(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Reads the file as far as its size when opened, and says whether it changed meanwhile.
    fn read(&self, path: &[u8], _etag: Option<&str>, consume: &mut Consume<'_>) -> Result<Contents> {
        use std::os::unix::ffi::OsStrExt;
        let path = self.root.join(std::ffi::OsStr::from_bytes(path));
        let io_error = |e: io::Error| crate::files::backup_error(&self.name, format!("{}: {e}", path.display()), e);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::Vanished),
            Err(e) => return Err(io_error(e)),
        };
        let opened = file.metadata().map_err(io_error)?;
        let size = opened.len();
        let read = consume(&mut (&file).take(size), size).map_err(|e| match e {
            ChunkerError::Read(e) => io_error(e),
            ChunkerError::Consumer(e) => e,
        })?;
        let change = crate::files::change_during_read(&file, &opened, read).map_err(io_error)?;
        Ok(Contents::Read { read, size, change, object: None, replaced: false })
    }
}
