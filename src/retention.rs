//! Which snapshots a retention policy keeps: restic's `forget` rules, as a pure function of snapshot times.
//!
//! docs/retention.md is the reference, with worked examples. In short, over the snapshots newest first:
//! - `keep_last N` keeps the N newest;
//! - `keep_hourly N` (daily, weekly, monthly, yearly alike) keeps the newest snapshot of each of the last N
//!   hours *that have a snapshot*: an hour without one is skipped, not counted. Periods are calendar periods in
//!   UTC; weeks are ISO weeks (Monday to Sunday, numbered in their ISO year, so 2027-01-01 is in 2026-W53);
//! - when a period rule still has counts left after the oldest snapshot, that oldest snapshot is kept too,
//!   which keeps the history as long as the policy allows (restic does the same since 0.16);
//! - a snapshot kept by any rule is kept, and every rule that keeps it is recorded as a [`Reason`].
//!
//! A snapshot's time is the one in its id (its start, to the second, UTC): the same time `--to` selects by.
//! The refusals (an empty policy, a policy that would keep nothing) and the drill-verified snapshot are the
//! engine's business (`engine::prune`): this module only says what the policy keeps.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::config::RetentionConfig;
use crate::repo::snapshot_id::SnapshotId;

/// Checks `[retention]` beyond what serde does: `repack_below` is a share, 0 to 1.
pub fn validate(retention: &RetentionConfig) -> crate::Result<()> {
    match retention.repack_below {
        Some(share) if !(0.0..=1.0).contains(&share) => Err(crate::Error::ConfigInvalid(format!(
            "[retention] repack_below = {share} is not a share: use 0 (never repack) to 1 (repack any pack with a \
             dead chunk); the default is 0.8"
        ))),
        _ => Ok(()),
    }
}

/// The `[retention]` counts; 0 is a rule that is not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}

impl Policy {
    pub fn from_config(config: &RetentionConfig) -> Policy {
        Policy {
            keep_last: config.keep_last.unwrap_or(0),
            keep_hourly: config.keep_hourly.unwrap_or(0),
            keep_daily: config.keep_daily.unwrap_or(0),
            keep_weekly: config.keep_weekly.unwrap_or(0),
            keep_monthly: config.keep_monthly.unwrap_or(0),
            keep_yearly: config.keep_yearly.unwrap_or(0),
        }
    }

    /// No rule set (or every count 0): such a policy keeps nothing, and prune refuses it.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0 && Period::ALL.iter().all(|&period| self.count(period) == 0)
    }

    pub fn count(&self, period: Period) -> u32 {
        match period {
            Period::Hourly => self.keep_hourly,
            Period::Daily => self.keep_daily,
            Period::Weekly => self.keep_weekly,
            Period::Monthly => self.keep_monthly,
            Period::Yearly => self.keep_yearly,
        }
    }
}

/// `keep_last 3, keep_daily 7`: the rules that are set, as they are written in `[retention]`.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rules = Vec::new();
        if self.keep_last > 0 {
            rules.push(format!("keep_last {}", self.keep_last));
        }
        for period in Period::ALL {
            if self.count(period) > 0 {
                rules.push(format!("keep_{} {}", period.name(), self.count(period)));
            }
        }
        if rules.is_empty() { f.write_str("no rule") } else { f.write_str(&rules.join(", ")) }
    }
}

/// A calendar period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hourly,
    Daily,
    /// ISO 8601 weeks: Monday 00:00 to Sunday 23:59:59, in the ISO week-numbering year.
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly, Period::Yearly];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Period::Hourly => "hours",
            Period::Daily => "days",
            Period::Weekly => "weeks",
            Period::Monthly => "months",
            Period::Yearly => "years",
        }
    }

    /// The period `time` falls in, named so that it reads in the output: `2026-11-24T18` (an hour),
    /// `2026-11-24`, `2026-W48`, `2026-11`, `2026`.
    pub fn bucket(self, time: DateTime<Utc>) -> String {
        match self {
            Period::Hourly => format!("{}T{:02}", time.format("%Y-%m-%d"), time.hour()),
            Period::Daily => time.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let week = time.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            Period::Monthly => time.format("%Y-%m").to_string(),
            Period::Yearly => time.year().to_string(),
        }
    }
}

/// Why the policy keeps a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// One of the newest `keep_last` (the count).
    Last(u32),
    /// The newest snapshot of this period (hour, day, ISO week, month, year).
    Newest(Period, String),
    /// The oldest snapshot, kept because the period rule had counts left: fewer periods have snapshots than
    /// it asks for (the count).
    Oldest(Period, u32),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last(count) => write!(f, "last {count}"),
            Reason::Newest(period, bucket) => write!(f, "{} {bucket}", period.name()),
            Reason::Oldest(period, count) => {
                write!(f, "oldest snapshot (keep_{} {count}: fewer {} have one)", period.name(), period.unit())
            }
        }
    }
}

/// The policy's verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub id: SnapshotId,
    /// Every rule that keeps it, in the order of the rules (last, hourly, ..., yearly); empty: not kept.
    pub reasons: Vec<Reason>,
}

impl Verdict {
    pub fn kept(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Applies `policy` to the snapshots `ids` (in any order); returns one verdict per snapshot, newest first.
/// Ids sort by time, and within one second by their suffix, so the order is total.
pub fn apply(ids: &[SnapshotId], policy: &Policy) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = ids.iter().map(|id| Verdict { id: id.clone(), reasons: Vec::new() }).collect();
    verdicts.sort_by(|a, b| b.id.cmp(&a.id));
    verdicts.dedup_by(|a, b| a.id == b.id);

    for verdict in verdicts.iter_mut().take(policy.keep_last as usize) {
        verdict.reasons.push(Reason::Last(policy.keep_last));
    }
    for period in Period::ALL {
        let count = policy.count(period);
        let mut left = count;
        let mut previous: Option<String> = None;
        let oldest = verdicts.len().saturating_sub(1);
        for (position, verdict) in verdicts.iter_mut().enumerate() {
            if left == 0 {
                break;
            }
            let bucket = period.bucket(verdict.id.time());
            if previous.as_ref() != Some(&bucket) {
                // Newest first: the first snapshot seen in a period is its newest.
                verdict.reasons.push(Reason::Newest(period, bucket.clone()));
                previous = Some(bucket);
                left -= 1;
            } else if position == oldest {
                verdict.reasons.push(Reason::Oldest(period, count));
            }
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDateTime, TimeDelta, TimeZone};
    use std::collections::{BTreeMap, BTreeSet};

    /// `"2026-11-24 18:05"` or `"2026-11-24 18:05:30"`, UTC.
    fn time(text: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .and_utc()
    }

    /// An id at `time` whose suffix is `n`: ids of the same second sort by it.
    fn id_at(time: DateTime<Utc>, n: usize) -> SnapshotId {
        format!("{}-{n:06x}", time.format("%Y%m%dT%H%M%SZ")).parse().unwrap()
    }

    fn ids(times: &[&str]) -> Vec<SnapshotId> {
        times.iter().enumerate().map(|(n, t)| id_at(time(t), n)).collect()
    }

    /// `"last=3 daily=7"`.
    fn policy(text: &str) -> Policy {
        let mut policy = Policy::default();
        for rule in text.split_whitespace() {
            let (name, count) = rule.split_once('=').unwrap();
            let count: u32 = count.parse().unwrap();
            match name {
                "last" => policy.keep_last = count,
                "hourly" => policy.keep_hourly = count,
                "daily" => policy.keep_daily = count,
                "weekly" => policy.keep_weekly = count,
                "monthly" => policy.keep_monthly = count,
                "yearly" => policy.keep_yearly = count,
                other => panic!("unknown rule {other}"),
            }
        }
        policy
    }

    /// The times (`%Y-%m-%d %H:%M:%S`) the policy keeps, newest first.
    fn kept(times: &[&str], rules: &str) -> Vec<String> {
        apply(&ids(times), &policy(rules))
            .iter()
            .filter(|v| v.kept())
            .map(|v| v.id.time().format("%Y-%m-%d %H:%M:%S").to_string())
            .collect()
    }

    fn full(times: &[&str]) -> Vec<String> {
        times.iter().map(|t| time(t).format("%Y-%m-%d %H:%M:%S").to_string()).collect()
    }

    /// Snapshots every `step` from `first` while before `end`, as times.
    fn series(first: &str, end: &str, step: TimeDelta) -> Vec<DateTime<Utc>> {
        let (mut at, end) = (time(first), time(end));
        let mut times = Vec::new();
        while at < end {
            times.push(at);
            at += step;
        }
        times
    }

    struct Case {
        name: &'static str,
        policy: &'static str,
        snapshots: &'static [&'static str],
        /// Newest first.
        kept: &'static [&'static str],
    }

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        Case {
            name: "no snapshots",
            policy: "last=3 daily=7",
            snapshots: &[],
            kept: &[],
        },
        Case {
            name: "a single snapshot is kept by any rule",
            policy: "yearly=1",
            snapshots: &["2026-11-24 04:00"],
            kept: &["2026-11-24 04:00"],
        },
        Case {
            name: "keep_last 1 keeps the newest",
            policy: "last=1",
            snapshots: &["2026-11-20 04:00", "2026-11-21 04:00", "2026-11-22 04:00"],
            kept: &["2026-11-22 04:00"],
        },
        Case {
            name: "keep_last 3 of 5",
            policy: "last=3",
            snapshots: &[
                "2026-11-20 04:00", "2026-11-21 04:00", "2026-11-22 04:00", "2026-11-23 04:00", "2026-11-24 04:00",
            ],
            kept: &["2026-11-24 04:00", "2026-11-23 04:00", "2026-11-22 04:00"],
        },
        Case {
            name: "keep_last larger than the list keeps everything",
            policy: "last=10",
            snapshots: &["2026-11-20 04:00", "2026-11-21 04:00"],
            kept: &["2026-11-21 04:00", "2026-11-20 04:00"],
        },
        Case {
            name: "the input order does not matter",
            policy: "last=2",
            snapshots: &["2026-11-22 04:00", "2026-11-20 04:00", "2026-11-24 04:00", "2026-11-21 04:00"],
            kept: &["2026-11-24 04:00", "2026-11-22 04:00"],
        },
        Case {
            name: "same-hour duplicates: the newest of each hour",
            policy: "hourly=2",
            snapshots: &[
                "2026-11-24 10:05", "2026-11-24 10:35", "2026-11-24 11:10", "2026-11-24 11:50", "2026-11-24 12:20",
            ],
            kept: &["2026-11-24 12:20", "2026-11-24 11:50"],
        },
        Case {
            name: "hours without snapshots are skipped, not counted",
            policy: "hourly=3",
            snapshots: &[
                "2026-11-24 01:10", "2026-11-24 02:10", "2026-11-24 02:40", "2026-11-24 05:10", "2026-11-24 05:30",
            ],
            kept: &["2026-11-24 05:30", "2026-11-24 02:40", "2026-11-24 01:10"],
        },
        Case {
            name: "counts left over keep the oldest snapshot too",
            policy: "hourly=5",
            snapshots: &[
                "2026-11-24 10:05", "2026-11-24 10:35", "2026-11-24 11:10", "2026-11-24 11:50", "2026-11-24 12:20",
            ],
            kept: &["2026-11-24 12:20", "2026-11-24 11:50", "2026-11-24 10:35", "2026-11-24 10:05"],
        },
        Case {
            name: "a rule whose count is used up exactly does not keep the oldest",
            policy: "daily=3",
            snapshots: &["2026-11-22 01:00", "2026-11-22 13:00", "2026-11-23 13:00", "2026-11-24 13:00"],
            kept: &["2026-11-24 13:00", "2026-11-23 13:00", "2026-11-22 13:00"],
        },
        Case {
            name: "an hour is :00 to :59, in UTC",
            policy: "hourly=2",
            snapshots: &["2026-11-24 09:59:59", "2026-11-24 10:00:00", "2026-11-24 10:59:59"],
            kept: &["2026-11-24 10:59:59", "2026-11-24 09:59:59"],
        },
        Case {
            name: "seven days of daily snapshots out of ten",
            policy: "daily=7",
            snapshots: &[
                "2026-11-15 04:00", "2026-11-16 04:00", "2026-11-17 04:00", "2026-11-18 04:00", "2026-11-19 04:00",
                "2026-11-20 04:00", "2026-11-21 04:00", "2026-11-22 04:00", "2026-11-23 04:00", "2026-11-24 04:00",
            ],
            kept: &[
                "2026-11-24 04:00", "2026-11-23 04:00", "2026-11-22 04:00", "2026-11-21 04:00", "2026-11-20 04:00",
                "2026-11-19 04:00", "2026-11-18 04:00",
            ],
        },
        Case {
            name: "daily with gaps reaches back to the seventh day that has a snapshot",
            policy: "daily=7",
            snapshots: &[
                "2026-10-01 04:00", "2026-10-02 04:00", "2026-10-05 04:00", "2026-10-09 04:00", "2026-10-10 04:00",
                "2026-10-10 16:00", "2026-10-20 04:00", "2026-10-21 04:00", "2026-10-22 04:00", "2026-10-22 16:00",
            ],
            kept: &[
                "2026-10-22 16:00", "2026-10-21 04:00", "2026-10-20 04:00", "2026-10-10 16:00", "2026-10-09 04:00",
                "2026-10-05 04:00", "2026-10-02 04:00",
            ],
        },
        Case {
            name: "several a day: the newest of each day",
            policy: "daily=2",
            snapshots: &[
                "2026-11-23 00:00", "2026-11-23 12:00", "2026-11-23 23:59:59", "2026-11-24 00:00", "2026-11-24 06:00",
            ],
            kept: &["2026-11-24 06:00", "2026-11-23 23:59:59"],
        },
        Case {
            name: "a day ends at midnight UTC",
            policy: "daily=2",
            snapshots: &["2026-11-23 23:59:58", "2026-11-23 23:59:59", "2026-11-24 00:00:00"],
            kept: &["2026-11-24 00:00:00", "2026-11-23 23:59:59"],
        },
        Case {
            name: "same-second duplicates: keep_last 1 keeps the one that sorts last",
            policy: "last=1",
            snapshots: &["2026-11-24 04:00:00", "2026-11-24 04:00:00", "2026-11-24 04:00:00"],
            kept: &["2026-11-24 04:00:00"],
        },
        Case {
            name: "restic's example: twelve Sundays, keep_daily 4 keeps the last four",
            policy: "daily=4",
            snapshots: &[
                "2019-09-01 11:00", "2019-09-08 11:00", "2019-09-15 11:00", "2019-09-22 11:00", "2019-09-29 11:00",
                "2019-10-06 11:00", "2019-10-13 11:00", "2019-10-20 11:00", "2019-10-27 11:00", "2019-11-03 11:00",
                "2019-11-10 11:00", "2019-11-17 11:00",
            ],
            kept: &["2019-11-17 11:00", "2019-11-10 11:00", "2019-11-03 11:00", "2019-10-27 11:00"],
        },
        Case {
            name: "a week runs Monday to Sunday",
            policy: "weekly=2",
            snapshots: &["2026-11-15 23:00", "2026-11-16 01:00", "2026-11-22 23:59", "2026-11-23 00:00"],
            kept: &["2026-11-23 00:00", "2026-11-22 23:59"],
        },
        Case {
            name: "ISO week 53: 2026-12-28 to 2027-01-03 is one week across the new year",
            policy: "weekly=2",
            snapshots: &[
                "2026-12-27 12:00", "2026-12-28 12:00", "2027-01-01 12:00", "2027-01-03 12:00", "2027-01-04 12:00",
            ],
            kept: &["2027-01-04 12:00", "2027-01-03 12:00"],
        },
        Case {
            name: "ISO week 1 may begin in December",
            policy: "weekly=2",
            snapshots: &["2024-12-29 12:00", "2024-12-30 12:00", "2025-01-02 12:00"],
            kept: &["2025-01-02 12:00", "2024-12-29 12:00"],
        },
        Case {
            name: "yearly follows the calendar year, not the ISO year",
            policy: "yearly=2",
            snapshots: &["2026-12-30 12:00", "2026-12-31 23:59:59", "2027-01-01 00:00", "2027-01-02 12:00"],
            kept: &["2027-01-02 12:00", "2026-12-31 23:59:59"],
        },
        Case {
            name: "weeks without snapshots are skipped",
            policy: "weekly=3",
            snapshots: &[
                "2026-09-07 04:00", "2026-10-05 04:00", "2026-10-06 04:00", "2026-11-16 04:00", "2026-11-24 04:00",
            ],
            kept: &["2026-11-24 04:00", "2026-11-16 04:00", "2026-10-06 04:00"],
        },
        Case {
            name: "monthly across month ends and a leap day",
            policy: "monthly=3",
            snapshots: &[
                "2028-01-31 23:59", "2028-02-01 00:00", "2028-02-29 12:00", "2028-03-01 00:00", "2028-03-15 00:00",
            ],
            kept: &["2028-03-15 00:00", "2028-02-29 12:00", "2028-01-31 23:59"],
        },
        Case {
            name: "yearly over five years keeps each year's last",
            policy: "yearly=3",
            snapshots: &[
                "2022-06-01 04:00", "2022-12-31 04:00", "2023-12-31 04:00", "2024-06-01 04:00", "2024-12-31 04:00",
                "2025-12-31 04:00", "2026-03-01 04:00", "2026-11-24 04:00",
            ],
            kept: &["2026-11-24 04:00", "2025-12-31 04:00", "2024-12-31 04:00"],
        },
        Case {
            name: "yearly with counts left keeps the very first snapshot as well",
            policy: "yearly=10",
            snapshots: &["2024-06-01 04:00", "2024-12-31 04:00", "2025-12-31 04:00", "2026-11-24 04:00"],
            kept: &["2026-11-24 04:00", "2025-12-31 04:00", "2024-12-31 04:00", "2024-06-01 04:00"],
        },
        Case {
            name: "the oldest alone in its period is kept as that period's newest",
            policy: "weekly=10",
            snapshots: &["2026-11-02 04:00", "2026-11-16 04:00", "2026-11-17 04:00"],
            kept: &["2026-11-17 04:00", "2026-11-02 04:00"],
        },
        Case {
            name: "rules are ORed: keep_last and keep_daily on the same day",
            policy: "last=2 daily=2",
            snapshots: &[
                "2026-11-23 06:00", "2026-11-23 18:00", "2026-11-24 06:00", "2026-11-24 12:00", "2026-11-24 18:00",
            ],
            kept: &["2026-11-24 18:00", "2026-11-24 12:00", "2026-11-23 18:00"],
        },
        Case {
            name: "hourly and daily together",
            policy: "hourly=3 daily=3",
            snapshots: &[
                "2026-11-22 09:00", "2026-11-22 21:00", "2026-11-23 21:00", "2026-11-24 08:10", "2026-11-24 08:40",
                "2026-11-24 09:10", "2026-11-24 10:10",
            ],
            kept: &[
                "2026-11-24 10:10", "2026-11-24 09:10", "2026-11-24 08:40", "2026-11-23 21:00", "2026-11-22 21:00",
            ],
        },
        Case {
            name: "every count zero keeps nothing (prune refuses such a policy)",
            policy: "last=0 daily=0",
            snapshots: &["2026-11-23 04:00", "2026-11-24 04:00"],
            kept: &[],
        },
        Case {
            name: "one rule at 0 is simply unset",
            policy: "last=0 daily=1",
            snapshots: &["2026-11-23 04:00", "2026-11-24 04:00"],
            kept: &["2026-11-24 04:00"],
        },
        Case {
            name: "monthly with counts left keeps the oldest of the first month too",
            policy: "monthly=6",
            snapshots: &["2026-09-01 04:00", "2026-09-30 04:00", "2026-10-31 04:00", "2026-11-24 04:00"],
            kept: &["2026-11-24 04:00", "2026-10-31 04:00", "2026-09-30 04:00", "2026-09-01 04:00"],
        },
        Case {
            name: "a future-dated snapshot is simply the newest",
            policy: "last=1 daily=1",
            snapshots: &["2026-11-24 04:00", "2099-01-01 00:00"],
            kept: &["2099-01-01 00:00"],
        },
        Case {
            name: "weekly 4 over Sunday-night backups picks the Sundays",
            policy: "weekly=4",
            snapshots: &[
                "2026-11-01 23:00", "2026-11-02 23:00", "2026-11-08 23:00", "2026-11-09 23:00", "2026-11-15 23:00",
                "2026-11-16 23:00", "2026-11-22 23:00", "2026-11-23 23:00",
            ],
            kept: &["2026-11-23 23:00", "2026-11-22 23:00", "2026-11-15 23:00", "2026-11-08 23:00"],
        },
    ];

    #[test]
    fn the_table_of_policies() {
        assert!(CASES.len() >= 30, "{} cases", CASES.len());
        for case in CASES {
            assert_eq!(kept(case.snapshots, case.policy), full(case.kept), "{}: {}", case.name, case.policy);
        }
    }

    #[test]
    fn reasons_name_every_rule_that_keeps_a_snapshot() {
        let ids = ids(&["2026-11-22 04:00", "2026-11-23 04:00", "2026-11-23 16:00", "2026-11-24 04:00"]);
        let verdicts = apply(&ids, &policy("last=2 daily=7 weekly=4 monthly=12 yearly=5"));
        let reasons: Vec<Vec<String>> =
            verdicts.iter().map(|v| v.reasons.iter().map(|r| r.to_string()).collect()).collect();
        assert_eq!(
            reasons,
            [
                vec!["last 2", "daily 2026-11-24", "weekly 2026-W48", "monthly 2026-11", "yearly 2026"],
                // 2026-11-23 is a Monday: week 48 began, so the Sunday before is week 47's newest.
                vec!["last 2", "daily 2026-11-23"],
                vec![],
                vec![
                    "daily 2026-11-22",
                    "weekly 2026-W47",
                    "oldest snapshot (keep_monthly 12: fewer months have one)",
                    "oldest snapshot (keep_yearly 5: fewer years have one)",
                ],
            ]
        );
        assert_eq!(verdicts[0].id, ids[3], "newest first");
        assert_eq!(Period::Hourly.bucket(time("2026-11-24 07:59:59")), "2026-11-24T07");
    }

    #[test]
    fn restics_daily_weekly_monthly_yearly_example() {
        // One snapshot a day (at 04:00) from 2023-01-01 to 2026-11-24, a Tuesday: restic's docs say
        // `--keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 75` keeps the 7 dailies, the week-ends
        // the dailies do not already hold (here they span two ISO weeks: 3 more), 11 or 12 month-ends, the
        // year-ends, and, with yearly counts left over, the very first snapshot.
        let times = series("2023-01-01 04:00", "2026-11-25 00:00", TimeDelta::days(1));
        let ids: Vec<SnapshotId> = times.iter().enumerate().map(|(n, t)| id_at(*t, n)).collect();
        let verdicts = apply(&ids, &policy("daily=7 weekly=5 monthly=12 yearly=75"));
        let kept: Vec<String> =
            verdicts.iter().filter(|v| v.kept()).map(|v| v.id.time().format("%Y-%m-%d").to_string()).collect();
        let expected = [
            // 7 dailies: 2026-11-18 (Wednesday) to 2026-11-24.
            "2026-11-24",
            "2026-11-23",
            "2026-11-22",
            "2026-11-21",
            "2026-11-20",
            "2026-11-19",
            "2026-11-18",
            // The Sundays of weeks 46 to 44 (week 48's newest is 11-24, week 47's Sunday 11-22 is a daily).
            "2026-11-15",
            "2026-11-08",
            "2026-11-01",
            // Month ends, December 2025 to October 2026 (November's newest is 11-24): 11 more.
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            "2026-06-30",
            "2026-05-31",
            "2026-04-30",
            "2026-03-31",
            "2026-02-28",
            "2026-01-31",
            "2025-12-31",
            // Year ends of 2024 and 2023 (2025's is the December month end), then the oldest.
            "2024-12-31",
            "2023-12-31",
            "2023-01-01",
        ];
        assert_eq!(kept, expected);
        let first = verdicts.last().unwrap();
        assert_eq!(first.reasons, [Reason::Oldest(Period::Yearly, 75)]);
    }

    /// The rules as docs/retention.md states them, written the other way round: group by period, take the
    /// newest N periods, keep each one's newest; plus the oldest snapshot when fewer periods than N exist.
    fn reference(times: &[DateTime<Utc>], policy: &Policy) -> BTreeSet<DateTime<Utc>> {
        let mut sorted = times.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut kept: BTreeSet<DateTime<Utc>> = sorted.iter().rev().take(policy.keep_last as usize).copied().collect();
        for period in Period::ALL {
            let count = policy.count(period) as usize;
            if count == 0 {
                continue;
            }
            let mut newest: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
            for t in &sorted {
                let entry = newest.entry(period.bucket(*t)).or_insert(*t);
                *entry = (*entry).max(*t);
            }
            let mut newest_first: Vec<DateTime<Utc>> = newest.values().copied().collect();
            newest_first.sort_by(|a, b| b.cmp(a));
            kept.extend(newest_first.iter().take(count));
            if newest_first.len() < count
                && let Some(first) = sorted.first()
            {
                kept.insert(*first);
            }
        }
        kept
    }

    #[test]
    fn random_timelines_match_the_rules_as_documented() {
        let start = Utc.with_ymd_and_hms(2025, 12, 20, 0, 0, 0).unwrap();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for round in 0..300 {
            let n = next(60) as usize;
            // Spread over a few hours, a few weeks or a few years, so that every rule sees repeats and gaps.
            let span = [6 * 3600, 40 * 86_400, 900 * 86_400][round % 3];
            let mut times: Vec<DateTime<Utc>> = (0..n).map(|_| start + TimeDelta::seconds(next(span) as i64)).collect();
            times.sort();
            times.dedup();
            let policy = Policy {
                keep_last: next(4) as u32,
                keep_hourly: next(5) as u32,
                keep_daily: next(8) as u32,
                keep_weekly: next(6) as u32,
                keep_monthly: next(5) as u32,
                keep_yearly: next(3) as u32,
            };
            let ids: Vec<SnapshotId> = times.iter().enumerate().map(|(i, t)| id_at(*t, i)).collect();
            let got: BTreeSet<DateTime<Utc>> =
                apply(&ids, &policy).iter().filter(|v| v.kept()).map(|v| v.id.time()).collect();
            assert_eq!(got, reference(&times, &policy), "round {round}, {policy}, {times:?}");
            if !policy.is_empty() && !times.is_empty() {
                assert!(got.contains(times.last().unwrap()), "a policy that is set always keeps the newest");
            }
        }
    }

    #[test]
    fn the_policy_in_docs_retention_md_parses() {
        let doc = include_str!("../docs/retention.md");
        let block = doc.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a toml block");
        let config = crate::Config::parse(block, std::path::Path::new("/etc/dr/dr.toml")).unwrap();
        assert_eq!(
            Policy::from_config(&config.retention).to_string(),
            "keep_last 3, keep_daily 7, keep_weekly 4, keep_monthly 12, keep_yearly 3"
        );
        assert_eq!(config.retention.orphan_grace, Some(std::time::Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn policies_read_like_the_configuration() {
        let config =
            RetentionConfig { keep_last: Some(3), keep_daily: Some(7), keep_weekly: Some(0), ..Default::default() };
        let policy = Policy::from_config(&config);
        assert_eq!(policy.to_string(), "keep_last 3, keep_daily 7");
        assert!(!policy.is_empty());
        assert!(Policy::from_config(&RetentionConfig::default()).is_empty());
        assert!(Policy::from_config(&RetentionConfig { keep_yearly: Some(0), ..Default::default() }).is_empty());
        assert_eq!(Policy::default().to_string(), "no rule");
    }
}
