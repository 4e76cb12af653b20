//! The report's window: `--since 7d` (a duration before now) or `--since 2026-11-18T00:00:00Z` (a time), ending
//! at the moment the report is made.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// Where the window starts, as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the report's `now`.
    Ago(Duration),
    /// At this time.
    At(DateTime<Utc>),
}

impl Since {
    /// The window's start for a report made at `now`. A window must hold some time: a start at or after `now`
    /// is a usage error, not an empty report, because it can only be a typo or a clock far off.
    pub fn start(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let start = match self {
            Since::Ago(duration) => {
                chrono::Duration::from_std(*duration).ok().and_then(|d| now.checked_sub_signed(d)).ok_or_else(|| {
                    Error::Usage(format!("--since {}: too far back", humantime::format_duration(*duration)))
                })?
            }
            Since::At(time) => *time,
        };
        if start >= now {
            return Err(Error::Usage(format!(
                "--since {} is not in the past (now is {})",
                start.to_rfc3339(),
                now.to_rfc3339()
            )));
        }
        Ok(start)
    }
}

/// A `--since` value that is not a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAWindow {
    #[error("the window must be longer than zero")]
    Empty,
    #[error("expected a duration before now (7d, 36h, 2w) or an RFC 3339 time such as 2026-11-18T00:00:00Z")]
    Unparsable,
}

impl FromStr for Since {
    type Err = NotAWindow;

    fn from_str(text: &str) -> std::result::Result<Since, NotAWindow> {
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Ok(Since::At(time.with_timezone(&Utc)));
        }
        match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => Err(NotAWindow::Empty),
            Ok(duration) => Ok(Since::Ago(duration)),
            Err(_) => Err(NotAWindow::Unparsable),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap()
    }

    #[test]
    fn durations_count_back_from_now() {
        let start = |text: &str| text.parse::<Since>().unwrap().start(now()).unwrap();
        assert_eq!(start("7d"), Utc.with_ymd_and_hms(2026, 11, 18, 4, 0, 0).unwrap());
        assert_eq!(start("36h"), Utc.with_ymd_and_hms(2026, 11, 23, 16, 0, 0).unwrap());
        assert_eq!(start("1h 30m"), Utc.with_ymd_and_hms(2026, 11, 25, 2, 30, 0).unwrap());
        assert_eq!(start("2w"), Utc.with_ymd_and_hms(2026, 11, 11, 4, 0, 0).unwrap());
    }

    #[test]
    fn times_are_rfc3339_in_any_offset() {
        let since: Since = "2026-11-20T01:00:00+01:00".parse().unwrap();
        assert_eq!(since, Since::At(Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()));
        assert_eq!(since.start(now()).unwrap(), Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap());
    }

    #[test]
    fn nonsense_zero_and_the_future_are_refused() {
        for bad in ["yesterday", "7", "-7d", "", "2026-11-20"] {
            let err = bad.parse::<Since>().unwrap_err();
            assert!(err.to_string().contains("RFC 3339"), "{bad}: {err}");
        }
        assert!("0s".parse::<Since>().unwrap_err().to_string().contains("longer than zero"));
        let future: Since = "2026-11-26T00:00:00Z".parse().unwrap();
        assert!(matches!(future.start(now()), Err(Error::Usage(m)) if m.contains("not in the past")));
        assert!(matches!(Since::At(now()).start(now()), Err(Error::Usage(_))));
        let ages: Since = "100000000y".parse().unwrap();
        assert!(matches!(ages.start(now()), Err(Error::Usage(m)) if m.contains("too far back")));
    }
}
