//! Change segments: what one capture poll stored, and the records that make it part of the stream.
//!
//! ```text
//! streams/<source>/<generation>/generation.json               the stream's start: slot, publication, start LSN
//! streams/<source>/<generation>/data/<start>-<end>.seg.zst.age age(zstd(segment bytes)), written first
//! streams/<source>/<generation>/segments/<start>.json          the segment's record, written second: the commit
//! streams/<source>/<generation>/head.json                      how far the stream is durable while nothing changes
//! ```
//! `<start>` and `<end>` are LSNs as 16 hex digits, so a listing is in stream order. A segment's bytes are
//! `DRSEG1\n`, then records of a tag byte, a big-endian u32 length and the payload: `P` one pgoutput message,
//! `S` the sequences' values (JSON) read after the poll, `E` the end.

use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pipeline::Sealed;

pub const STREAMS_PREFIX: &str = "streams/";
pub const FORMAT: u32 = 1;
const MAGIC: &[u8] = b"DRSEG1\n";
/// No pgoutput message comes near this: a length beyond it is damage, not a row.
const RECORD_LIMIT: u32 = 1 << 30;

/// An LSN as PostgreSQL prints it (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses PostgreSQL's `X/Y` form of an LSN.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// `streams/<source>/<generation>/`.
pub fn generation_prefix(source: &str, generation: &str) -> String {
    format!("{STREAMS_PREFIX}{source}/{generation}/")
}

/// One stream generation: one replication slot's life. A lost slot, or a new one, starts a new generation,
/// and only base backups taken within a generation can be carried forward by its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub format: u32,
    pub source: String,
    pub generation: String,
    pub slot: String,
    pub publication: String,
    pub database: String,
    /// `pg_control_system().system_identifier`: a slot of the same name on another server is not this stream.
    pub system_identifier: String,
    pub created_at: DateTime<Utc>,
    /// The slot's consistent point: every transaction that commits after it is in the stream.
    #[serde(with = "lsn_serde")]
    pub start_lsn: u64,
}

impl GenerationRecord {
    pub fn key(&self) -> String {
        format!("{}generation.json", generation_prefix(&self.source, &self.generation))
    }
}

/// A stored segment. Its presence commits the segment: the data object without it belongs to no stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub format: u32,
    pub source: String,
    pub generation: String,
    /// Every transaction committing at or after `start_lsn` and before `end_lsn` is in this segment.
    #[serde(with = "lsn_serde")]
    pub start_lsn: u64,
    #[serde(with = "lsn_serde")]
    pub end_lsn: u64,
    /// The server's clock when `end_lsn` was read: commits up to about then are in the stream.
    pub covered_until: DateTime<Utc>,
    pub first_commit: DateTime<Utc>,
    pub last_commit: DateTime<Utc>,
    pub transactions: u64,
    pub changes: u64,
    /// The largest transaction id in the segment, with its epoch: a base backup whose snapshot's xmin is above
    /// it holds every transaction of this segment already.
    pub max_xid: u64,
    /// The schema's digest (`slot::schema_fingerprint`) read after the segment's changes: a base with
    /// another one cannot be carried through this segment.
    #[serde(default)]
    pub schema: String,
    pub object: String,
    pub stored_size: u64,
    pub sha256: String,
    pub plain_size: u64,
}

impl SegmentRecord {
    pub fn key(&self) -> String {
        segment_key(&self.source, &self.generation, self.start_lsn)
    }

    pub fn expected(&self) -> Sealed {
        Sealed { stored_size: self.stored_size, sha256: self.sha256.clone(), plain_size: self.plain_size }
    }
}

pub fn segment_key(source: &str, generation: &str, start_lsn: u64) -> String {
    format!("{}segments/{start_lsn:016X}.json", generation_prefix(source, generation))
}

pub fn data_key(source: &str, generation: &str, start_lsn: u64, end_lsn: u64) -> String {
    format!("{}data/{start_lsn:016X}-{end_lsn:016X}.seg.zst.age", generation_prefix(source, generation))
}

/// Written when a poll found nothing to store: the stream is durable up to `lsn` and `covered_until` although
/// its newest segment is older. Overwritten in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRecord {
    #[serde(with = "lsn_serde")]
    pub lsn: u64,
    pub covered_until: DateTime<Utc>,
}

pub fn head_key(source: &str, generation: &str) -> String {
    format!("{}head.json", generation_prefix(source, generation))
}

/// A sequence's value after a segment's poll: replay sets it, since logical decoding does not carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
}

/// Writes a segment's bytes.
pub struct SegmentWriter<W: Write> {
    out: W,
}

impl<W: Write> std::fmt::Debug for SegmentWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentWriter")
    }
}

impl<W: Write> SegmentWriter<W> {
    pub fn new(mut out: W) -> io::Result<SegmentWriter<W>> {
        out.write_all(MAGIC)?;
        Ok(SegmentWriter { out })
    }

    pub fn message(&mut self, message: &[u8]) -> io::Result<()> {
        self.record(b'P', message)
    }

    /// The sequences and the end mark; the writer's output is returned for the caller to finish.
    pub fn finish(mut self, sequences: &[SequenceValue]) -> io::Result<W> {
        let json = serde_json::to_vec(sequences).map_err(io::Error::other)?;
        self.record(b'S', &json)?;
        self.record(b'E', &[])?;
        Ok(self.out)
    }

    fn record(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).ok().filter(|&len| len < RECORD_LIMIT);
        let len = len.ok_or_else(|| io::Error::other(format!("a {}-byte change is too large", payload.len())))?;
        self.out.write_all(&[tag])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(payload)
    }
}

/// One record of a segment, as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentItem {
    Message(Vec<u8>),
    Sequences(Vec<SequenceValue>),
}

/// Reads a segment's records; `Ok(None)` only after the end mark, so a segment cut short is an error.
pub struct SegmentReader<R: Read> {
    input: R,
    started: bool,
    ended: bool,
}

impl<R: Read> std::fmt::Debug for SegmentReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader").field("ended", &self.ended).finish()
    }
}

impl<R: Read> SegmentReader<R> {
    pub fn new(input: R) -> SegmentReader<R> {
        SegmentReader { input, started: false, ended: false }
    }

    pub fn next_item(&mut self) -> io::Result<Option<SegmentItem>> {
        if !self.started {
            let mut magic = [0; MAGIC.len()];
            self.input.read_exact(&mut magic)?;
            if magic != MAGIC {
                return Err(invalid("it does not start like a change segment"));
            }
            self.started = true;
        }
        if self.ended {
            return Ok(None);
        }
        let mut header = [0; 5];
        self.input.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => invalid("it ends without its end mark"),
            _ => e,
        })?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if len >= RECORD_LIMIT {
            return Err(invalid("a record's length is out of range"));
        }
        let mut payload = vec![0; len as usize];
        self.input.read_exact(&mut payload)?;
        match header[0] {
            b'P' => Ok(Some(SegmentItem::Message(payload))),
            b'S' => {
                let sequences = serde_json::from_slice(&payload).map_err(|e| invalid(&format!("sequences: {e}")))?;
                Ok(Some(SegmentItem::Sequences(sequences)))
            }
            b'E' => {
                self.ended = true;
                Ok(None)
            }
            other => Err(invalid(&format!("unknown record type {other}"))),
        }
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not a valid change segment: {reason}"))
}

/// LSNs in records as PostgreSQL prints them, so an operator can compare them with `pg_replication_slots`.
pub(super) mod lsn_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::lsn_text(*lsn))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_lsn(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an LSN")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_print_and_parse_like_postgresql() {
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16B374D848"), None);
        assert!(segment_key("app", "g", 0x1_0000_0000) < segment_key("app", "g", 0x2_0000_0000));
    }

    #[test]
    fn a_segment_reads_back_and_a_cut_one_does_not() {
        let sequences = vec![SequenceValue { schema: "public".into(), name: "posts_id_seq".into(), last_value: 42 }];
        let mut writer = SegmentWriter::new(Vec::new()).unwrap();
        writer.message(b"B123").unwrap();
        writer.message(b"C456").unwrap();
        let bytes = writer.finish(&sequences).unwrap();

        let mut reader = SegmentReader::new(&bytes[..]);
        let mut items = Vec::new();
        while let Some(item) = reader.next_item().unwrap() {
            items.push(item);
        }
        assert_eq!(
            items,
            vec![
                SegmentItem::Message(b"B123".to_vec()),
                SegmentItem::Message(b"C456".to_vec()),
                SegmentItem::Sequences(sequences)
            ]
        );

        let mut cut = SegmentReader::new(&bytes[..bytes.len() - 5]);
        let error = loop {
            match cut.next_item() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a cut segment read to its end"),
                Err(e) => break e,
            }
        };
        assert!(error.to_string().contains("end mark"), "{error}");
    }
}
