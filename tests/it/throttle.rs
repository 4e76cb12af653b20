//! The bandwidth limit (`[repository] limit_upload` / `limit_download`, `--limit-upload` / `--limit-download`):
//! measured on the wire, between the real `dr` and Garage, by the proxy of tests/common/faults.rs, which counts
//! the body bytes it relays and when they went through; and its values checked and named when they are wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::time::Instant;

use common::faults::{FaultProxy, Traffic};
use common::garage::Garage;
use common::{FilesSite, Run, dr_command, listing};

const MIB: u64 = 1 << 20;

/// Checks that `traffic` moved at `limit` bytes per second, within 10 %, and returns the rate achieved.
#[track_caller]
fn assert_rate(traffic: Traffic, limit: u64, what: &str) -> f64 {
    let rate = traffic.rate();
    let ratio = rate / limit as f64;
    eprintln!(
        "{what}: {} bytes in {:.2} s = {:.2} MiB/s ({:.1} % of the limit, {:.2} MiB/s)",
        traffic.bytes,
        traffic.duration().as_secs_f64(),
        rate / MIB as f64,
        ratio * 100.0,
        limit as f64 / MIB as f64,
    );
    assert!((0.9..=1.1).contains(&ratio), "{what}: {rate:.0} B/s against a limit of {limit} B/s: {traffic:?}");
    rate
}

fn dr_on(garage: &Garage, config: &Path, args: &[&str]) -> Run {
    let mut command = dr_command();
    command.arg("--config").arg(config).args(args).envs(garage.env());
    common::run(&mut command)
}

/// A backup of 40 MiB of incompressible files to S3 keeps to `limit_upload`, its restore to `--limit-download`,
/// which replaces the configuration's much lower `limit_download`, and a verify to `DR_LIMIT_DOWNLOAD`.
///
/// Uploads are paced on the wire, whole packs included (`s3_uploads_are_paced_on_the_wire` has the default
/// 8 MiB packs). A download is paced as dr reads it, and the kernel's socket buffers run ahead of that by
/// what they hold of each response: on loopback, most of a pack. Packs of 4 MiB keep that head start a few
/// percent of the 40 MiB read; on a real link the sender's congestion window keeps it small.
#[test]
fn backup_and_restore_on_s3_keep_to_the_limits() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let dir = tempfile::Builder::new().prefix("dr-test-").tempdir().unwrap();
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    // Five different files (the generator's seed is the length): nothing deduplicates or compresses.
    for i in 0..5 {
        common::write_random_file(&uploads.join(format!("video-{i}.bin")), (8 * MIB) as usize + i * 4099);
    }
    let key = dr::KeyPair::generate();
    let identity = dir.path().join("identity.txt");
    key.write_identity_file(&identity).unwrap();
    let config = dir.path().join("dr.toml");
    std::fs::write(
        &config,
        format!(
            "{repository}limit_upload = \"4 MiB\"\nlimit_download = \"1MiB/s\"\n\n\
             [encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{identity}\"\n\n\
             [[files]]\nname = \"uploads\"\npath = \"{uploads}\"\n\n[chunking]\npack_size = \"4MiB\"\n",
            repository = garage.repository_toml("throttle/site", Some(&proxy.url())),
            recipient = key.recipient(),
            identity = identity.display(),
            uploads = uploads.display(),
        ),
    )
    .unwrap();
    dr_on(&garage, &config, &["init"]).ok();

    proxy.reset_traffic();
    let started = Instant::now();
    let backup = dr_on(&garage, &config, &["backup"]).ok();
    let backup_took = started.elapsed();
    assert!(
        backup.stderr.contains("bandwidth limit: uploads to the repository at most 4.0 MiB/s"),
        "the limit is logged once:\n{}",
        backup.stderr
    );
    let uploaded = proxy.uploaded();
    assert!(uploaded.bytes > 40 * MIB, "every byte went through the proxy: {uploaded:?}");
    assert_rate(uploaded, 4 * MIB, "backup");
    eprintln!("backup: the whole command took {backup_took:.2?}");

    proxy.reset_traffic();
    let restored = dir.path().join("restored");
    let into = format!("uploads={}", restored.display());
    let started = Instant::now();
    let restore = dr_on(&garage, &config, &["--limit-download", "8MiB", "restore", "--to", "latest", "--into", &into]);
    let restore = restore.ok();
    let restore_took = started.elapsed();
    assert!(
        restore.stderr.contains("downloads from the repository at most 8.0 MiB/s"),
        "the command line's limit replaced the configuration's 1 MiB/s:\n{}",
        restore.stderr
    );
    let downloaded = proxy.downloaded();
    assert!(downloaded.bytes > 40 * MIB, "every byte went through the proxy: {downloaded:?}");
    assert_rate(downloaded, 8 * MIB, "restore");
    eprintln!("restore: the whole command took {restore_took:.2?}");
    assert_eq!(listing(&restored, &[]), listing(&uploads, &[]), "the restore is whole");

    // dr verify reads every pack through the same store, here under the environment's limit.
    proxy.reset_traffic();
    let mut verify = dr_command();
    verify.arg("--config").arg(&config).arg("verify").envs(garage.env()).env("DR_LIMIT_DOWNLOAD", "16 MiB");
    common::run(&mut verify).ok();
    let downloaded = proxy.downloaded();
    assert!(downloaded.bytes > 40 * MIB, "every pack was read: {downloaded:?}");
    assert_rate(downloaded, 16 * MIB, "verify");
}

/// With the default packs (8 MiB, multipart uploads of 5 MiB parts here), an upload leaves at the limit while each
/// part is sent, not in one burst at the link's speed once the part is full: the bodies are paced on the wire.
#[test]
fn s3_uploads_are_paced_on_the_wire() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let site = FilesSite::new();
    let uploads = site.path("big");
    std::fs::create_dir_all(&uploads).unwrap();
    for i in 0..3 {
        common::write_random_file(&uploads.join(format!("video-{i}.bin")), (8 * MIB) as usize + i * 4099);
    }
    let config = site.path("s3.toml");
    std::fs::write(
        &config,
        format!(
            "{repository}limit_upload = \"8 MiB\"\n\n{encryption}\n[[files]]\nname = \"big\"\npath = \"{uploads}\"\n",
            repository = garage.repository_toml("paced", Some(&proxy.url())),
            encryption = site.encryption(),
            uploads = uploads.display(),
        ),
    )
    .unwrap();
    dr_on(&garage, &config, &["init"]).ok();
    proxy.reset_traffic();
    dr_on(&garage, &config, &["backup"]).ok();
    let uploaded = proxy.uploaded();
    assert!(uploaded.bytes > 24 * MIB, "every byte went through the proxy: {uploaded:?}");
    assert_rate(uploaded, 8 * MIB, "backup with 8 MiB packs");
}

/// The limits that the configuration, the environment and the command line give, in that order of precedence,
/// and how a wrong one is refused: by clap on the command line (exit 2), naming the key or the variable
/// otherwise (exit 1).
#[test]
fn the_command_line_replaces_the_limits_and_wrong_ones_are_named() {
    let site = FilesSite::new();
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    let with_limits = text.replacen("[repository]\n", "[repository]\nlimit_upload = \"1 MiB\"\n", 1);
    std::fs::write(&site.config_path, &with_limits).unwrap();
    site.dr(&["init"]).ok();

    let backup = site.dr(&["backup", "--limit-upload", "64MiB/s"]).ok();
    assert!(backup.stderr.contains("uploads to the repository at most 64.0 MiB/s"), "{}", backup.stderr);
    assert!(!backup.stderr.contains("1.0 MiB/s"), "the configuration's limit is replaced:\n{}", backup.stderr);
    let mut from_env = site.command(&["backup"]);
    from_env.env("DR_LIMIT_UPLOAD", "32 MiB");
    let backup = common::run(&mut from_env).ok();
    assert!(backup.stderr.contains("at most 32.0 MiB/s"), "the environment's over the file's:\n{}", backup.stderr);
    let mut both = site.command(&["--limit-upload", "48MiB", "backup"]);
    both.env("DR_LIMIT_UPLOAD", "32 MiB");
    let backup = common::run(&mut both).ok();
    assert!(backup.stderr.contains("at most 48.0 MiB/s"), "the command line's over both:\n{}", backup.stderr);
    let listed = site.dr(&["snapshots"]).ok();
    assert!(!listed.stderr.contains("downloads from"), "no download limit is set:\n{}", listed.stderr);

    for (value, reason) in [("fast", "is not a rate"), ("0", "must be above 0"), ("10 Mbit", "could mean bits")] {
        let error = site.dr(&["--limit-download", value, "snapshots"]).user_error(2);
        assert!(error.contains("--limit-download") && error.contains(reason), "{value:?}: {error}");
    }

    std::fs::write(&site.config_path, text.replacen("[repository]\n", "[repository]\nlimit_download = \"0\"\n", 1))
        .unwrap();
    let refused = site.dr(&["snapshots"]);
    let hint = refused.hint().unwrap_or_default();
    let error = refused.user_error(1);
    assert_eq!(
        error,
        "error: invalid configuration: [repository] limit_download = \"0\" must be above 0 (for no limit, leave it \
         unset)"
    );
    assert!(hint.contains("docs/configuration.md"), "{hint}");

    std::fs::write(&site.config_path, &text).unwrap();
    let mut command = site.command(&["snapshots"]);
    command.env("DR_LIMIT_UPLOAD", "10 Mb");
    let refused = common::run(&mut command);
    let hint = refused.hint().unwrap_or_default();
    let error = refused.user_error(1);
    assert!(error.starts_with("error: environment variable DR_LIMIT_UPLOAD: \"10 Mb\" uses \"Mb\""), "{error}");
    assert!(hint.contains("DR_LIMIT_UPLOAD") && hint.contains("[repository] limit_upload"), "{hint}");
}

/// Drills and prunes open the repository through the same place as every command, so the limits apply to them:
/// each says so when it starts.
#[test]
fn drill_and_prune_run_under_the_limits_too() {
    let site = FilesSite::new();
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    let limited = text.replacen("[repository]\n", "[repository]\nlimit_download = \"64 MiB\"\n", 1)
        + "\n[retention]\nkeep_last = 1\n";
    std::fs::write(&site.config_path, limited).unwrap();
    site.init_and_backup();
    site.dr(&["backup"]).ok();
    let drill = site.dr(&["drill"]).ok();
    assert!(drill.stderr.contains("downloads from the repository at most 64.0 MiB/s"), "{}", drill.stderr);
    let prune = site.dr(&["--limit-upload", "32 MiB", "prune"]).ok();
    assert!(prune.stderr.contains("downloads from the repository at most 64.0 MiB/s"), "{}", prune.stderr);
    assert!(prune.stderr.contains("uploads to the repository at most 32.0 MiB/s"), "{}", prune.stderr);
}
