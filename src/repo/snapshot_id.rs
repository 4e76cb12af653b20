//! Snapshot ids: `20261125T065012Z-3fa9c1`, the UTC start time and a 24-bit suffix.
//!
//! Ids sort by time as plain strings, so a listing of keys is already a timeline, and `--to TIME` needs no
//! manifest reads. The suffix's top 10 bits are the start's milliseconds, so two snapshots taken in the same
//! second still sort in order; its low 14 bits are random, keeping two hosts that start in the same
//! millisecond apart.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn new(time: DateTime<Utc>) -> SnapshotId {
        let millis = time.timestamp_subsec_millis().min(999);
        let suffix = (millis << 14) | (rand::random::<u32>() & 0x3fff);
        SnapshotId(format!("{}-{suffix:06x}", time.format(TIME_FORMAT)))
    }

    /// The start time encoded in the id (second precision).
    pub fn time(&self) -> DateTime<Utc> {
        // Validated at construction, so the prefix always parses.
        NaiveDateTime::parse_from_str(&self.0[..16], TIME_FORMAT).map(|t| t.and_utc()).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A text that is not a snapshot id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a snapshot id (like 20261125T065012Z-3fa9c1)")]
pub struct NotASnapshotId(String);

impl FromStr for SnapshotId {
    type Err = NotASnapshotId;

    fn from_str(s: &str) -> Result<SnapshotId, NotASnapshotId> {
        let valid = s.len() == 23
            && NaiveDateTime::parse_from_str(&s[..16], TIME_FORMAT).is_ok()
            && s.as_bytes()[16] == b'-'
            && s[17..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if valid { Ok(SnapshotId(s.to_string())) } else { Err(NotASnapshotId(s.to_string())) }
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = NotASnapshotId;
    fn try_from(s: String) -> Result<SnapshotId, NotASnapshotId> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `--to` names: `latest`, an id or unique id prefix, or an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    /// A full id or a prefix of one.
    Id(String),
    /// The newest snapshot taken at or before this time.
    AtOrBefore(DateTime<Utc>),
}

/// A `--to` value in none of the forms a [`Selector`] takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected `latest`, a snapshot id (or a unique prefix of one, at least 4 characters), \
     or an RFC 3339 time such as 2026-11-24T18:00:00Z"
)]
pub struct NotASelector;

impl FromStr for Selector {
    type Err = NotASelector;

    fn from_str(s: &str) -> Result<Selector, NotASelector> {
        if s == "latest" {
            return Ok(Selector::Latest);
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(s) {
            return Ok(Selector::AtOrBefore(time.with_timezone(&Utc)));
        }
        let looks_like_id =
            s.len() >= 4 && s.chars().all(|c| c.is_ascii_digit() || matches!(c, 'T' | 'Z' | '-' | 'a'..='f'));
        if looks_like_id {
            return Ok(Selector::Id(s.to_string()));
        }
        Err(NotASelector)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Latest => f.write_str("latest"),
            Selector::Id(id) => f.write_str(id),
            Selector::AtOrBefore(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_carry_their_time_and_sort_by_it() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 6, 50, 12).unwrap();
        let id = SnapshotId::new(t);
        assert!(id.as_str().starts_with("20261125T065012Z-"));
        assert_eq!(id.time(), t);
        assert_eq!(id.as_str().parse::<SnapshotId>().unwrap(), id);
        let later = SnapshotId::new(t + chrono::Duration::seconds(1));
        assert!(later > id);
        // Within one second, by milliseconds, whatever the random bits.
        for _ in 0..100 {
            let a = SnapshotId::new(t + chrono::Duration::milliseconds(998));
            let b = SnapshotId::new(t + chrono::Duration::milliseconds(999));
            assert!(id < a && a < b && b < later, "{id} {a} {b} {later}");
            assert_eq!(a.time(), t);
        }
        assert!("20261125T065012Z".parse::<SnapshotId>().is_err());
    }

    #[test]
    fn selectors_parse_or_explain() {
        assert_eq!("latest".parse::<Selector>().unwrap(), Selector::Latest);
        assert_eq!(
            "2026-11-24T18:00:00+01:00".parse::<Selector>().unwrap(),
            Selector::AtOrBefore(Utc.with_ymd_and_hms(2026, 11, 24, 17, 0, 0).unwrap())
        );
        assert_eq!("20261125T06".parse::<Selector>().unwrap(), Selector::Id("20261125T06".into()));
        let err = "yesterday".parse::<Selector>().unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
