//! A parallel database restore (`--jobs N`, N > 1): the archive is staged in an unlinked temporary file, since
//! `pg_restore --jobs` reads its input out of order, and pg_restore runs on that file.
//!
//! Staging is more than a copy:
//! - **Data offsets.** The archive was written to a pipe, so its table of contents does not say where each
//!   table's data starts, and each pg_restore worker would find its table by walking every chunk header in
//!   front of it (one per row). Every byte passes through here anyway: [`BlockWalker`] notes where each
//!   block starts, and the offsets are written into the staged TOC once the archive is whole, which makes the
//!   staged file what pg_dump writes when given a file name.
//! - **The schema while the data arrives.** Into a database this restore created, the pre-data section
//!   (tables, types, functions) is restored by a first pg_restore as soon as the TOC is read, from the TOC
//!   alone, while the rest is still downloaded; the second, parallel pg_restore then does the data, the
//!   indexes and constraints, and the privileges last, as one pg_restore would. Should the object turn out
//!   damaged, the database is dropped again, as a streamed restore's is. Into an existing database nothing is
//!   touched before the whole archive is staged and checked.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use super::{Restorer, SourcePlan, check_free_space};
use crate::engine::PG_TOOL_FAILED_HINT;
use crate::error::{Error, Result};
use crate::pg::archive::{ArchiveError, BlockWalker, Toc, use_list};
use crate::pg::{self, DatabaseTarget, RestoreInput, tools};
use crate::pipeline;
use crate::repo::manifest::ObjectEntry;

/// Bytes moved from the decoder to the staged file at a time, and how many such buffers may wait for the writer.
const COPY_BUFFER: usize = 1 << 20;
const WRITES_QUEUED: usize = 2;

/// An archive staged whole, and the pg_restore that started on it while it was staged, if one did.
pub(super) struct Staged {
    file: File,
    early: Option<EarlyRun>,
}

/// A running [`EarlyRestore`], and the entries it leaves to the parallel pg_restore.
struct EarlyRun {
    handle: JoinHandle<io::Result<Output>>,
    rest: Vec<i32>,
}

/// A pg_restore of the entries that need no data, started as soon as the TOC has arrived.
pub(super) struct EarlyRestore {
    command: Command,
    list: PathBuf,
}

impl EarlyRestore {
    /// Writes the list of entries to restore before any data, and starts pg_restore on the TOC alone.
    fn start(mut self, toc: &Toc, prefix: Vec<u8>) -> io::Result<EarlyRun> {
        let (before, rest) = toc.split_before_data();
        std::fs::write(&self.list, use_list(&before))?;
        let starting = |e: io::Error| io::Error::new(e.kind(), format!("starting pg_restore: {e}"));
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(starting)?;
        let mut stdin = child.stdin.take().ok_or_else(|| starting(io::Error::other("its stdin is not a pipe")))?;
        let list = self.list;
        let handle = std::thread::spawn(move || {
            // pg_restore reads the whole TOC before it says anything, so its stderr cannot fill up meanwhile;
            // a pg_restore that stops reading early says why on stderr.
            let written = stdin.write_all(&prefix);
            drop(stdin);
            let output = child.wait_with_output();
            let _ = std::fs::remove_file(&list);
            let output = output?;
            match written {
                Err(e) if output.status.success() => Err(e),
                _ => Ok(output),
            }
        });
        Ok(EarlyRun { handle, rest })
    }
}

impl Restorer<'_> {
    /// Where a parallel restore stages: its private run directory (the system temp directory without one).
    fn staging_dir(&self) -> PathBuf {
        self.run.map_or_else(std::env::temp_dir, |run| run.path().to_path_buf())
    }

    /// The list file for one pg_restore of this restore, in its private run directory.
    fn list_path(&self, plan: &SourcePlan<'_>, what: &str) -> PathBuf {
        self.staging_dir().join(format!("{}.{what}.list", plan.name.replace(['/', '\\'], "_")))
    }

    /// The first pg_restore of a restore into a database it created: see the module's documentation.
    pub(super) fn early_restore(
        &self,
        plan: &SourcePlan<'_>,
        db: &DatabaseTarget,
        pg_restore: &tools::Tool,
    ) -> EarlyRestore {
        let list = self.list_path(plan, "pre-data");
        let mut command = pg::pg_restore_command(pg_restore, db, RestoreInput::Listed { list: &list }, false);
        command.stdout(Stdio::null());
        EarlyRestore { command, list }
    }

    /// Stages the archive in a temporary file, checked in full on the way, with its data offsets written in.
    /// The file is unlinked from the start (`O_TMPFILE` on Linux): the kernel frees it when the last process
    /// holding it ends, so even a SIGKILL leaves no decrypted archive on disk.
    pub(super) async fn stage(
        &self,
        plan: &SourcePlan<'_>,
        dump: &ObjectEntry,
        early: Option<EarlyRestore>,
    ) -> Result<Staged> {
        let dir = self.staging_dir();
        let dir = dir.as_path();
        check_free_space(dir, dump.plain_size)?;
        let mut staged = tempfile::tempfile_in(dir)
            .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
        let file = staged.try_clone().map_err(|e| Error::io("duplicating the staged archive's handle", e))?;
        let staged_path = format!("the staged archive in {}", dir.display());
        let source = plan.name.clone();
        let early = pipeline::download(
            self.repo.store(),
            &dump.key,
            self.identities.clone(),
            dump.expected(),
            self.progress.task(&format!("{} (download)", plan.name), Some(dump.plain_size)),
            move |decoder| {
                copy_with_offsets(decoder, &file, early, &source)
                    .map_err(|e| Error::io(format!("writing {staged_path}"), e))
            },
        )
        .await?;
        staged.rewind().map_err(|e| Error::io("rewinding the staged archive", e))?;
        Ok(Staged { file: staged, early })
    }

    /// A parallel pg_restore from the staged file, after the early one if there was one. pg_restore refuses a
    /// parallel restore from stdin when given no file name, but given `/dev/stdin` each worker opens that name
    /// afresh: `/proc/self/fd/0`, a new, seekable handle on the unlinked file.
    pub(super) async fn pg_restore_staged(
        &self,
        plan: &SourcePlan<'_>,
        db: &DatabaseTarget,
        staged: Staged,
        pg_restore: &tools::Tool,
        clean: bool,
    ) -> Result<String> {
        let mut stderr = String::new();
        let mut failures = Vec::new();
        // After an early pg_restore, this one restores what it left: the list of those entries.
        let mut list = None;
        if let Some(EarlyRun { handle, rest }) = staged.early {
            let output = tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| Error::io("waiting for pg_restore", io::Error::other(e)))?
                .map_err(|_| Error::io("waiting for pg_restore", io::Error::other("its thread panicked")))?
                .map_err(|e| Error::io(format!("running {}", pg_restore.path.display()), e))?;
            stderr.push_str(&String::from_utf8_lossy(&output.stderr));
            if !output.status.success() {
                failures.push(output.status.to_string());
            }
            let path = self.list_path(plan, "rest");
            std::fs::write(&path, use_list(&rest)).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            list = Some(path);
        }
        tracing::info!(source = %plan.name, jobs = self.options.jobs, "running pg_restore");
        // pg_restore reads the staged file itself: there are no bytes to count, only a phase to name.
        let task = self.progress.phase(&format!("{} (pg_restore)", plan.name));
        let input =
            RestoreInput::File { path: Path::new("/dev/stdin"), jobs: self.options.jobs, list: list.as_deref() };
        let command = pg::pg_restore_command(pg_restore, db, input, clean);
        let output = tokio::process::Command::from(command)
            .stdin(Stdio::from(staged.file))
            .output()
            .await
            .map_err(|e| Error::io(format!("running {}", pg_restore.path.display()), e))?;
        if let Some(list) = &list {
            let _ = std::fs::remove_file(list);
        }
        stderr.push_str(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            failures.push(output.status.to_string());
        }
        let outcome = if failures.is_empty() { "restored" } else { "failed" };
        task.finish(&format!("{outcome} by pg_restore --jobs {}", self.options.jobs));
        if !failures.is_empty() {
            let hint = Some(PG_TOOL_FAILED_HINT.to_string());
            return Err(Error::child_failed("pg_restore", failures.join(", "), stderr, hint));
        }
        Ok(stderr)
    }
}

/// Copies the decoded archive into `file`, following its blocks, then writes their offsets into its TOC.
/// Starts `early` once the TOC has arrived. An archive dr cannot follow is copied as it is.
fn copy_with_offsets(
    decoder: &mut impl Read,
    file: &File,
    early: Option<EarlyRestore>,
    source: &str,
) -> io::Result<Option<EarlyRun>> {
    let (toc, prefix) = Toc::read(decoder);
    (&*file).write_all(&prefix)?;
    let toc = match toc {
        Ok(toc) => Some(toc),
        Err(ArchiveError::Io(e)) => return Err(e),
        Err(e) => {
            tracing::info!(source, "the archive's data offsets are left unset: {e}");
            None
        }
    };
    let run = match (&toc, early) {
        (Some(toc), Some(early)) => Some(early.start(toc, prefix)?),
        _ => None,
    };
    let mut walker = toc.as_ref().map(BlockWalker::new);
    copy_on_two_threads(decoder, file, |bytes| {
        if let Some(walker) = walker.as_mut() {
            walker.feed(bytes);
        }
    })?;
    if let (Some(toc), Some(walker)) = (&toc, &walker) {
        let patches = toc.offset_patches(walker.starts());
        tracing::debug!(source, offsets = patches.len(), "writing the data offsets into the staged archive");
        for (at, bytes) in patches {
            file.write_all_at(&bytes, at)?;
        }
    }
    Ok(run)
}

/// Copies `decoder` to the end of `file`, showing every byte to `inspect` on the way. The writes go on a thread
/// of their own: zstd's decoding is what staging waits for, and it need not also wait for the page cache.
fn copy_on_two_threads(decoder: &mut impl Read, file: &File, mut inspect: impl FnMut(&[u8])) -> io::Result<()> {
    std::thread::scope(|scope| {
        // Buffers go to the writer with the length filled, and come back whole for the next read.
        let (full, to_write) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(WRITES_QUEUED);
        let (written, empty) = std::sync::mpsc::channel::<Vec<u8>>();
        let writer = scope.spawn(move || -> io::Result<()> {
            for (buffer, len) in to_write {
                (&*file).write_all(&buffer[..len])?;
                let _ = written.send(buffer);
            }
            Ok(())
        });
        let read = (|| -> io::Result<()> {
            loop {
                let mut buffer = empty.try_recv().unwrap_or_else(|_| vec![0; COPY_BUFFER]);
                let filled = pipeline::read_up_to(decoder, &mut buffer)?;
                if filled == 0 {
                    return Ok(());
                }
                inspect(&buffer[..filled]);
                if full.send((buffer, filled)).is_err() {
                    return Ok(()); // the writer stopped: its error says why
                }
            }
        })();
        drop(full);
        let wrote = writer.join().unwrap_or_else(|_| Err(io::Error::other("the staging writer panicked")));
        read.and(wrote)
    })
}
