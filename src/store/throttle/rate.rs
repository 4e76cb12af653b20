//! A transfer rate as the user writes it (`"10 MiB"`, `"10MiB/s"`), and the limits a `[repository]` sets.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};

/// Bytes per second, never zero (no limit is `None`, not a zero rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(NonZeroU64);

impl Rate {
    pub fn from_bytes_per_second(bytes: u64) -> Option<Rate> {
        NonZeroU64::new(bytes).map(Rate)
    }

    pub fn bytes_per_second(self) -> u64 {
        self.0.get()
    }

    /// How long `bytes` take at this rate.
    pub(super) fn time_for(self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.0.get() as f64)
    }

    /// The most bytes one transfer takes from the bucket at a time: about 10 ms of transfer, so that a writer
    /// waits in small steps (a lock renewal queued behind it waits little) without waking more than about a
    /// hundred times a second.
    pub(super) fn slice(self) -> u64 {
        (self.0.get() / 100).clamp(1024, 1 << 20)
    }
}

impl FromStr for Rate {
    type Err = String;

    /// A size with a unit, as `part_size` is written, with an optional `/s`: `"10 MiB"`, `"10MiB/s"`,
    /// `"500 KB"`, `"1048576"` (bytes). A unit ending in a lowercase `b` (`"10 Mb"`) is refused: it often
    /// means bits, and these are bytes.
    fn from_str(text: &str) -> std::result::Result<Rate, String> {
        let size = text.trim();
        let size = size.strip_suffix("/s").unwrap_or(size).trim_end();
        let unit = size.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.').trim();
        if (unit.len() > 1 && unit.ends_with('b')) || unit.to_ascii_lowercase().contains("bit") {
            return Err(format!(
                "uses {unit:?}, which could mean bits: a rate is in bytes per second, e.g. \"10 MB\" or \"10 MiB\""
            ));
        }
        let bytes: bytesize::ByteSize = size.parse().map_err(|_| {
            "is not a rate: write bytes per second with a unit, e.g. \"10 MiB\" or \"10MiB/s\"".to_string()
        })?;
        Rate::from_bytes_per_second(bytes.as_u64())
            .ok_or_else(|| "must be above 0 (for no limit, leave it unset)".to_string())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", bytesize::ByteSize(self.0.get()).display().iec())
    }
}

/// The rates a `[repository]` sets (or the command line replaced); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes written to the repository.
    pub upload: Option<Rate>,
    /// Bytes read from the repository.
    pub download: Option<Rate>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

impl TryFrom<&RepositoryConfig> for Limits {
    type Error = Error;

    fn try_from(repository: &RepositoryConfig) -> Result<Limits> {
        Ok(Limits {
            upload: parse_key("limit_upload", repository.limit_upload.as_deref())?,
            download: parse_key("limit_download", repository.limit_download.as_deref())?,
        })
    }
}

fn parse_key(key: &str, text: Option<&str>) -> Result<Option<Rate>> {
    text.map(|text| {
        text.parse().map_err(|reason| Error::ConfigInvalid(format!("[repository] {key} = {text:?} {reason}")))
    })
    .transpose()
}

/// Checks a rate taken from the environment, whose error names the variable instead of the key (see
/// `settings::validate_overrides`).
pub fn check_rate(text: &str) -> Result<Rate> {
    text.parse().map_err(|reason| Error::ConfigInvalid(format!("{text:?} {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_sizes_with_an_optional_per_second() {
        let mib = 1 << 20;
        for (text, bytes) in [
            ("10 MiB", 10 * mib),
            ("10MiB", 10 * mib),
            ("10MiB/s", 10 * mib),
            ("10 MiB/s", 10 * mib),
            (" 4 MiB /s ", 4 * mib),
            ("500 KB", 500_000),
            ("1.5 MiB", 3 * mib / 2),
            ("1048576", mib),
            ("2M", 2_000_000),
        ] {
            let rate: Rate = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(rate.bytes_per_second(), bytes, "{text:?}");
        }
        assert_eq!(Rate::from_bytes_per_second(4 * mib).unwrap().to_string(), "4.0 MiB/s");
    }

    #[test]
    fn zero_garbage_and_bits_are_refused_with_a_reason() {
        for (text, reason) in [
            ("0", "above 0"),
            ("0 MiB/s", "above 0"),
            ("0.1 B", "above 0"),
            ("fast", "not a rate"),
            ("", "not a rate"),
            ("-1 MiB", "not a rate"),
            ("10 MiB/h", "not a rate"),
            ("10 Mb", "bits"),
            ("10 Mbit/s", "bits"),
        ] {
            let err = text.parse::<Rate>().unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn limits_name_the_key_that_is_wrong() {
        let repository = |upload: Option<&str>, download: Option<&str>| RepositoryConfig {
            limit_upload: upload.map(String::from),
            limit_download: download.map(String::from),
            ..RepositoryConfig::default()
        };
        assert!(Limits::try_from(&repository(None, None)).unwrap().is_unlimited());
        let limits = Limits::try_from(&repository(Some("1 MiB"), Some("2MiB/s"))).unwrap();
        assert_eq!(limits.upload.map(Rate::bytes_per_second), Some(1 << 20));
        assert_eq!(limits.download.map(Rate::bytes_per_second), Some(2 << 20));
        let err = Limits::try_from(&repository(None, Some("0"))).unwrap_err();
        assert!(matches!(err, Error::ConfigInvalid(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "invalid configuration: [repository] limit_download = \"0\" must be above 0 (for no limit, leave it \
             unset)"
        );
        let err = Limits::try_from(&repository(Some("lots"), None)).unwrap_err().to_string();
        assert!(err.contains("[repository] limit_upload = \"lots\" is not a rate"), "{err}");
    }
}
