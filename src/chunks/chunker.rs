//! Content-defined chunking: where a file is cut depends on its bytes, not on offsets, so an insertion moves
//! only the cuts near it and the chunks after it are found again (deduplicated) in the next backup.
//!
//! FastCDC 2020 (`fastcdc::v2020::StreamCDC`, normalization level 1), with the gear table seeded from the dedup
//! key: without the key, the cut points (and so the chunk sizes) of a known file cannot be predicted.
//!
//! Most files of a photo site are smaller than the minimum chunk: such a file is read whole into one reused
//! buffer and is one chunk, without the chunker.
//!
//! Larger files are cut exactly where `StreamCDC::with_level_and_seed` cuts them (a test compares the two),
//! but through a buffer of two maximum chunks kept between files: `StreamCDC` moves its whole `max_size`
//! buffer down after every chunk and copies each chunk into a new `Vec` (measured: 2.5 times slower than
//! the cut itself); here a chunk is a slice of the buffer, and the buffer moves once per `max_size` read.

use std::io::{self, Read};
use std::path::Path;

use fastcdc::v2020::{FastCDC, Normalization};

use super::keys::ChunkSizes;
use crate::error::Error;
use crate::pipeline::read_up_to;

/// Why chunking a file stopped: the file could not be read, or the consumer of its chunks failed (a store
/// error, a cancellation). The two call for different handling: the first names the file.
#[derive(Debug, thiserror::Error)]
pub enum ChunkerError {
    #[error("{0}")]
    Read(#[source] io::Error),
    #[error("{0}")]
    Consumer(#[source] Error),
}

impl ChunkerError {
    /// The crate's error: a read failure is named by `path`, the consumer's error is kept as it is.
    pub fn into_error(self, path: &Path) -> Error {
        match self {
            ChunkerError::Read(e) => Error::io(format!("reading {}", path.display()), e),
            ChunkerError::Consumer(e) => e,
        }
    }
}

/// Splits files into chunks; one per thread that reads files (it keeps a buffer for small files).
#[derive(Debug)]
pub struct Chunker {
    sizes: ChunkSizes,
    seed: u64,
    /// A small file's bytes; kept between files so that they cost no allocation.
    small: Vec<u8>,
    /// A large file's window: two maximum chunks (16 MiB by default), allocated at the first large file.
    window: Vec<u8>,
}

impl Chunker {
    /// `sizes` come from a checked `chunking.json` (fastcdc panics in debug builds on sizes out of its range).
    pub fn new(sizes: ChunkSizes, seed: u64) -> Chunker {
        Chunker { sizes, seed, small: Vec::new(), window: Vec::new() }
    }

    /// Reads `reader` to its end and calls `f` with each chunk, in order; returns the bytes read.
    ///
    /// `size_hint` is the file's size when it was opened (`u64::MAX` for a stream of unknown length). A file
    /// no larger than the minimum chunk is read whole into the reused buffer and is one chunk; if it turns out
    /// to have grown past the minimum, what was read goes through the chunker with the rest. An empty file
    /// has no chunks.
    pub fn for_each_chunk<R: Read>(
        &mut self,
        mut reader: R,
        size_hint: u64,
        mut f: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<u64, ChunkerError> {
        let min = u64::from(self.sizes.min);
        if size_hint > min {
            return self.cut(reader, size_hint, &mut f);
        }
        self.small.clear();
        (&mut reader).take(min + 1).read_to_end(&mut self.small).map_err(ChunkerError::Read)?;
        let read = self.small.len() as u64;
        if read <= min {
            if read > 0 {
                f(&self.small).map_err(ChunkerError::Consumer)?;
            }
            return Ok(read);
        }
        // It grew while we looked: chunk what was read and the rest as one stream.
        let head = io::Cursor::new(std::mem::take(&mut self.small));
        self.cut(head.chain(reader), u64::MAX, &mut f)
    }

    /// Cuts as `StreamCDC` does: each cut is searched in the next `max` bytes (fewer only at the end).
    ///
    /// The window holds two maximum chunks, or the whole stream when `size_hint` says it is smaller (plus a
    /// byte, to see its end): a thread that reads photos of 2 MB keeps 2 MB, not 16, and a bucket source runs
    /// several such threads. A stream that turns out longer grows the window to its full size.
    fn cut<R: Read>(
        &mut self,
        mut reader: R,
        size_hint: u64,
        f: &mut impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<u64, ChunkerError> {
        let ChunkSizes { min, avg, max } = self.sizes;
        let (min, avg, max) = (min as usize, avg as usize, max as usize);
        let whole = usize::try_from(size_hint.saturating_add(1)).unwrap_or(usize::MAX);
        self.window.resize(whole.min(2 * max), 0);
        let (mut start, mut end, mut eof) = (0, 0, false);
        let mut total = 0u64;
        loop {
            if !eof && end - start < max {
                self.window.copy_within(start..end, 0);
                end -= start;
                start = 0;
                if end == self.window.len() {
                    // Longer than its hint: room for the rest.
                    self.window.resize(2 * max, 0);
                }
                let wanted = self.window.len() - end;
                let read = read_up_to(&mut reader, &mut self.window[end..]).map_err(ChunkerError::Read)?;
                end += read;
                eof = read < wanted;
            }
            if start == end {
                return Ok(total);
            }
            // The gear tables are derived from the seed per window fill (512 entries: nothing next to a read).
            let buffered = &self.window[..end];
            let cutter = FastCDC::with_level_and_seed(buffered, min, avg, max, Normalization::Level1, self.seed);
            while end - start >= max || (eof && start < end) {
                let (_, cut) = cutter.cut(start, (end - start).min(max));
                f(&buffered[start..cut]).map_err(ChunkerError::Consumer)?;
                total += (cut - start) as u64;
                start = cut;
            }
        }
    }
}

/// [`Chunker::for_each_chunk`] with a chunker of its own: for one stream (the tree), or a one-off.
pub fn for_each_chunk<R: Read>(
    reader: R,
    size_hint: u64,
    sizes: ChunkSizes,
    seed: u64,
    f: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<u64, ChunkerError> {
    Chunker::new(sizes, seed).for_each_chunk(reader, size_hint, f)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SIZES: ChunkSizes = ChunkSizes { min: 512 << 10, avg: 1 << 20, max: 8 << 20 };

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        // xorshift: reproducible, incompressible enough for cut points, no dependency.
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn chunks_of(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let read = for_each_chunk(data, data.len() as u64, SIZES, seed, |c| {
            chunks.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(read, data.len() as u64);
        chunks
    }

    #[test]
    fn a_file_no_larger_than_the_minimum_is_one_chunk_and_an_empty_one_none() {
        let data = random_bytes(SIZES.min as usize, 1);
        assert_eq!(chunks_of(&data, 7), vec![data.clone()]);
        assert_eq!(chunks_of(&data[..10], 7), vec![data[..10].to_vec()]);
        assert!(chunks_of(&[], 7).is_empty());
    }

    #[test]
    fn a_20_mib_file_splits_within_the_bounds_and_reassembles() {
        let data = random_bytes(20 << 20, 2);
        let chunks = chunks_of(&data, 7);
        assert!(chunks.len() > 4, "{} chunks", chunks.len());
        let (last, others) = chunks.split_last().unwrap();
        for chunk in others {
            assert!((SIZES.min as usize..=SIZES.max as usize).contains(&chunk.len()), "{}", chunk.len());
        }
        assert!(last.len() <= SIZES.max as usize);
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn an_insertion_at_the_front_changes_only_the_first_chunks() {
        let data = random_bytes(20 << 20, 3);
        let before = chunks_of(&data, 7);
        let mut shifted = b"a few new bytes at the front".to_vec();
        shifted.extend_from_slice(&data);
        let after = chunks_of(&shifted, 7);
        let old: std::collections::HashSet<_> = before.iter().collect();
        let changed = after.iter().filter(|c| !old.contains(c)).count();
        assert!(changed <= 2, "{changed} of {} chunks changed", after.len());
        assert!(after.len() >= 4 && after.len() - changed >= before.len() - 2);
    }

    #[test]
    fn the_seed_decides_the_cuts() {
        let data = random_bytes(20 << 20, 4);
        let lengths = |seed| chunks_of(&data, seed).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(lengths(7), lengths(7));
        assert_ne!(lengths(7), lengths(8));
    }

    /// Hands out a few bytes per read, as a pipe or a slow disk may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7919 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_are_stream_cdc_s_cuts() {
        use fastcdc::v2020::StreamCDC;
        let sizes = ChunkSizes { min: 4096, avg: 16384, max: 65536 };
        let mut chunker = Chunker::new(sizes, 99);
        for (len, seed) in [(3 << 20, 1), (65536 * 3, 2), (65536 * 2 + 1, 3), (4097, 4), (5_000_000, 5)] {
            let data = random_bytes(len, seed);
            let expected: Vec<usize> =
                StreamCDC::with_level_and_seed(&data[..], 4096, 16384, 65536, Normalization::Level1, 99)
                    .map(|c| c.unwrap().length)
                    .collect();
            // The window follows the hint (the exact size, one too small, none): the cuts must not.
            for hint in [len as u64, len as u64 / 2, u64::MAX] {
                let mut lengths = Vec::new();
                chunker
                    .for_each_chunk(Trickle(&data, 0), hint, |c| {
                        lengths.push(c.len());
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(lengths, expected, "{len} bytes, hint {hint}");
            }
        }
    }

    #[test]
    fn a_small_file_that_grew_is_chunked_whole() {
        let data = random_bytes(3 << 20, 5);
        let mut chunks = Vec::new();
        // Opened at 100 bytes, read at 3 MiB.
        let read = Chunker::new(SIZES, 7)
            .for_each_chunk(&data[..], 100, |c| {
                chunks.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(read, data.len() as u64);
        assert_eq!(chunks, chunks_of(&data, 7));
    }

    #[test]
    fn read_and_consumer_failures_are_told_apart() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = Chunker::new(SIZES, 7).for_each_chunk(Failing, 10, |_| Ok(())).unwrap_err();
        let err = err.into_error(Path::new("/srv/a.jpg")).to_string();
        assert!(err.contains("/srv/a.jpg") && err.contains("disk on fire"), "{err}");
        let err = Chunker::new(SIZES, 7).for_each_chunk(&b"data"[..], 4, |_| Err(Error::Cancelled)).unwrap_err();
        assert!(matches!(err, ChunkerError::Consumer(Error::Cancelled)), "{err:?}");
    }
}
