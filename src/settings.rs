//! The configuration, checked: the one place where a [`Config`] read by [`Config::load`] is validated.
//!
//! [`crate::config`] is plain data (serde types, the search path, environment overrides, relative paths). What
//! serde cannot check, each module checks for its own section (`store::validate` for `[repository]`,
//! `repo::lock::validate` for `[lock]`, `drill::validate` for `[drill]`, ...); this module calls them, in one
//! order, so that every command that loads the configuration refuses the same file at the same moment with the
//! same message. The CLI loads through [`load`]; `dr check` through [`load_for_check`], which lists the
//! schedules' problems itself.

use std::collections::HashSet;
use std::path::Path;

use crate::config::{Config, ENV_LIMIT_DOWNLOAD, ENV_LIMIT_UPLOAD, ENV_RECIPIENTS, ENV_REPOSITORY_URL, LoadedConfig};
use crate::error::{Error, Result};

/// Finds, reads and validates the configuration, applying environment overrides (see [`Config::load`]).
pub fn load(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<LoadedConfig> {
    let loaded = load_for_check(explicit, env)?;
    crate::service::schedule::validate(&loaded.config)?;
    Ok(loaded)
}

/// [`load`] without the `[[job]]` schedules, which `dr check` checks one by one to name every bad one.
pub fn load_for_check(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<LoadedConfig> {
    let loaded = Config::load(explicit, env)?;
    validate_overrides(&loaded)?;
    validate_sections(&loaded.config)?;
    Ok(loaded)
}

/// Checks what serde cannot: names, recipients, ranges, connection strings, schedules.
pub fn validate(config: &Config) -> Result<()> {
    validate_sections(config)?;
    crate::service::schedule::validate(config)
}

fn validate_sections(config: &Config) -> Result<()> {
    validate_source_names(config)?;
    crate::crypto::validate(&config.encryption)?;
    for files in &config.files {
        crate::files::validate(files)?;
    }
    for postgres in &config.postgres {
        crate::pg::source_conninfo(postgres)?;
    }
    crate::pipeline::Compression::validate(&config.compression)?;
    crate::store::validate(&config.repository)?;
    crate::engine::restore::validate(&config.restore)?;
    crate::repo::lock::validate(&config.lock)?;
    crate::drill::validate(&config.drill, &config.postgres)?;
    crate::retention::validate(&config.retention)?;
    crate::stream::run::validate(config)?;
    crate::chunks::validate(&config.chunking)?;
    for alert in &config.alerts {
        crate::service::alerts::validate(alert)?;
    }
    Ok(())
}

/// Checks the values that came from the environment first, naming the variable: an error found later would
/// read as if the configuration file were wrong.
fn validate_overrides(loaded: &LoadedConfig) -> Result<()> {
    let from_env = |var: &'static str| move |e: Error| Error::ConfigEnv { var, source: Box::new(e) };
    if loaded.overrides.contains(&ENV_REPOSITORY_URL) {
        crate::store::check_url(&loaded.config.repository.url).map_err(from_env(ENV_REPOSITORY_URL))?;
    }
    if loaded.overrides.contains(&ENV_RECIPIENTS) {
        for recipient in &loaded.config.encryption.recipients {
            crate::crypto::parse_recipient(recipient).map_err(from_env(ENV_RECIPIENTS))?;
        }
    }
    let repository = &loaded.config.repository;
    for (var, rate) in [(ENV_LIMIT_UPLOAD, &repository.limit_upload), (ENV_LIMIT_DOWNLOAD, &repository.limit_download)]
    {
        if let Some(rate) = rate.as_deref().filter(|_| loaded.overrides.contains(&var)) {
            crate::store::throttle::check_rate(rate).map_err(from_env(var))?;
        }
    }
    Ok(())
}

/// Source names become parts of object keys, so they stay within a safe alphabet, and each names one source.
fn validate_source_names(config: &Config) -> Result<()> {
    let mut names = HashSet::new();
    for name in config.source_names() {
        validate_source_name(name)?;
        if !names.insert(name) {
            return Err(Error::ConfigInvalid(format!(
                "source name {name:?} is used twice; every [[postgres]] and [[files]] needs its own name"
            )));
        }
    }
    Ok(())
}

fn validate_source_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::ConfigInvalid(format!(
            "source name {name:?} must be 1-64 characters of letters, digits, '_', '-' or '.', starting with a \
             letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::store::S3Options;

    #[test]
    fn duplicate_and_unsafe_source_names_are_rejected() {
        let text = "[[postgres]]\nname = \"app\"\nurl = \"dbname=a\"\n[[files]]\nname = \"app\"\npath = \"/x\"\n";
        let err = validate(&Config::parse(text, Path::new("dr.toml")).unwrap()).unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
        let text = "[[files]]\nname = \"../up\"\npath = \"/x\"\n";
        assert!(validate(&Config::parse(text, Path::new("dr.toml")).unwrap()).is_err());
    }

    /// The body of the first fenced block whose info string is exactly `toml`.
    fn first_toml_block(markdown: &str) -> Option<String> {
        let mut lines = markdown.lines().skip_while(|line| line.trim_end() != "```toml").skip(1);
        let mut block = String::new();
        for line in lines.by_ref() {
            if line.trim_end() == "```" {
                return Some(block);
            }
            block.push_str(line);
            block.push('\n');
        }
        None
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let doc = include_str!("../docs/configuration.md");
        let example = first_toml_block(doc).expect("docs/configuration.md has a ```toml block");
        let config = Config::parse(&example, Path::new("/etc/dr/dr.toml")).unwrap();
        validate(&config).unwrap();

        assert_eq!(config.repository.url, "file:///var/lib/dr/repo");
        assert_eq!(config.encryption.recipients.len(), 2);
        assert!(crate::crypto::Recipients::parse(&config.encryption.recipients).is_ok());
        assert_eq!(config.encryption.identity_file, Some(PathBuf::from("/run/secrets/dr-identity.txt")));
        assert_eq!(config.compression, crate::config::CompressionConfig { level: 3, threads: 0 });
        assert_eq!(config.source_names(), ["app", "config", "uploads"]);
        assert!(config.postgres[0].globals);
        assert_eq!(config.files[1].path, PathBuf::from("/srv/isntgram/uploads"));
        assert_eq!(config.files[1].exclude, ["*.tmp", "cache/**"]);
        assert!(config.files[0].external_symlinks && !config.files[1].external_symlinks);
        assert_eq!(config.objectives.rpo, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(config.objectives.rto, Some(Duration::from_secs(3600)));
        assert_eq!(
            config.restore,
            crate::config::RestoreConfig { temp_dir: Some(PathBuf::from("/var/tmp")), jobs: Some(4) }
        );
    }

    fn repository_error(section: &str) -> String {
        let config = Config::parse(section, Path::new("dr.toml")).unwrap();
        let err = validate(&config).unwrap_err();
        assert!(matches!(err, Error::ConfigInvalid(_)), "{err:?}");
        err.to_string()
    }

    #[test]
    fn s3_keys_are_refused_on_a_local_repository_by_name() {
        for (key, value) in [
            ("endpoint", "\"http://127.0.0.1:3900\""),
            ("region", "\"garage\""),
            ("path_style", "true"),
            ("part_size", "\"16MiB\""),
            ("concurrency", "4"),
        ] {
            for url in ["file:///var/lib/dr/repo", "/var/lib/dr/repo"] {
                let err = repository_error(&format!("[repository]\nurl = \"{url}\"\n{key} = {value}\n"));
                assert!(err.contains(key) && err.contains("s3://"), "{key} with {url}: {err}");
            }
        }
    }

    #[test]
    fn bandwidth_limits_are_checked_by_name_on_any_repository() {
        for url in ["/var/lib/dr/repo", "s3://dr-backups/site"] {
            let section = |extra: &str| format!("[repository]\nurl = \"{url}\"\n{extra}");
            let config = Config::parse(
                &section("limit_upload = \"4 MiB\"\nlimit_download = \"8MiB/s\"\n"),
                Path::new("dr.toml"),
            );
            validate(&config.unwrap()).unwrap();
            let err = repository_error(&section("limit_upload = \"0\"\n"));
            assert!(err.contains("[repository] limit_upload = \"0\" must be above 0"), "{url}: {err}");
            let err = repository_error(&section("limit_download = \"quick\"\n"));
            assert!(err.contains("[repository] limit_download = \"quick\" is not a rate"), "{url}: {err}");
        }
    }

    #[test]
    fn s3_settings_are_checked() {
        let s3 = |extra: &str| format!("[repository]\nurl = \"s3://dr-backups/site\"\n{extra}");
        let err = repository_error(&s3("part_size = \"4MiB\"\n"));
        assert!(err.contains("part_size") && err.contains("5 MiB"), "{err}");
        let err = repository_error(&s3("part_size = \"6GiB\"\n"));
        assert!(err.contains("part_size"), "{err}");
        for concurrency in [0, 65] {
            let err = repository_error(&s3(&format!("concurrency = {concurrency}\n")));
            assert!(err.contains("concurrency"), "{err}");
        }
        let err = repository_error(&s3("endpoint = \"127.0.0.1:3900\"\n"));
        assert!(err.contains("endpoint") && err.contains("http://"), "{err}");
        for bucket in ["Dr_Backups", "ab", "", "dr backups", &"b".repeat(64)] {
            let err = repository_error(&format!("[repository]\nurl = \"s3://{bucket}/site\"\n"));
            assert!(err.contains("bucket name"), "{bucket:?}: {err}");
        }
        let err = repository_error("[repository]\nurl = \"s3://dr-backups/a/../b\"\n");
        assert!(err.contains("prefix"), "{err}");

        // The smallest part S3 allows is accepted, with path-style addressing on by default with an endpoint.
        let config = Config::parse(
            &s3("endpoint = \"http://127.0.0.1:3900/\"\npart_size = \"5MiB\"\nconcurrency = 1\n"),
            Path::new("dr.toml"),
        )
        .unwrap();
        let options = S3Options::try_from(&config.repository).unwrap();
        assert_eq!((options.bucket.as_str(), options.prefix.as_str()), ("dr-backups", "site"));
        assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(options.path_style);
        assert_eq!((options.part_size, options.concurrency), (5 << 20, 1));
        let aws = S3Options::try_from(&Config::parse(&s3(""), Path::new("dr.toml")).unwrap().repository).unwrap();
        assert!(!aws.path_style && aws.endpoint.is_none());
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dr.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn an_environment_value_that_does_not_parse_names_its_variable_before_the_file_is_checked() {
        // The file is wrong too (level 30); the environment's value is reported first, naming its variable.
        let (_dir, path) = write_config("[compression]\nlevel = 30\n");
        for (var, value) in [
            ("DR_REPOSITORY_URL", "ftp://backups/site"),
            ("DR_RECIPIENTS", "age1notakey"),
            ("DR_LIMIT_UPLOAD", "fast"),
            ("DR_LIMIT_DOWNLOAD", "0"),
        ] {
            let env = |key: &str| (key == var).then(|| value.to_string());
            let err = load(Some(&path), &env).unwrap_err();
            assert!(matches!(err, Error::ConfigEnv { var: named, .. } if named == var), "{var}: {err:?}");
        }
        let err = load(Some(&path), &|_| None).unwrap_err();
        assert!(err.to_string().contains("[compression] level = 30"), "{err}");
    }

    #[test]
    fn schedules_are_checked_by_load_and_left_to_dr_check_by_load_for_check() {
        let (_dir, path) = write_config("[[job]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nrun = \"backup\"\n");
        let err = load(Some(&path), &|_| None).unwrap_err();
        assert!(matches!(err, Error::ConfigInvalid(_)) && err.to_string().contains("job \"nightly\""), "{err}");
        assert!(validate(&Config::parse("[service]\ntimezone = \"Mars/Olympus\"\n", &path).unwrap()).is_err());
        let loaded = load_for_check(Some(&path), &|_| None).unwrap();
        assert_eq!(loaded.config.jobs.len(), 1);
    }
}
