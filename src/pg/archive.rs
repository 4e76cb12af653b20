//! pg_dump's custom archive format, read as it streams past, as far as a fast restore needs it: the table of
//! contents (which entries there are, in which section) and where each data block starts.
//!
//! pg_dump writing to a file seeks back at the end and records, in every TOC entry, where its data block
//! starts. Written to a pipe, as dr's backups are, it cannot: the TOC says "offset not set", and a
//! `pg_restore --jobs N` must find each table's data by walking the chunk headers in front of it (one chunk per
//! row in an uncompressed archive: millions of reads and seeks). The restore sees every byte pass anyway, so
//! [`BlockWalker`] notes where each block starts and [`Toc::offset_patches`] gives the bytes that make the
//! staged file's TOC what pg_dump would have written to a file. `bench/pgdump_offsets.py` is the same walk in
//! Python, for inspection by hand.
//!
//! Archive versions 1.12 to 1.16 (pg_dump 9.0 to 17) are read; anything else is [`ArchiveError::Unsupported`],
//! and the caller restores without offsets, as before. Nothing here decides what pg_restore does with an
//! entry: the sections only say which entries can be restored before any data has arrived.

use std::collections::HashMap;
use std::io::{self, Read};

/// Block types of the data area (`pg_backup_archiver.h`).
const BLOCK_DATA: u8 = 1;
const BLOCK_BLOBS: u8 = 3;
/// Data offset states of a TOC entry.
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;
const OFFSET_NO_DATA: u8 = 3;

/// The oldest and newest archive versions understood: (major, minor, revision).
const OLDEST: (u8, u8, u8) = (1, 12, 0);
const NEWEST: (u8, u8, u8) = (1, 16, 0);

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a pg_dump custom-format archive")]
    NotCustomFormat,
    #[error("archive version {0}.{1}.{2} is not one dr reads (1.12 to 1.16)")]
    Unsupported(u8, u8, u8),
    #[error("malformed table of contents: {0}")]
    Malformed(&'static str),
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// Where a TOC entry belongs in a restore (`teSection`); entries without a section of their own (comments,
/// ACLs) belong to the section of the entry before them, as pg_restore counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PreData,
    Data,
    PostData,
}

#[derive(Debug, Clone)]
pub struct TocEntry {
    pub dump_id: i32,
    /// `TABLE`, `TABLE DATA`, `INDEX`, `ACL`, ...
    pub desc: String,
    pub section: Section,
    /// Byte position of the entry's data offset (its state byte) in the archive.
    offset_at: u64,
    offset_state: u8,
}

impl TocEntry {
    /// Whether pg_restore runs this entry in its last passes, after everything else (`_tocEntryRestorePass`):
    /// privileges, so that a restore is not refused what a REVOKE in the archive takes away, and what needs them.
    fn restored_last(&self) -> bool {
        matches!(
            self.desc.as_str(),
            "ACL" | "ACL LANGUAGE" | "DEFAULT ACL" | "EVENT TRIGGER" | "MATERIALIZED VIEW DATA"
        )
    }
}

/// The header and table of contents of an archive.
#[derive(Debug, Clone)]
pub struct Toc {
    int_size: usize,
    off_size: usize,
    pub entries: Vec<TocEntry>,
    /// Length of the header and TOC: where the data blocks begin.
    pub len: u64,
}

impl Toc {
    /// Reads the header and TOC from the start of an archive. Returns them with the bytes read, which the caller
    /// passes on, also when they are not a TOC dr reads: nothing past the TOC is read.
    pub fn read(input: &mut impl Read) -> (Result<Toc, ArchiveError>, Vec<u8>) {
        let mut reader = TocReader { input, bytes: Vec::new(), int_size: 4 };
        let toc = reader.toc();
        (toc, reader.bytes)
    }

    /// The writes that record each data block's start in the TOC, as `(position, bytes)`, for the entries whose
    /// offset is not set and whose block was seen.
    pub fn offset_patches(&self, starts: &HashMap<i32, u64>) -> Vec<(u64, Vec<u8>)> {
        self.entries
            .iter()
            .filter(|e| e.offset_state == OFFSET_NOT_SET)
            .filter_map(|e| {
                let start = *starts.get(&e.dump_id)?;
                let mut bytes = vec![OFFSET_SET];
                bytes.extend((0..self.off_size).map(|i| if i < 8 { (start >> (8 * i)) as u8 } else { 0 }));
                Some((e.offset_at, bytes))
            })
            .collect()
    }

    /// The entries a restore can run before any data has arrived (the pre-data section, without the
    /// privileges and what pg_restore runs after them), and the others, both in archive order.
    pub fn split_before_data(&self) -> (Vec<i32>, Vec<i32>) {
        let (before, after): (Vec<&TocEntry>, Vec<&TocEntry>) =
            self.entries.iter().partition(|e| e.section == Section::PreData && !e.restored_last());
        let ids = |entries: Vec<&TocEntry>| entries.iter().map(|e| e.dump_id).collect();
        (ids(before), ids(after))
    }
}

/// A pg_restore list file (`--use-list`) selecting `ids`: one dump id per line.
pub fn use_list(ids: &[i32]) -> String {
    ids.iter().map(|id| format!("{id};\n")).collect()
}

/// Reads the TOC field by field, keeping every byte.
struct TocReader<'a, R> {
    input: &'a mut R,
    bytes: Vec<u8>,
    int_size: usize,
}

impl<R: Read> TocReader<'_, R> {
    fn take(&mut self, n: usize) -> Result<&[u8], ArchiveError> {
        let start = self.bytes.len();
        self.bytes.resize(start + n, 0);
        self.input.read_exact(&mut self.bytes[start..]).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ArchiveError::Malformed("the archive ends inside its table of contents"),
            _ => ArchiveError::Io(e),
        })?;
        Ok(&self.bytes[start..])
    }

    fn byte(&mut self) -> Result<u8, ArchiveError> {
        Ok(self.take(1)?[0])
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, ArchiveError> {
        let negative = self.byte()? != 0;
        let size = self.int_size;
        let magnitude = self.take(size)?.iter().rev().fold(0i64, |acc, &b| (acc << 8) | i64::from(b));
        Ok(if negative { -magnitude } else { magnitude })
    }

    /// `ReadStr`: a length (negative for NULL), then the bytes.
    fn string(&mut self) -> Result<Option<String>, ArchiveError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| ArchiveError::Malformed("a string longer than memory"))?;
        if len > 1 << 30 {
            return Err(ArchiveError::Malformed("a string of over 1 GiB"));
        }
        Ok(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }

    fn toc(&mut self) -> Result<Toc, ArchiveError> {
        if self.take(5)? != b"PGDMP" {
            return Err(ArchiveError::NotCustomFormat);
        }
        let version = (self.byte()?, self.byte()?, self.byte()?);
        self.int_size = usize::from(self.byte()?);
        let off_size = usize::from(self.byte()?);
        let format = self.byte()?;
        if format != 1 {
            return Err(ArchiveError::NotCustomFormat);
        }
        if !(OLDEST..=NEWEST).contains(&version) {
            return Err(ArchiveError::Unsupported(version.0, version.1, version.2));
        }
        if !(1..=8).contains(&self.int_size) || !(1..=16).contains(&off_size) {
            return Err(ArchiveError::Malformed("integer sizes out of range"));
        }
        if version >= (1, 15, 0) {
            self.byte()?; // compression algorithm
        } else {
            self.int()?; // compression level
        }
        for _ in 0..7 {
            self.int()?; // creation time
        }
        for _ in 0..3 {
            self.string()?; // database name, server version, pg_dump version
        }
        let count = self.int()?;
        let mut entries = Vec::new();
        let mut current = Section::PreData;
        for _ in 0..count {
            let dump_id = i32::try_from(self.int()?).map_err(|_| ArchiveError::Malformed("a dump id out of range"))?;
            self.int()?; // had a data dumper
            for _ in 0..3 {
                self.string()?; // table oid, oid, tag
            }
            let desc = self.string()?.unwrap_or_default();
            current = match self.int()? {
                1 => current,
                2 => Section::PreData,
                3 => Section::Data,
                4 => Section::PostData,
                _ => return Err(ArchiveError::Malformed("an entry of no known section")),
            };
            for _ in 0..5 {
                self.string()?; // definition, drop statement, copy statement, namespace, tablespace
            }
            if version >= (1, 14, 0) {
                self.string()?; // table access method
            }
            if version >= (1, 16, 0) {
                self.int()?; // relkind
            }
            self.string()?; // owner
            self.string()?; // "with oids"
            while self.string()?.is_some() {} // dependencies
            let offset_at = self.bytes.len() as u64;
            let offset_state = self.byte()?;
            if !(OFFSET_NOT_SET..=OFFSET_NO_DATA).contains(&offset_state) {
                return Err(ArchiveError::Malformed("a data offset of unknown state"));
            }
            self.take(off_size)?;
            entries.push(TocEntry { dump_id, desc, section: current, offset_at, offset_state });
        }
        Ok(Toc { int_size: self.int_size, off_size, entries, len: self.bytes.len() as u64 })
    }
}

/// Follows the data blocks after the TOC as their bytes pass, noting where each one starts.
///
/// A block is a type byte, the entry's dump id, then length-prefixed chunks up to a zero length; a large
/// objects block repeats (object id, chunks) up to a zero object id. Something else where a block should
/// start stops the walk: the offsets found so far stay right, and pg_restore walks the rest itself.
#[derive(Debug)]
pub struct BlockWalker {
    int_size: usize,
    /// Archive position of the next byte fed.
    position: u64,
    state: State,
    starts: HashMap<i32, u64>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between blocks.
    BlockType,
    /// Reading an integer: what it is, and the bytes of it seen so far (sign byte first).
    Int { what: IntField, seen: usize, value: u64, negative: bool },
    /// Inside a chunk: bytes left, and the block type it belongs to.
    Payload { left: u64, blobs: bool },
    /// Not an archive this walker follows any further.
    Stopped,
}

impl State {
    /// The start of an integer of the data area.
    fn int(what: IntField) -> State {
        State::Int { what, seen: 0, value: 0, negative: false }
    }
}

#[derive(Debug, Clone, Copy)]
enum IntField {
    DumpId { blobs: bool, start: u64 },
    ChunkLength { blobs: bool },
    BlobOid,
}

impl BlockWalker {
    pub fn new(toc: &Toc) -> BlockWalker {
        BlockWalker { int_size: toc.int_size, position: toc.len, state: State::BlockType, starts: HashMap::new() }
    }

    /// Where each block seen so far starts, by dump id.
    pub fn starts(&self) -> &HashMap<i32, u64> {
        &self.starts
    }

    /// Whether the bytes fed end between two blocks, as a whole archive does.
    pub fn at_block_boundary(&self) -> bool {
        matches!(self.state, State::BlockType)
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (used, next) = self.step(bytes);
            self.position += used as u64;
            bytes = &bytes[used..];
            self.state = next;
        }
    }

    /// Consumes a prefix of `bytes` (at least one byte, or all of them once stopped).
    fn step(&mut self, bytes: &[u8]) -> (usize, State) {
        let int = State::int;
        match self.state {
            State::Stopped => (bytes.len(), State::Stopped),
            State::BlockType => match bytes[0] {
                BLOCK_DATA => (1, int(IntField::DumpId { blobs: false, start: self.position })),
                BLOCK_BLOBS => (1, int(IntField::DumpId { blobs: true, start: self.position })),
                _ => (bytes.len(), State::Stopped),
            },
            State::Payload { left, blobs } => {
                let used = left.min(bytes.len() as u64);
                let next = if used == left {
                    int(IntField::ChunkLength { blobs })
                } else {
                    State::Payload { left: left - used, blobs }
                };
                (used as usize, next)
            }
            State::Int { what, seen, value, negative } => {
                let (value, negative) = if seen == 0 {
                    (value, bytes[0] != 0)
                } else {
                    (value | (u64::from(bytes[0]) << (8 * (seen - 1))), negative)
                };
                if seen < self.int_size {
                    return (1, State::Int { what, seen: seen + 1, value, negative });
                }
                (1, self.after_int(what, value, negative))
            }
        }
    }

    /// What follows an integer of the data area, now that it is read.
    fn after_int(&mut self, what: IntField, value: u64, negative: bool) -> State {
        let int = State::int;
        match what {
            IntField::DumpId { blobs, start } => {
                match i32::try_from(value) {
                    Ok(id) if !negative => self.starts.insert(id, start),
                    _ => return State::Stopped,
                };
                int(if blobs { IntField::BlobOid } else { IntField::ChunkLength { blobs } })
            }
            IntField::BlobOid if value == 0 => State::BlockType,
            IntField::BlobOid => int(IntField::ChunkLength { blobs: true }),
            // pg_restore reads a chunk's length as a size, whatever its sign.
            IntField::ChunkLength { blobs } if value != 0 => State::Payload { left: value, blobs },
            IntField::ChunkLength { blobs: true } => int(IntField::BlobOid),
            IntField::ChunkLength { blobs: false } => State::BlockType,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes archives the way pg_dump does to a pipe (version 1.15, 4-byte ints, 8-byte offsets).
    struct Writer(Vec<u8>);

    impl Writer {
        fn int(&mut self, v: i64) -> &mut Self {
            self.0.push(u8::from(v < 0));
            self.0.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
            self
        }
        fn string(&mut self, s: Option<&str>) -> &mut Self {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.0.extend_from_slice(s.as_bytes());
                    self
                }
            }
        }
    }

    /// (dump id, desc, section, has data)
    const ENTRIES: [(i64, &str, i64, bool); 7] = [
        (1, "ENCODING", 2, false),
        (10, "TABLE", 2, false),
        (11, "ACL", 1, false),
        (20, "TABLE DATA", 3, true),
        (21, "BLOBS", 3, true),
        (22, "SEQUENCE SET", 3, false),
        (30, "INDEX", 4, false),
    ];

    fn archive() -> (Vec<u8>, u64) {
        let mut w = Writer(b"PGDMP".to_vec());
        w.0.extend_from_slice(&[1, 15, 0, 4, 8, 1, 0]);
        for v in [1, 2, 3, 4, 5, 2026, 0] {
            w.int(v);
        }
        w.string(Some("app")).string(Some("15.18")).string(Some("15.18"));
        w.int(ENTRIES.len() as i64);
        for (id, desc, section, data) in ENTRIES {
            w.int(id).int(i64::from(data)).string(Some("0")).string(Some("0")).string(Some("t")).string(Some(desc));
            w.int(section);
            for _ in 0..5 {
                w.string(Some(""));
            }
            w.string(Some("heap")).string(Some("app")).string(Some("false")).string(Some("10")).string(None);
            w.0.push(if data { OFFSET_NOT_SET } else { OFFSET_NO_DATA });
            w.0.extend_from_slice(&[0; 8]);
        }
        let toc_len = w.0.len() as u64;
        w.0.push(BLOCK_DATA);
        w.int(20).int(3);
        w.0.extend_from_slice(b"a\n\n");
        w.int(300);
        w.0.extend_from_slice(&[7; 300]);
        w.int(0);
        w.0.push(BLOCK_BLOBS);
        w.int(21).int(16401).int(2);
        w.0.extend_from_slice(b"lo");
        w.int(0).int(0);
        (w.0, toc_len)
    }

    #[test]
    fn the_toc_is_read_with_sections_as_pg_restore_counts_them() {
        let (bytes, toc_len) = archive();
        let mut input = &bytes[..];
        let (toc, read) = Toc::read(&mut input);
        let toc = toc.unwrap();
        assert_eq!(toc.len, toc_len);
        assert_eq!(read, bytes[..toc_len as usize]);
        let sections: Vec<_> = toc.entries.iter().map(|e| (e.dump_id, e.section)).collect();
        use Section::*;
        assert_eq!(
            sections,
            [(1, PreData), (10, PreData), (11, PreData), (20, Data), (21, Data), (22, Data), (30, PostData)]
        );
        // The ACL waits for the end, as pg_restore's own passes would have it.
        assert_eq!(toc.split_before_data(), (vec![1, 10], vec![11, 20, 21, 22, 30]));
        assert_eq!(use_list(&[1, 10]), "1;\n10;\n");
    }

    #[test]
    fn blocks_are_found_however_the_bytes_are_cut() {
        let (bytes, toc_len) = archive();
        let toc = Toc::read(&mut &bytes[..]).0.unwrap();
        let data = &bytes[toc_len as usize..];
        for piece in [1, 2, 5, 7, 64, data.len()] {
            let mut walker = BlockWalker::new(&toc);
            for chunk in data.chunks(piece) {
                walker.feed(chunk);
            }
            assert!(walker.at_block_boundary(), "piece {piece}");
            let expected: HashMap<i32, u64> = [(20, toc_len), (21, toc_len + 1 + 5 + 5 + 3 + 5 + 300 + 5)].into();
            assert_eq!(walker.starts(), &expected, "piece {piece}");
        }
    }

    #[test]
    fn patches_set_the_offsets_of_blocks_seen_and_only_those() {
        let (mut bytes, toc_len) = archive();
        let toc = Toc::read(&mut &bytes[..]).0.unwrap();
        let mut walker = BlockWalker::new(&toc);
        walker.feed(&bytes[toc_len as usize..toc_len as usize + 20]);
        assert!(!walker.at_block_boundary());
        let patches = toc.offset_patches(walker.starts());
        assert_eq!(patches.len(), 1, "the large objects block was not reached");
        for (at, patch) in patches {
            bytes[at as usize..at as usize + patch.len()].copy_from_slice(&patch);
        }
        let patched = Toc::read(&mut &bytes[..]).0.unwrap();
        let table_data = patched.entries.iter().find(|e| e.dump_id == 20).unwrap();
        assert_eq!(table_data.offset_state, OFFSET_SET);
        let at = table_data.offset_at as usize + 1;
        assert_eq!(u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()), toc_len);
        assert!(patched.offset_patches(&HashMap::from([(20, 1)])).is_empty(), "an offset set is left as it is");
    }

    #[test]
    fn what_is_not_an_archive_of_a_known_version_is_refused_or_not_followed() {
        assert!(matches!(Toc::read(&mut &b"PGDMQ"[..]).0, Err(ArchiveError::NotCustomFormat)));
        let (mut bytes, toc_len) = archive();
        assert!(matches!(Toc::read(&mut &bytes[..40]).0, Err(ArchiveError::Malformed(_))));
        bytes[6] = 17;
        assert!(matches!(Toc::read(&mut &bytes[..]).0, Err(ArchiveError::Unsupported(1, 17, 0))));
        bytes[6] = 15;
        let toc = Toc::read(&mut &bytes[..]).0.unwrap();
        let mut walker = BlockWalker::new(&toc);
        walker.feed(&[9, 9, 9]);
        walker.feed(&bytes[toc_len as usize..]);
        assert!(walker.starts().is_empty() && !walker.at_block_boundary());
    }
}
