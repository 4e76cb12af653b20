//! Human-readable sizes and durations for messages and tables.

use std::time::Duration;

/// `1 drill`, `3 objects`, `2 anomalies`: the nouns dr counts all take the regular English plural.
pub fn plural(count: usize, noun: &str) -> String {
    match (count, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{count} {stem}ies"),
        _ => format!("{count} {noun}s"),
    }
}

/// Formats a byte count with binary units: `0 B`, `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Formats a duration compactly: `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d {:02}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// Formats seconds as [`duration`] does; negative, NaN or absurdly large values read as `0ms` rather than
/// panicking (measurements taken across a clock step can come out negative).
pub fn seconds(seconds: f64) -> String {
    duration(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default())
}

/// Formats an age such as "3h 12m ago"; a time in the future reads "in the future".
pub fn age(since: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    match (now - since).to_std() {
        Ok(d) => format!("{} ago", duration(d)),
        Err(_) => "in the future".to_string(),
    }
}

/// A coarse time relative to now, as a status line reads it: `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`,
/// or `in 5 min` for a time ahead.
pub fn relative(time: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let seconds = (now - time).num_seconds();
    let magnitude = match seconds.unsigned_abs() {
        s @ 0..=59 => format!("{s} s"),
        s @ 60..=3599 => format!("{} min", s / 60),
        s @ 3600..=172_799 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    };
    if seconds >= 0 { format!("{magnitude} ago") } else { format!("in {magnitude}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 03m");
    }

    #[test]
    fn relative_times_read_as_a_status_line_says_them() {
        let now = chrono::Utc::now();
        let ago = |s: i64| relative(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(12), "12 s ago");
        assert_eq!(ago(300), "5 min ago");
        assert_eq!(ago(3 * 3600 + 5), "3 h ago");
        assert_eq!(ago(3 * 86_400), "3 d ago");
        assert_eq!(ago(-600), "in 10 min");
    }
}
