//! A size scan of a files source that runs beside its backup, so that progress can show a percentage and an
//! ETA (as restic's scanner does). It only reads metadata, walks the tree as the archive does (same excludes),
//! and its sum is an estimate: files change while the backup reads them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::excludes::Excludes;
use crate::progress::ProgressTask;

/// The running scan; stopping it (or dropping it) ends the walk early, once the archive no longer needs it.
#[derive(Debug)]
pub struct SizeScan {
    stop: Arc<AtomicBool>,
}

impl SizeScan {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for SizeScan {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the scan on its own thread; when it completes, it passes the tar stream's expected size to `task`.
pub fn scan_size_for_progress(root: &Path, excludes: &Excludes, task: Arc<dyn ProgressTask>) -> SizeScan {
    let stop = Arc::new(AtomicBool::new(false));
    let (root, excludes, stopped) = (root.to_path_buf(), excludes.clone(), stop.clone());
    let spawned = std::thread::Builder::new().name("dr-size-scan".into()).spawn(move || {
        if let Some(total) = tar_size(&root, &excludes, &stopped) {
            task.set_estimate(total);
        }
    });
    if let Err(e) = spawned {
        tracing::debug!("no size scan for progress: {e}");
    }
    SizeScan { stop }
}

/// About what the tar stream of `root` will weigh: a 512-byte header per entry, contents padded to 512 bytes,
/// two zero blocks at the end. `None` when stopped first.
fn tar_size(root: &Path, excludes: &Excludes, stop: &AtomicBool) -> Option<u64> {
    const BLOCK: u64 = 512;
    let mut total = 2 * BLOCK;
    for entry in excludes.walk(root).flatten() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        total += BLOCK;
        if entry.file_type().is_file() {
            let size = entry.metadata().map_or(0, |m| m.len());
            total += size.div_ceil(BLOCK) * BLOCK;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorded(Mutex<Option<u64>>);

    impl ProgressTask for Recorded {
        fn advance(&self, _bytes: u64) {}
        fn set_estimate(&self, total: u64) {
            *self.0.lock().unwrap() = Some(total);
        }
        fn finish(&self, _summary: &str) {}
    }

    #[test]
    fn the_estimate_is_the_tar_stream_size_of_the_kept_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        std::fs::write(dir.path().join("cache/big"), vec![1u8; 100_000]).unwrap();
        let excludes = Excludes::new(&["cache".to_string()]).unwrap();
        let task = Arc::new(Recorded::default());
        let scan = scan_size_for_progress(dir.path(), &excludes, task.clone());
        for _ in 0..200 {
            if task.0.lock().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(scan);
        // One header and two blocks of contents for "a", and the end-of-archive blocks; "cache" is excluded.
        assert_eq!(*task.0.lock().unwrap(), Some(512 + 1024 + 1024));
    }
}
