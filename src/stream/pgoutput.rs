//! The messages of PostgreSQL's `pgoutput` logical decoding plugin, protocol version 1, as
//! `pg_logical_slot_peek_binary_changes` returns them (one message per row). The reference is the PostgreSQL
//! manual, "Logical Replication Message Formats"; only what a replay needs is kept, and every malformed
//! message is an error, never a guess.

use chrono::{DateTime, TimeZone, Utc};

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction starts; its changes follow, then [`Message::Commit`].
    Begin {
        final_lsn: u64,
        commit_time: DateTime<Utc>,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: DateTime<Utc>,
    },
    /// A table's shape, sent before its first change in each decoding session and after it changed.
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is the old key (replica identity index) when the key changed, or the whole old row under
    /// `REPLICA IDENTITY FULL`; without it, the key is in `new`.
    Update {
        relation: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    /// `old` is the key, or the whole row under `REPLICA IDENTITY FULL`.
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Origin, type and logical messages: nothing a replay applies.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub name: String,
    /// `d` (default: the primary key), `n` (nothing), `f` (full), `i` (an index).
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// Part of the replica identity key.
    pub key: bool,
    pub type_oid: u32,
}

/// One row's values, in the relation's column order.
pub type Tuple = Vec<Value>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch: not sent, so an update leaves it as it is.
    Unchanged,
    /// The type's text output.
    Text(String),
}

/// A message that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct Malformed(pub String);

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL timestamp (microseconds since 2000-01-01 UTC).
pub fn postgres_time(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros.saturating_add(POSTGRES_EPOCH_MICROS)).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Message {
    pub fn parse(bytes: &[u8]) -> Result<Message, Malformed> {
        let mut r = Reader { bytes, at: 0 };
        let tag = r.u8()?;
        let message = match tag {
            b'B' => Message::Begin { final_lsn: r.u64()?, commit_time: postgres_time(r.i64()?), xid: r.u32()? },
            b'C' => {
                let _flags = r.u8()?;
                Message::Commit { commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_time: postgres_time(r.i64()?) }
            }
            b'R' => Message::Relation(relation(&mut r)?),
            b'I' => {
                let relation = r.u32()?;
                r.expect(b'N')?;
                Message::Insert { relation, new: tuple(&mut r)? }
            }
            b'U' => {
                let relation = r.u32()?;
                let old = match r.u8()? {
                    b'K' | b'O' => {
                        let old = tuple(&mut r)?;
                        r.expect(b'N')?;
                        Some(old)
                    }
                    b'N' => None,
                    other => return Err(Malformed(format!("update: unexpected tuple kind {:?}", other as char))),
                };
                Message::Update { relation, old, new: tuple(&mut r)? }
            }
            b'D' => {
                let relation = r.u32()?;
                match r.u8()? {
                    b'K' | b'O' => Message::Delete { relation, old: tuple(&mut r)? },
                    other => return Err(Malformed(format!("delete: unexpected tuple kind {:?}", other as char))),
                }
            }
            b'T' => {
                let count = r.u32()?;
                let options = r.u8()?;
                let relations = (0..count).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
                Message::Truncate { relations, cascade: options & 1 != 0, restart_identity: options & 2 != 0 }
            }
            b'O' | b'Y' | b'M' => return Ok(Message::Other(tag)),
            other => return Err(Malformed(format!("unknown message type {:?}", other as char))),
        };
        if r.at != bytes.len() {
            return Err(Malformed(format!("{} bytes left after a {:?} message", bytes.len() - r.at, tag as char)));
        }
        Ok(message)
    }
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, Malformed> {
    let id = r.u32()?;
    let schema = r.string()?;
    let name = r.string()?;
    let replica_identity = r.u8()?;
    let count = r.u16()?;
    let mut columns = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let flags = r.u8()?;
        let name = r.string()?;
        let type_oid = r.u32()?;
        let _typmod = r.u32()?;
        columns.push(Column { name, key: flags & 1 != 0, type_oid });
    }
    Ok(Relation { id, schema, name, replica_identity, columns })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, Malformed> {
    let count = r.u16()?;
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        values.push(match r.u8()? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            b't' => {
                let len = r.u32()? as usize;
                let bytes = r.take(len)?;
                let text = std::str::from_utf8(bytes).map_err(|_| Malformed("a text value is not UTF-8".into()))?;
                Value::Text(text.to_string())
            }
            // Only sent when the subscriber asks for `binary`, which dr never does.
            other => return Err(Malformed(format!("unexpected column kind {:?}", other as char))),
        });
    }
    Ok(values)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| Malformed(format!("truncated at byte {} (wanted {n} more)", self.at)))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn expect(&mut self, tag: u8) -> Result<(), Malformed> {
        match self.u8()? {
            t if t == tag => Ok(()),
            t => Err(Malformed(format!("expected {:?}, found {:?}", tag as char, t as char))),
        }
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| Malformed("unterminated string".into()))?;
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| Malformed("a name is not UTF-8".into()))?;
        self.at += len + 1;
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begin_carries_the_commit_time_and_xid() {
        let mut bytes = vec![b'B'];
        bytes.extend(0x1234u64.to_be_bytes());
        bytes.extend(1_000_000i64.to_be_bytes());
        bytes.extend(725u32.to_be_bytes());
        let Message::Begin { final_lsn, commit_time, xid } = Message::parse(&bytes).unwrap() else { panic!() };
        assert_eq!((final_lsn, xid), (0x1234, 725));
        assert_eq!(commit_time.to_rfc3339(), "2000-01-01T00:00:01+00:00");
    }

    #[test]
    fn an_update_with_an_old_key_has_both_tuples() {
        let mut bytes = vec![b'U'];
        bytes.extend(16384u32.to_be_bytes());
        bytes.push(b'K');
        bytes.extend(2u16.to_be_bytes());
        bytes.extend([b't', 0, 0, 0, 1, b'1', b'n']);
        bytes.push(b'N');
        bytes.extend(2u16.to_be_bytes());
        bytes.extend([b't', 0, 0, 0, 1, b'2', b'u']);
        let message = Message::parse(&bytes).unwrap();
        let old = vec![Value::Text("1".into()), Value::Null];
        let new = vec![Value::Text("2".into()), Value::Unchanged];
        assert_eq!(message, Message::Update { relation: 16384, old: Some(old), new });
    }

    #[test]
    fn damage_is_an_error_not_a_guess() {
        assert!(Message::parse(b"").is_err());
        assert!(Message::parse(b"I\0\0\x40\0N\0\x01t\0\0\0\x05ab").is_err(), "a value cut short");
        assert!(Message::parse(b"Z").is_err(), "an unknown type");
        let mut bytes = vec![b'T'];
        bytes.extend(1u32.to_be_bytes());
        bytes.push(0);
        bytes.extend(7u32.to_be_bytes());
        bytes.push(0);
        assert!(Message::parse(&bytes).is_err(), "bytes after the end");
    }
}
