//! Messages that must not mislead (issue 11, item 10): each case is run through the real `dr` binary and its
//! rendered `error:` and `hint:` lines are pinned. One error line, a hint that fits, nothing that points the
//! operator at the wrong thing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FilesSite, Run, config_command, dr_command, free_port, run as exec, sql};

/// `dr.toml` of `site` with its `uploads` source pointing at `uploads` and `extra` appended.
fn config_with(site: &FilesSite, uploads: &Path, extra: &str) -> std::path::PathBuf {
    let text = fs::read_to_string(&site.config_path).unwrap();
    let text = text.replace(&site.path("site/uploads").display().to_string(), &uploads.display().to_string());
    let path = site.path("messages.toml");
    fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

#[test]
fn a_missing_files_root_says_it_does_not_exist_before_the_backup_starts() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    let missing = site.path("site/uplaods");
    let config = config_with(&site, &missing, "");
    let run = exec(&mut config_command(&config, &["backup"]));
    let hint = run.hint().unwrap();
    let stderr = run.stderr.clone();
    let error = run.user_error(1);
    assert_eq!(error, format!("error: files source \"uploads\": {} does not exist", missing.display()));
    assert_eq!(
        hint,
        "hint: create the directory (or mount the volume that holds it), or fix `path` in the [[files]] section \
         named \"uploads\"; `--only` backs up the other sources meanwhile"
    );
    // Item 10: nothing says a backup started that never did.
    assert!(!stderr.contains("backup started"), "{stderr}");
    assert_eq!(common::files_below(&site.repo.join("snapshots")), Vec::<String>::new());
}

#[test]
fn restoring_into_a_regular_file_names_the_source_and_what_to_do() {
    let site = FilesSite::new();
    site.init_and_backup();
    let file = site.path("not-a-directory");
    fs::write(&file, "keep me").unwrap();
    let into = format!("uploads={}", file.display());
    for force in [false, true] {
        let mut args = vec!["restore", "--to", "latest", "--only", "uploads", "--into", &into];
        if force {
            args.push("--force");
        }
        let run = site.dr(&args);
        let hint = run.hint().unwrap();
        let error = run.user_error(1);
        assert_eq!(
            error,
            format!(
                "error: cannot restore files source \"uploads\" into {}: it is a file, not a directory",
                file.display()
            )
        );
        assert_eq!(
            hint,
            "hint: restore somewhere else with --into uploads=DIRECTORY, or move the file away (even --force never \
             replaces a file with a directory)"
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_password_says_what_is_missing_and_where_it_can_come_from() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    let db = common::scratch().await;
    sql(&db, "postgres", "CREATE ROLE app LOGIN PASSWORD 'hunter2'").await;
    sql(&db, "postgres", "CREATE DATABASE shop OWNER app").await;
    // Passwords for everyone but the superuser the test itself connects as.
    let hba = db.socket_dir().parent().unwrap().join("data/pg_hba.conf");
    fs::write(&hba, "local all postgres trust\nlocal all all scram-sha-256\n").unwrap();
    sql(&db, "postgres", "SELECT pg_reload_conf()").await;

    let url = format!("host={} port={} dbname=shop user=app", db.socket_dir().display(), db.port());
    let config =
        config_with(&site, &site.path("site/uploads"), &format!("[[postgres]]\nname = \"app\"\nurl = \"{url}\"\n"));
    let home = tempfile::tempdir().unwrap();
    let backup = |password: Option<&str>| {
        let mut command = config_command(&config, &["backup"]);
        command.env("HOME", home.path()).env_remove("PGPASSWORD").env_remove("PGPASSFILE").env_remove("PGSERVICE");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        exec(&mut command)
    };
    let failed = backup(None);
    let hint = failed.hint().unwrap();
    let stderr = failed.stderr.clone();
    let error = failed.user_error(1);
    let target = format!("app@{}:{}/shop", db.socket_dir().display(), db.port());
    assert_eq!(
        error,
        format!(
            "error: database {target} (source \"app\"): the server asks for a password for user \"app\", and none \
             was found (not in the url, PGPASSWORD, a service, or the password file {}/.pgpass)",
            home.path().display()
        )
    );
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
    assert!(!stderr.contains("backup started"), "{stderr}");
    for place in ["PGPASSWORD", "~/.pgpass", "passfile", "PGPASSFILE", "pg_service.conf", "postgres://user:PASSWORD@"] {
        assert!(hint.contains(place), "{place}: {hint}");
    }
    // Where the hint says, it works.
    backup(Some("hunter2")).ok();
}

#[test]
fn an_empty_url_with_pgservice_names_the_service_and_where_it_leads() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    let services = site.path("pg_service.conf");
    fs::write(&services, "[site]\nhost=127.0.0.1\nport=1\nuser=app\ndbname=shop\n").unwrap();
    let config = config_with(&site, &site.path("site/uploads"), "[[postgres]]\nname = \"app\"\nurl = \"\"\n");
    let mut command = config_command(&config, &["backup"]);
    command.env("PGSERVICE", "site").env("PGSERVICEFILE", &services);
    let run = exec(&mut command);
    let stderr = run.stderr.clone();
    let error = run.user_error(1);
    assert!(error.starts_with("error: database service=site (app@127.0.0.1:1/shop) (source \"app\"): "), "{error}");
    assert!(error.contains("onnection refused"), "{error}");
    assert!(!stderr.contains("localhost/"), "{stderr}");
    assert!(!stderr.contains("backup started"), "an unreachable database is found before the backup starts:\n{stderr}");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    let run = exec(site.command(&["backup"]).env("DR_RECIPIENTS", "age1notakey"));
    let hint = run.hint().unwrap();
    let error = run.user_error(1);
    assert!(error.starts_with("error: environment variable DR_RECIPIENTS: recipient \"age1notakey\": "), "{error}");
    assert_eq!(
        hint,
        "hint: fix or unset DR_RECIPIENTS in dr's environment: it replaces [encryption] recipients (a \
         comma-separated list of age1... or ssh- public keys) of the configuration file (docs/configuration.md)"
    );

    let run = exec(site.command(&["snapshots"]).env("DR_REPOSITORY_URL", "ftp://backups/site"));
    let hint = run.hint().unwrap();
    let error = run.user_error(1);
    assert_eq!(
        error,
        "error: environment variable DR_REPOSITORY_URL: unsupported repository URL \"ftp://backups/site\": the ftp:// \
         scheme is not supported: use file:// or s3://"
    );
    assert!(hint.starts_with("hint: fix or unset DR_REPOSITORY_URL in dr's environment: it replaces [repository] url"));
}

#[test]
fn keygen_refuses_an_existing_file_with_a_hint_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.txt");
    fs::write(&path, "AGE-SECRET-KEY-1 an old key\n").unwrap();
    let run = exec(dr_command().arg("keygen").arg("--output").arg(&path));
    let hint = run.hint().unwrap();
    let error = run.user_error(1);
    assert_eq!(error, format!("error: refusing to write the identity to {}: the file already exists", path.display()));
    assert_eq!(
        hint,
        "hint: dr keygen never replaces a key file (the backups encrypted to it could not be restored without it): \
         choose another --output path, or remove the old file deliberately once nothing needs it"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "AGE-SECRET-KEY-1 an old key\n");
}

#[test]
fn a_time_before_every_snapshot_names_the_oldest() {
    let site = FilesSite::new();
    let oldest = site.init_and_backup();
    site.dr(&["backup"]).ok();
    let time: dr::SnapshotId = oldest.parse().unwrap();
    let taken = time.time().format("%Y-%m-%d %H:%M:%S UTC");
    let run = site.dr(&["restore", "--to", "2020-01-01T00:00:00Z"]);
    let hint = run.hint().unwrap();
    let error = run.user_error(1);
    assert_eq!(
        error,
        format!(
            "error: no snapshot was taken at or before 2020-01-01 00:00:00 UTC: the oldest is {oldest} (taken {taken})"
        )
    );
    assert_eq!(
        hint,
        format!(
            "hint: nothing older can be restored; --to {oldest} takes the oldest snapshot (`dr snapshots` lists them all)"
        )
    );
}

#[test]
fn a_bad_cron_field_is_pointed_at_on_lines_of_its_own() {
    let site = FilesSite::new();
    let config = config_with(
        &site,
        &site.path("site/uploads"),
        &format!(
            "[service]\nlisten = \"127.0.0.1:{}\"\n[[job]]\nname = \"weekly-drill\"\nschedule = \"0 4 * * Sun\"\n\
             run = \"drill\"\n",
            free_port()
        ),
    );
    let run = exec(&mut config_command(&config, &["serve"]));
    let stderr = run.stderr.clone();
    run.user_error(1);
    assert!(!stderr.contains("\\n"), "no escaped line breaks:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("error: ")).unwrap();
    assert_eq!(
        lines[at],
        "error: invalid configuration: job \"weekly-drill\" (in the configuration): schedule \"0 4 * * Sun\" is not a \
         valid cron expression; it has 5 fields, and dr's schedules have six (or seven, with years), seconds first: \
         \"0 5 * * * *\" is five past every hour:"
    );
    assert_eq!(lines[at + 1], "    0 4 * * Sun");
    // Under the fifth field: with five fields, "Sun" is read as the month.
    assert_eq!(lines[at + 2], "            ^ 'Sun' is not a valid month name.");
    assert!(lines[at + 3].starts_with("hint: "), "{stderr}");
}

/// Starts `dr args` waiting for a repository lock that the test holds, interrupts it, and returns the run.
async fn interrupted_while_waiting(site: &FilesSite, config: &Path, args: &[&str]) -> Run {
    let store: Arc<dyn dr::Store> = Arc::new(dr::store::LocalStore::new(&site.repo));
    let repo = dr::Repository::open(store).await.unwrap();
    let options = dr::repo::lock::LockOptions::new("prune");
    let held = repo.lock(dr::repo::lock::LockKind::Exclusive, &options).await.unwrap();
    let child = config_command(config, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, stderr) = common::interrupt(child);
    held.release().await.unwrap();
    Run { code: code.unwrap_or(-1), stdout: String::new(), stderr }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_command_gets_its_own_hint() {
    let site = FilesSite::new();
    site.init_and_backup();
    let config = config_with(&site, &site.path("site/uploads"), "[lock]\nwait = \"2m\"\n");
    let target = site.path("restored");
    let into = format!("uploads={}", target.display());

    let restore =
        interrupted_while_waiting(&site, &config, &["restore", "--to", "latest", "--only", "uploads", "--into", &into])
            .await;
    let hint = restore.hint().unwrap();
    assert_eq!(restore.user_error(130), "error: stopped by SIGINT before the command finished");
    assert_eq!(
        hint,
        "hint: the targets may be half-written (files are renamed into place only at the end, but a database \
         restored with --jobs above 1 is not one transaction): run the restore again with --force"
    );

    let verify = interrupted_while_waiting(&site, &config, &["verify", "--to", "latest"]).await;
    let hint = verify.hint().unwrap();
    assert_eq!(verify.user_error(130), "error: stopped by SIGINT before the command finished");
    assert_eq!(hint, "hint: nothing was changed; run the command again");

    let backup = interrupted_while_waiting(&site, &config, &["backup"]).await;
    let hint = backup.hint().unwrap();
    assert_eq!(backup.user_error(130), "error: stopped by SIGINT before the command finished");
    assert!(hint.starts_with("hint: an interrupted backup leaves no snapshot: nothing was committed"), "{hint}");
    assert!(!hint.contains("restore") && !hint.contains("prune is finished"), "{hint}");
}

#[test]
fn a_percent_encoded_file_url_is_decoded_and_a_malformed_one_refused() {
    let site = FilesSite::new();
    let text = fs::read_to_string(&site.config_path).unwrap();
    let repo_url = format!("file://{}", site.repo.display());
    let spaced = site.path("dr repo");
    let config = site.path("spaced.toml");
    fs::write(&config, text.replace(&repo_url, &format!("file://{}", site.path("dr%20repo").display()))).unwrap();
    exec(&mut config_command(&config, &["init"])).ok();
    assert!(spaced.join("config.json").exists(), "the repository is in {}", spaced.display());
    assert!(!site.path("dr%20repo").exists());
    exec(&mut config_command(&config, &["backup"])).ok();

    let bad_url = format!("file://{}", site.path("dr%zzrepo").display());
    fs::write(&config, text.replace(&repo_url, &bad_url)).unwrap();
    let run = exec(&mut config_command(&config, &["init"]));
    let hint = run.hint().unwrap();
    let error = run.user_error(1);
    assert_eq!(
        error,
        format!(
            "error: unsupported repository URL {bad_url:?}: \"%zz\" is not a percent-encoded byte (a % starts two hex \
             digits; a literal % is written %25)"
        )
    );
    assert!(hint.contains("file:///absolute/path"), "{hint}");
}

/// A configuration for an S3 repository at `endpoint` (nothing needs to answer there).
fn s3_config(dir: &Path, endpoint: &str) -> std::path::PathBuf {
    let path = dir.join("s3.toml");
    fs::write(
        &path,
        format!("[repository]\nurl = \"s3://dr-backups/site\"\nendpoint = \"{endpoint}\"\nregion = \"garage\"\n"),
    )
    .unwrap();
    path
}

#[test]
fn an_unreachable_s3_endpoint_fails_at_once_and_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    for (endpoint, reason) in [
        (format!("http://127.0.0.1:{port}"), "Connection refused"),
        ("http://dr-test.invalid:3900".to_string(), "dns error"),
    ] {
        let config = s3_config(dir.path(), &endpoint);
        let started = Instant::now();
        let run = exec(
            config_command(&config, &["init"])
                .env("AWS_ACCESS_KEY_ID", "GKtest")
                .env("AWS_SECRET_ACCESS_KEY", "secret")
                .env("AWS_EC2_METADATA_DISABLED", "true"),
        );
        let elapsed = started.elapsed();
        let stderr = run.stderr.clone();
        let hint = run.hint().unwrap();
        let error = run.user_error(1);
        assert!(elapsed < Duration::from_secs(5), "{endpoint}: took {elapsed:?}:\n{stderr}");
        assert!(!stderr.contains("WARN") && !stderr.contains("retrying"), "{endpoint}: not retried:\n{stderr}");
        assert!(
            error.starts_with(&format!(
                "error: repository s3://dr-backups/site at {endpoint}: cannot reach {endpoint}: "
            )),
            "{error}"
        );
        assert!(error.contains(reason), "{error}");
        assert_eq!(
            hint,
            "hint: check [repository] endpoint (is the server running, and listening there?), DNS and the network \
             path to it"
        );
    }
}

#[test]
fn missing_s3_credentials_are_said_in_one_short_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path(), &format!("http://127.0.0.1:{}", free_port()));
    let mut command = config_command(&config, &["init"]);
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN"] {
        command.env_remove(name);
    }
    command
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let run = exec(&mut command);
    let hint = run.hint().unwrap();
    let error = run.user_error(1);
    assert_eq!(
        error,
        format!("error: repository s3://dr-backups/site at {}: no S3 credentials found", {
            let text = fs::read_to_string(&config).unwrap();
            text.lines().find_map(|l| l.strip_prefix("endpoint = ")).unwrap().trim_matches('"').to_string()
        })
    );
    for named in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "~/.aws/credentials"] {
        assert!(hint.contains(named), "{named}: {hint}");
    }
}
