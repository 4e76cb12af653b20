//! The report's arithmetic on the snapshot timeline, kept free of I/O so it can be tested on crafted times: the
//! worst RPO gap and the per-day totals.

use chrono::{DateTime, NaiveDate, Utc};

use super::{BackupAttempt, Day, GapBasis, RpoGap, SnapshotSummary};
use crate::repo::snapshot_id::SnapshotId;

/// A committed snapshot as a moment the site could be restored to.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPoint {
    pub snapshot: SnapshotId,
    pub at: DateTime<Utc>,
    /// Known only from a backup attempt record: the snapshot was removed since (by `dr prune`). It was a
    /// recovery point while it existed, so it closes a gap all the same.
    pub removed: bool,
}

/// The longest stretch the window spent without a newer recovery point: what an incident at its worst moment
/// would have lost. Three kinds of stretch count:
/// - between consecutive snapshots inside the window;
/// - from the last snapshot before the window to the first one inside it (the window opens mid-gap);
/// - from the newest snapshot to `now` (the gap still open when the report is made).
///
/// Without any snapshot at or before `now` there is no gap to measure: the report says so instead.
pub fn worst_gap(
    before_window: Option<&RecoveryPoint>,
    inside: &[RecoveryPoint],
    now: DateTime<Utc>,
    objective_seconds: Option<f64>,
    basis: GapBasis,
) -> Option<RpoGap> {
    let mut points: Vec<&RecoveryPoint> = before_window.into_iter().chain(inside).filter(|p| p.at <= now).collect();
    points.sort_by_key(|p| p.at);
    let removed_snapshots = points.iter().filter(|p| p.removed).count();
    let mut worst: Option<RpoGap> = None;
    let mut consider = |from: &RecoveryPoint, to: Option<&RecoveryPoint>| {
        let end = to.map_or(now, |p| p.at);
        let seconds = (end - from.at).num_milliseconds() as f64 / 1000.0;
        if worst.as_ref().is_none_or(|w| seconds > w.seconds) {
            worst = Some(RpoGap {
                seconds,
                from_snapshot: from.snapshot.clone(),
                from: from.at,
                to_snapshot: to.map(|p| p.snapshot.clone()),
                to: end,
                objective_seconds,
                met: objective_seconds.map(|objective| seconds <= objective),
                basis,
                removed_snapshots,
            });
        }
    };
    for pair in points.windows(2) {
        consider(pair[0], Some(pair[1]));
    }
    if let Some(last) = points.last() {
        consider(last, None);
    }
    worst
}

/// One row per calendar day (UTC) the window touches, oldest first, days without a snapshot included: an empty
/// day is exactly what the reader should see. A day that ended before `history_start` (the repository's
/// earliest trace) is marked not applicable: nothing could have been backed up into it yet.
pub fn days(
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    snapshots: &[SnapshotSummary],
    failed_backups: &[BackupAttempt],
    history_start: Option<DateTime<Utc>>,
) -> Vec<Day> {
    let ended_before_history = |date: NaiveDate| {
        let next_midnight = date.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
        matches!((history_start, next_midnight), (Some(first), Some(end)) if end <= first)
    };
    let mut days: Vec<Day> = first_to_last(start.date_naive(), now.date_naive())
        .map(|date| Day {
            date,
            applicable: !ended_before_history(date),
            snapshots: 0,
            backups_failed: 0,
            stored_bytes: 0,
            plain_bytes: 0,
        })
        .collect();
    for attempt in failed_backups {
        if let Some(day) = days.iter_mut().find(|d| d.date == attempt.started_at.date_naive()) {
            day.backups_failed += 1;
        }
    }
    for snapshot in snapshots {
        if let Some(day) = days.iter_mut().find(|d| d.date == snapshot.started_at.date_naive()) {
            day.snapshots += 1;
            day.stored_bytes += snapshot.stored_bytes;
            day.plain_bytes += snapshot.plain_bytes;
        }
    }
    days
}

fn first_to_last(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |d| *d <= last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn point(day: u32, hour: u32) -> RecoveryPoint {
        RecoveryPoint { snapshot: SnapshotId::new(at(day, hour)), at: at(day, hour), removed: false }
    }

    #[test]
    fn the_worst_gap_is_the_longest_between_consecutive_snapshots() {
        let inside = [point(19, 3), point(20, 3), point(21, 9), point(22, 3)];
        let gap = worst_gap(None, &inside, at(22, 6), Some(86_400.0), GapBasis::Snapshots).unwrap();
        assert_eq!(gap.seconds, 30.0 * 3600.0);
        assert_eq!((gap.from, gap.to), (at(20, 3), at(21, 9)));
        assert_eq!(gap.from_snapshot, inside[1].snapshot);
        assert_eq!(gap.to_snapshot.as_ref(), Some(&inside[2].snapshot));
        assert_eq!(gap.met, Some(false));
        // Unordered input is ordered by recovery point.
        let shuffled = [point(22, 3), point(19, 3), point(21, 9), point(20, 3)];
        assert_eq!(worst_gap(None, &shuffled, at(22, 6), None, GapBasis::Snapshots).unwrap().seconds, 30.0 * 3600.0);
    }

    #[test]
    fn the_gap_into_the_window_and_the_gap_still_open_count() {
        let before = point(15, 0);
        let inside = [point(19, 0), point(19, 12)];
        let gap = worst_gap(Some(&before), &inside, at(20, 0), None, GapBasis::Snapshots).unwrap();
        assert_eq!(gap.seconds, 4.0 * 86_400.0, "from the last snapshot before the window");
        assert_eq!(gap.from_snapshot, before.snapshot);
        assert_eq!(gap.met, None, "no objective, no verdict");

        let open = worst_gap(None, &inside, at(21, 0), Some(86_400.0), GapBasis::Snapshots).unwrap();
        assert_eq!(open.seconds, 36.0 * 3600.0, "from the newest snapshot to now");
        assert_eq!((open.to_snapshot, open.to), (None, at(21, 0)));

        let quiet_window = worst_gap(Some(&before), &[], at(20, 0), Some(86_400.0), GapBasis::Snapshots).unwrap();
        assert_eq!(quiet_window.seconds, 5.0 * 86_400.0);
        assert_eq!(quiet_window.to_snapshot, None);
    }

    #[test]
    fn nothing_to_measure_without_a_snapshot_and_the_future_is_ignored() {
        assert_eq!(worst_gap(None, &[], at(20, 0), Some(1.0), GapBasis::Snapshots), None);
        let gap = worst_gap(None, &[point(19, 0), point(21, 0)], at(20, 0), None, GapBasis::Snapshots).unwrap();
        assert_eq!((gap.seconds, gap.to_snapshot), (86_400.0, None));
        let met = worst_gap(None, &[point(19, 23)], at(20, 0), Some(3600.0), GapBasis::Snapshots).unwrap();
        assert_eq!(met.met, Some(true), "exactly at the objective meets it");
    }

    #[test]
    fn every_day_of_the_window_gets_a_row() {
        let snapshot = |day: u32, hour: u32, bytes: u64| SnapshotSummary {
            id: SnapshotId::new(at(day, hour)),
            started_at: at(day, hour),
            finished_at: at(day, hour),
            recovery_point: at(day, hour),
            hostname: "web1".into(),
            stored_bytes: bytes,
            plain_bytes: bytes * 3,
            incomplete_files: Vec::new(),
        };
        let rows =
            days(at(18, 4), at(20, 4), &[snapshot(18, 5, 10), snapshot(18, 23, 20), snapshot(20, 1, 5)], &[], None);
        let summary: Vec<(String, usize, u64, u64)> =
            rows.iter().map(|d| (d.date.to_string(), d.snapshots, d.stored_bytes, d.plain_bytes)).collect();
        assert_eq!(
            summary,
            [("2026-11-18".into(), 2, 30, 90), ("2026-11-19".into(), 0, 0, 0), ("2026-11-20".into(), 1, 5, 15)]
        );
        assert!(rows.iter().all(|d| d.applicable), "no history start known: every day counts");
    }

    #[test]
    fn days_before_the_history_began_are_not_applicable() {
        let rows = days(at(16, 4), at(20, 4), &[], &[], Some(at(18, 23)));
        let applicable: Vec<bool> = rows.iter().map(|d| d.applicable).collect();
        assert_eq!(applicable, [false, false, true, true, true], "the day the history began counts");
    }

    #[test]
    fn a_removed_snapshot_still_closes_a_gap() {
        let hourly: Vec<RecoveryPoint> =
            (0..24).map(|hour| RecoveryPoint { removed: hour % 6 != 0, ..point(19, hour) }).collect();
        let gap = worst_gap(None, &hourly, at(20, 0), Some(7200.0), GapBasis::Attempts).unwrap();
        assert_eq!((gap.seconds, gap.met, gap.removed_snapshots), (3600.0, Some(true), 20));
    }
}
