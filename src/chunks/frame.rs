//! One chunk as one zstd frame, as a pack holds it: compressed, or (when its bytes look random) stored in raw
//! blocks.
//!
//! Photos, videos and archives are already compressed: zstd gains under 2 % on them and spent a fifth of a
//! small-files backup's CPU finding that out (measured on 200,000 files of random bytes, docs/benchmarks.md).
//! A chunk whose bytes look random is therefore written as a zstd frame of raw blocks, with the same content
//! size and checksum fields, so every reader (dr, `zstd -d`, the break-glass script) reads both kinds alike.
//!
//! "Looks random" is the order-0 entropy of a sample of the chunk, bias-corrected (Miller-Madow), at or above
//! [`RANDOM_BITS_PER_BYTE`]. Data whose bytes are spread evenly but that repeats itself inside one chunk (two
//! copies of one photo in one chunk) is the one case it misses; it costs space, never correctness, and
//! identical chunks are still deduplicated.

use std::io;

/// At or above this many bits of entropy per byte, zstd could save at most ~1.3 % by entropy coding.
const RANDOM_BITS_PER_BYTE: f64 = 7.9;
/// Chunks up to this size are sampled whole; larger ones in [`SAMPLE_RUN`]-byte runs spread over the chunk.
const SAMPLE_WHOLE: usize = 4096;
const SAMPLE_RUN: usize = 256;
/// What zstd's format allows in one block, and the window our raw frames declare.
const RAW_BLOCK: usize = 128 << 10;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// One chunk's plaintext as one zstd frame, with the content checksum and size.
pub fn compress_frame(level: i32, plaintext: &[u8]) -> io::Result<Vec<u8>> {
    FrameCompressor::new(level)?.compress(plaintext)
}

/// [`compress_frame`] with its zstd context kept between chunks (one per compressing thread).
pub struct FrameCompressor(zstd::bulk::Compressor<'static>);

impl std::fmt::Debug for FrameCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameCompressor")
    }
}

impl FrameCompressor {
    pub fn new(level: i32) -> io::Result<FrameCompressor> {
        use zstd::stream::raw::CParameter;
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        compressor.set_parameter(CParameter::ChecksumFlag(true))?;
        compressor.set_parameter(CParameter::ContentSizeFlag(true))?;
        Ok(FrameCompressor(compressor))
    }

    /// The chunk's frame: zstd-compressed, or raw blocks when its bytes look random.
    pub fn compress(&mut self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        if looks_random(plaintext) { Ok(raw_frame(plaintext)) } else { self.0.compress(plaintext) }
    }
}

/// True when a sample of `data` has (bias-corrected) order-0 entropy of at least [`RANDOM_BITS_PER_BYTE`].
pub fn looks_random(data: &[u8]) -> bool {
    // Four tables: consecutive equal bytes would otherwise serialise on one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut sampled = 0usize;
    let mut count = |bytes: &[u8]| {
        let mut quads = bytes.chunks_exact(4);
        for quad in &mut quads {
            counts[0][quad[0] as usize] += 1;
            counts[1][quad[1] as usize] += 1;
            counts[2][quad[2] as usize] += 1;
            counts[3][quad[3] as usize] += 1;
        }
        for &byte in quads.remainder() {
            counts[0][byte as usize] += 1;
        }
        sampled += bytes.len();
    };
    if data.len() <= SAMPLE_WHOLE {
        count(data);
    } else {
        // A 16th of the chunk, at least SAMPLE_WHOLE bytes, in runs spread evenly over it.
        let runs = (data.len() / 16).max(SAMPLE_WHOLE) / SAMPLE_RUN;
        let stride = data.len() / runs;
        for run in 0..runs {
            let start = run * stride;
            count(&data[start..start + SAMPLE_RUN.min(data.len() - start)]);
        }
    }
    if sampled < 64 {
        // Too few bytes to judge; zstd stores them raw itself if it must.
        return false;
    }
    // H = log2(n) - (1/n) Σ c·log2(c), with c·log2(c) from a table for the counts a small chunk has: 256 calls
    // of log2 per chunk had been 2 % of a small-files backup.
    let n = sampled as f64;
    let mut sum = 0.0;
    let mut seen = 0u32;
    let [first, second, third, fourth] = &counts;
    let totals = first.iter().zip(second).zip(third).zip(fourth).map(|(((a, b), c), d)| a + b + c + d);
    for c in totals {
        if c > 0 {
            seen += 1;
            sum += c_log2_c(c);
        }
    }
    let bits = n.log2() - sum / n;
    // Miller-Madow: the plug-in estimate falls short of the true entropy by about (seen - 1) / 2n nats.
    let corrected = bits + f64::from(seen.saturating_sub(1)) / (2.0 * n * std::f64::consts::LN_2);
    corrected >= RANDOM_BITS_PER_BYTE
}

/// `c · log2(c)`, from a table up to [`SAMPLE_WHOLE`] (the largest count of a chunk sampled whole).
fn c_log2_c(c: u32) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE
        .get_or_init(|| (0..=SAMPLE_WHOLE).map(|c| if c == 0 { 0.0 } else { c as f64 * (c as f64).log2() }).collect());
    match table.get(c as usize) {
        Some(value) => *value,
        None => f64::from(c) * f64::from(c).log2(),
    }
}

/// `data` as a zstd frame (RFC 8878) of raw blocks: magic, a header with a 128 KiB window, the content size
/// and the checksum flag, blocks of at most 128 KiB, and the XXH64 content checksum's low 32 bits.
pub fn raw_frame(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(RAW_BLOCK).max(1);
    let mut frame = Vec::with_capacity(4 + 2 + 8 + 3 * blocks + data.len() + 4);
    frame.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame_Header_Descriptor: Frame_Content_Size_flag (bits 7-6), Single_Segment_flag 0, Content_Checksum_flag
    // (bit 2), no dictionary. Window_Descriptor 0x38: exponent 7, mantissa 0, i.e. 2^(10+7) = 128 KiB.
    let size = data.len() as u64;
    let (fcs_flag, fcs): (u8, Vec<u8>) = if (256..256 + 65536).contains(&size) {
        (1, ((size - 256) as u16).to_le_bytes().to_vec())
    } else if let Ok(size) = u32::try_from(size) {
        (2, size.to_le_bytes().to_vec())
    } else {
        (3, size.to_le_bytes().to_vec())
    };
    frame.push(fcs_flag << 6 | 1 << 2);
    frame.push(0x38);
    frame.extend_from_slice(&fcs);
    let mut pieces = data.chunks(RAW_BLOCK).peekable();
    if pieces.peek().is_none() {
        // An empty chunk: one last raw block of size 0.
        frame.extend_from_slice(&[1, 0, 0]);
    }
    while let Some(piece) = pieces.next() {
        let last = u32::from(pieces.peek().is_none());
        // Block_Header: Last_Block (bit 0), Block_Type 0 = Raw (bits 1-2), Block_Size (bits 3-23).
        let header = last | (piece.len() as u32) << 3;
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(piece);
    }
    let checksum = xxhash_rust::xxh64::xxh64(data, 0) as u32;
    frame.extend_from_slice(&checksum.to_le_bytes());
    frame
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        // xorshift: random enough for an entropy test, without a generator's seed plumbing.
        let mut state = seed | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn raw_frames_decompress_with_zstd_itself_at_every_size_boundary() {
        for n in [0, 1, 255, 256, 257, 65_791, 65_792, RAW_BLOCK - 1, RAW_BLOCK, RAW_BLOCK + 1, 3 * RAW_BLOCK + 7] {
            let data = random_bytes(n, n as u64 + 1);
            let frame = raw_frame(&data);
            assert_eq!(zstd::bulk::decompress(&frame, n).unwrap(), data, "{n} bytes");
            // The content size is declared, so a reader sizes its buffer from the frame.
            assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).ok(), Some(Some(n as u64)), "{n} bytes");
        }
    }

    #[test]
    fn a_flipped_byte_in_a_raw_frame_fails_its_checksum() {
        let data = random_bytes(10_000, 7);
        let mut frame = raw_frame(&data);
        let middle = frame.len() / 2;
        frame[middle] ^= 1;
        assert!(zstd::bulk::decompress(&frame, data.len()).is_err());
    }

    #[test]
    fn random_bytes_look_random_and_text_or_zeros_do_not() {
        for n in [1024, 8192, 16_384, 1 << 20] {
            assert!(looks_random(&random_bytes(n, 3)), "{n} random bytes");
        }
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(400);
        assert!(!looks_random(text.as_bytes()));
        assert!(!looks_random(&vec![0u8; 1 << 20]));
        // Random bytes in a sixteenth of the chunk, zeros in the rest: compressible, and the spread sample sees it.
        let mut mixed = vec![0u8; 1 << 20];
        mixed[..1 << 16].copy_from_slice(&random_bytes(1 << 16, 5));
        assert!(!looks_random(&mixed));
        // Hex digits: 4 bits a byte.
        assert!(!looks_random(hex::encode(random_bytes(8192, 9)).as_bytes()));
    }

    #[test]
    fn the_compressor_stores_random_chunks_raw_and_compresses_the_rest() {
        let mut compressor = FrameCompressor::new(3).unwrap();
        let random = random_bytes(8192, 11);
        let frame = compressor.compress(&random).unwrap();
        assert_eq!(frame, raw_frame(&random));
        let text = "photo-sharing ".repeat(1000);
        let frame = compressor.compress(text.as_bytes()).unwrap();
        assert!(frame.len() < text.len() / 10);
        assert_eq!(zstd::bulk::decompress(&frame, text.len()).unwrap(), text.as_bytes());
    }
}
