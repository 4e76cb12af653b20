//! The `dr` binary, black box: what it prints, what it writes, and how it fails. Every error a user can cause
//! ends in exactly one `error:` line naming the thing and a `hint:` line, with exit code 2 for a bad invocation
//! and 1 for everything else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{FilesSite, UPLOAD_EXCLUDES, dr_command, files_below, listing, run};

fn dr(args: &[&str]) -> common::Run {
    run(dr_command().args(args))
}

#[test]
fn keygen_writes_a_private_identity_and_prints_its_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dr-identity.txt");
    let run = dr(&["keygen", "--output", path.to_str().unwrap()]).ok();
    let recipient = run.stdout.trim();
    assert!(recipient.starts_with("age1") && !recipient.contains('\n'), "stdout is the recipient: {}", run.stdout);
    assert!(run.stderr.contains(&path.display().to_string()), "{}", run.stderr);
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let identity = fs::read_to_string(&path).unwrap();
    assert!(identity.contains(&format!("# public key: {recipient}")), "{identity}");
    assert_eq!(identity.lines().filter(|l| l.starts_with("AGE-SECRET-KEY-1")).count(), 1, "{identity}");
    // The pair works: a backup to the recipient restores with the identity (see tests/it/breakglass.rs for age).
    assert!(dr::Identities::load(&path).is_ok());

    let error = dr(&["keygen", "--output", path.to_str().unwrap()]).user_error(1);
    assert!(error.contains(&path.display().to_string()) && error.contains("already exists"), "{error}");
    assert_eq!(fs::read_to_string(&path).unwrap(), identity, "an existing key is never overwritten");

    // Without --output the identity goes to stdout, the recipient to stderr.
    let run = dr(&["keygen"]).ok();
    assert!(run.stdout.contains("AGE-SECRET-KEY-1"), "{}", run.stdout);
    assert!(run.stderr.contains("public recipient: age1"), "{}", run.stderr);
}

#[test]
fn help_and_version() {
    let run = dr(&["--help"]).ok();
    for text in [
        "Usage: dr",
        "keygen",
        "init",
        "backup",
        "snapshots",
        "restore",
        "verify",
        "drill",
        "report",
        "demo",
        "Exit codes",
    ] {
        assert!(run.stdout.contains(text), "{text}:\n{}", run.stdout);
    }
    let run = dr(&["restore", "--help"]).ok();
    for text in ["--to", "--into", "--only", "--jobs", "--force", "NAME=TARGET"] {
        assert!(run.stdout.contains(text), "{text}:\n{}", run.stdout);
    }
    let run = dr(&["--version"]).ok();
    assert_eq!(run.stdout.trim(), format!("dr {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_arguments_exit_2_naming_what_is_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (&["restore", "--to", "yesterday"], "'yesterday'"),
        (&["restore", "--to", "latest", "--into", "nonsense"], "\"nonsense\" is not NAME=TARGET"),
        (&["restore", "--to", "latest", "--jobs", "0"], "'0' for '--jobs"),
        (&["restore"], "--to"),
        (&["verify", "--all", "--to", "latest"], "--to"),
        (&["frobnicate"], "'frobnicate'"),
        (&["restor", "--to", "latest"], "'restore'"),
        (&["drill", "--jobs", "0"], "'0' for '--jobs"),
        (&["report", "--format", "pdf"], "'pdf'"),
        (&["backup", "--bogus"], "'--bogus'"),
        (&["--verbose", "--quiet", "snapshots"], "--quiet"),
    ];
    for (args, expected) in cases {
        let run = dr(args);
        assert!(run.stderr.contains(expected), "{args:?} must mention {expected}:\n{}", run.stderr);
        let error = run.user_error(2);
        assert!(!error.is_empty(), "{args:?}");
    }
}

#[test]
fn usage_errors_found_after_parsing_exit_2_too() {
    let site = FilesSite::new();
    let snapshot = site.init_and_backup();
    let cases: &[(&[&str], &str)] = &[
        (&["backup", "--only", "nope"], "--only \"nope\": no such source (configured: config, uploads)"),
        (&["restore", "--to", "latest", "--only", "nope"], "has no source \"nope\" (it has: config, uploads)"),
        (&["restore", "--to", "latest", "--into", "nope=/tmp/x"], "has no source \"nope\""),
    ];
    for (args, expected) in cases {
        let error = site.dr(args).user_error(2);
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    assert_eq!(files_below(&site.repo.join("snapshots")), [format!("{snapshot}.json")], "nothing else happened");
}

#[test]
fn configuration_errors_name_the_file_and_the_problem() {
    let site = FilesSite::new();
    let path = site.config_path.display().to_string();

    // An unknown key, named with its place in the file.
    site.write_config(&format!("{}identity_fiel = \"/x\"\n", site.encryption()));
    let error = site.dr(&["snapshots"]).user_error(1);
    assert!(error.contains(&path), "{error}");
    assert!(site.dr(&["snapshots"]).stderr.contains("unknown field `identity_fiel`"));

    // Not TOML at all.
    fs::write(&site.config_path, "[repository\nurl = 1\n").unwrap();
    let not_toml = site.dr(&["snapshots"]);
    assert!(not_toml.stderr.contains("line 1"), "{}", not_toml.stderr);
    assert!(not_toml.user_error(1).contains(&path));

    // A recipient that is no key, and one source name used twice.
    site.write_config("[encryption]\nrecipients = [\"age1notakey\"]\n");
    let error = site.dr(&["backup"]).user_error(1);
    assert!(error.contains("invalid configuration: recipient \"age1notakey\""), "{error}");
    site.write_config(&site.encryption());
    let text = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, format!("{text}\n[[files]]\nname = \"config\"\npath = \"/srv\"\n")).unwrap();
    let error = site.dr(&["backup"]).user_error(1);
    assert!(error.contains("\"config\" is used twice"), "{error}");

    // A file that does not exist: --config, then DR_CONFIG.
    let missing = site.path("missing.toml");
    let error = run(dr_command().arg("--config").arg(&missing).arg("snapshots")).user_error(1);
    assert!(error.contains(&format!("cannot read configuration file {}", missing.display())), "{error}");
    let error = run(dr_command().env("DR_CONFIG", &missing).arg("snapshots")).user_error(1);
    assert!(error.contains(&missing.display().to_string()), "{error}");

    // No configuration anywhere: the places searched are listed.
    if !Path::new("/etc/dr/dr.toml").exists() {
        let empty = tempfile::tempdir().unwrap();
        let nowhere = run(dr_command().current_dir(empty.path()).arg("snapshots"));
        assert!(nowhere.hint().unwrap().contains("--config FILE or set DR_CONFIG"), "{}", nowhere.stderr);
        let error = nowhere.user_error(1);
        assert!(error.contains("no configuration file found (looked for dr.toml, /etc/dr/dr.toml)"), "{error}");
    }
}

/// A bad `[[job]]` schedule is a configuration error for every command that loads the file, not only for
/// `dr serve`: the same message, naming the job, before anything else happens.
#[test]
fn a_bad_schedule_is_refused_by_every_command_that_loads_the_configuration() {
    let site = FilesSite::new();
    site.write_config(&format!(
        "{}[[job]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nrun = \"backup\"\n",
        site.encryption()
    ));
    for args in [&["snapshots"][..], &["backup"], &["prune", "--dry-run"], &["verify"]] {
        let error = site.dr(args).user_error(1);
        assert!(
            error.starts_with(
                "error: invalid configuration: job \"nightly\" (in the configuration): schedule \"0 3 * * *\""
            ) && error.contains("it has 5 fields"),
            "{args:?}: {error}"
        );
    }
    // `dr check` lists it among its problems, like before.
    let run = site.dr(&["check"]);
    assert!(run.stdout.lines().any(|l| l.starts_with("PROBLEM") && l.contains("job \"nightly\"")), "{}", run.stdout);
}

#[test]
fn a_repository_is_initialized_once_and_must_be_before_use() {
    let site = FilesSite::new();
    let location = site.repo.display().to_string();
    let restored = site.path("restored");
    for run in [site.dr(&["snapshots"]), site.dr(&["backup"]), site.dr(&["verify"]), site.restore_into(&restored, &[])]
    {
        assert!(run.hint().unwrap().contains("run `dr init` first"), "{}", run.stderr);
        let error = run.user_error(1);
        assert_eq!(error, format!("error: repository {location} is not initialized"));
    }
    assert!(!site.repo.exists() && !restored.exists(), "nothing was created");

    let run = site.dr(&["init"]).ok();
    assert_eq!(run.stdout.trim(), format!("initialized repository {location}"));
    let error = site.dr(&["init"]).user_error(1);
    assert_eq!(error, format!("error: repository {location} already exists"));
    let run = site.dr(&["snapshots"]).ok();
    assert_eq!(run.stdout.trim(), format!("no snapshots in {location}"));
}

#[test]
fn snapshots_that_do_not_exist_are_reported_as_such() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    let restored = site.path("restored");
    for run in [site.dr(&["verify"]), site.dr(&["verify", "--all"]), site.restore_into(&restored, &[])] {
        assert!(run.hint().unwrap().contains("`dr snapshots` lists the snapshots"), "{}", run.stderr);
        assert_eq!(run.user_error(1), "error: the repository holds no snapshots");
    }

    let first = site.dr(&["backup"]).ok().stdout.trim().to_string();
    let second = site.dr(&["backup"]).ok().stdout.trim().to_string();
    for selector in ["20200101T000000Z-abcdef", "1999"] {
        let error = site.dr(&["restore", "--to", selector]).user_error(1);
        assert!(error.contains("no snapshot matches"), "{selector}: {error}");
    }
    // A time before every snapshot names the oldest one (tests/it/messages.rs pins the whole text).
    for command in ["restore", "verify"] {
        let error = site.dr(&[command, "--to", "2000-01-01T00:00:00Z"]).user_error(1);
        assert!(error.contains(&format!("the oldest is {first}")), "{command}: {error}");
    }
    // Both ids start with the year.
    let error = site.dr(&["verify", "--to", &first[..4]]).user_error(1);
    assert!(error.contains("ambiguous") && error.contains(&first) && error.contains(&second), "{error}");
    assert!(!restored.exists());
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    for (url, shown) in [
        ("host=127.0.0.1 port=1 dbname=site user=app password=hunter2", "app@127.0.0.1:1/site"),
        ("postgres://app:hunter2@127.0.0.1:1/site", "app@127.0.0.1:1/site"),
    ] {
        let text = fs::read_to_string(&site.config_path).unwrap();
        let text = format!("{text}\n[[postgres]]\nname = \"app\"\nurl = \"{url}\"\n");
        let config = site.path("with-db.toml");
        fs::write(&config, text).unwrap();
        let run = run(dr_command().arg("--config").arg(&config).arg("backup"));
        assert!(!run.all_output().contains("hunter2"), "the password is never shown:\n{}", run.all_output());
        assert!(run.hint().unwrap().contains("check the connection URL"), "{}", run.stderr);
        let error = run.user_error(1);
        assert!(error.contains(&format!("database {shown} (source \"app\")")), "{error}");
        assert!(error.contains("onnection refused"), "{error}");
    }
    assert_eq!(files_below(&site.repo.join("snapshots")), Vec::<String>::new());
    assert_eq!(files_below(&site.repo.join("objects")), Vec::<String>::new());
}

#[test]
fn the_environment_overrides_the_configuration() {
    let site = FilesSite::new();
    // A host that backs up holds only the public key.
    site.write_config(&format!("[encryption]\nrecipients = [\"{}\"]\n", site.recipient));

    // DR_REPOSITORY_URL replaces the configured repository.
    let elsewhere = site.path("repo-elsewhere");
    let env_repo = format!("file://{}", elsewhere.display());
    run(site.command(&["init"]).env("DR_REPOSITORY_URL", &env_repo)).ok();
    assert!(elsewhere.join("config.json").exists() && !site.repo.exists());

    // DR_RECIPIENTS replaces the recipients: this snapshot is for another key.
    let other = site.path("other-identity.txt");
    let key = dr::KeyPair::generate();
    key.write_identity_file(&other).unwrap();
    let snapshot = run(site
        .command(&["backup"])
        .env("DR_REPOSITORY_URL", &env_repo)
        .env("DR_RECIPIENTS", format!(" {} ,", key.recipient())))
    .ok()
    .stdout
    .trim()
    .to_string();

    // DR_IDENTITY_FILE supplies the identity the host config does not have; the site's own key cannot decrypt.
    let restored = site.path("restored");
    let mut command = site.command(&["restore", "--to", "latest"]);
    command.env("DR_REPOSITORY_URL", &env_repo).env("DR_IDENTITY_FILE", &site.identity);
    command.args(["--into", &format!("config={}", restored.join("config").display())]);
    let error = run(&mut command).user_error(1);
    assert!(error.contains("cannot decrypt"), "{error}");
    let mut command = site.command(&["restore", "--to", "latest"]);
    command.env("DR_REPOSITORY_URL", &env_repo).env("DR_IDENTITY_FILE", &other);
    command.args(["--into", &format!("config={}", restored.join("config").display())]);
    command.args(["--into", &format!("uploads={}", restored.join("uploads").display())]);
    let run_ok = run(&mut command).ok();
    assert!(run_ok.stdout.contains(&snapshot), "{}", run_ok.stdout);
    assert_eq!(listing(&restored.join("uploads"), &[]), listing(&site.path("site/uploads"), &UPLOAD_EXCLUDES));

    // DR_CONFIG names the file when --config is not given; --config wins over it.
    let list =
        run(dr_command().env("DR_CONFIG", &site.config_path).env("DR_REPOSITORY_URL", &env_repo).arg("snapshots"));
    assert!(list.ok().stdout.contains(&snapshot));
    let missing = site.path("missing.toml");
    let list = run(site.command(&["snapshots"]).env("DR_CONFIG", &missing).env("DR_REPOSITORY_URL", &env_repo));
    assert!(list.ok().stdout.contains(&snapshot));

    // A break-glass host with no configuration file at all: the environment names the repository and key.
    let empty = tempfile::tempdir().unwrap();
    let mut command = dr_command();
    command.current_dir(empty.path()).env("DR_REPOSITORY_URL", &env_repo).env("DR_IDENTITY_FILE", &other);
    let list = run(command.arg("snapshots")).ok();
    assert!(list.stdout.contains(&snapshot), "{}", list.stdout);
    let mut command = dr_command();
    command.current_dir(empty.path()).env("DR_REPOSITORY_URL", &env_repo).env("DR_IDENTITY_FILE", &other);
    run(command.args(["verify", "--all"])).ok();
}

/// The README's first command: the whole round trip and a restore drill, leaving nothing behind.
#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    let tmp = tempfile::Builder::new().prefix("dr-demo-tmp-").tempdir().unwrap();
    let output = common::dr_command().arg("demo").env("TMPDIR", tmp.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("ok  restore drill"), "{stdout}");
    assert!(stdout.contains("7 checks passed; RTO"), "{stdout}");
    assert!(stdout.contains("The restored site is identical to the original (10 steps"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}
