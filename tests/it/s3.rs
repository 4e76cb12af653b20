//! The S3 store against a real S3-compatible server (Garage): pagination, the whole
//! round trip through the `dr` binary, damage found on S3, and the errors a user can cause (missing bucket,
//! refused credentials, unreachable endpoint, settings that cannot work).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::Command;

use bytes::Bytes;
use common::garage::Garage;
use common::{DATABASE, Run, Site, UPLOAD_EXCLUDES, database_exists, fingerprint, listing, roles, scratch};
use dr::Store;
use dr::store::S3Store;

#[tokio::test(flavor = "multi_thread")]
async fn listings_follow_pagination() {
    let Some(garage) = Garage::start() else { return };
    let mut options = garage.options("paged/repo");
    options.list_page_size = 7;
    let store = S3Store::new(options).await;
    let mut expected = Vec::new();
    for i in 0..40 {
        let key = format!("snapshots/{i:04}.json");
        store.put(&key, Bytes::from(format!("{i}"))).await.unwrap();
        expected.push(key);
    }
    store.put("objects/other", Bytes::from_static(b"x")).await.unwrap();
    let listed: Vec<String> = store.list("snapshots/").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(listed, expected, "every page, in order, without the prefix and without other keys");
    assert_eq!(store.list("").await.unwrap().len(), 41);
}

// ---- The real `dr` binary against Garage ----

/// Runs `command` (a `dr` command) with `env` (normally [`Garage::env`]) added.
fn run_with(mut command: Command, env: &[(&'static str, String)]) -> Run {
    command.envs(env.iter().map(|(k, v)| (k, v)));
    common::run(&mut command)
}

/// A seeded site whose repository is `s3://BUCKET/prefix` on `garage`, initialized there.
async fn s3_site(garage: &Garage, prefix: &str) -> Site {
    let site = Site::new().await;
    site.write_config_with_repository(&garage.repository_toml(prefix, None), "");
    let run = s3_dr(&site, garage, &["init"]).ok();
    assert!(run.stdout.contains(&format!("s3://{}/{prefix}", garage.bucket)), "{}", run.stdout);
    site
}

fn s3_dr(site: &Site, garage: &Garage, args: &[&str]) -> Run {
    run_with(site.command(args), &garage.env())
}

fn s3_dr_with(site: &Site, garage: &Garage, args: &[&str], more: &[String]) -> Run {
    let mut command = site.command(args);
    command.args(more);
    run_with(command, &garage.env())
}

/// Keys (full, with the prefix) of every object in the bucket under `prefix`.
async fn bucket_keys(garage: &Garage, prefix: &str) -> Vec<String> {
    let listed = garage.client().await.list_objects_v2().bucket(&garage.bucket).prefix(prefix).send().await.unwrap();
    listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

async fn get_object(garage: &Garage, key: &str) -> Vec<u8> {
    let object = garage.client().await.get_object().bucket(&garage.bucket).key(key).send().await.unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn put_object(garage: &Garage, key: &str, data: Vec<u8>) {
    garage.client().await.put_object().bucket(&garage.bucket).key(key).body(data.into()).send().await.unwrap();
}

/// The repository key of a snapshot's object whose key ends with `suffix`, read from the manifest on S3.
async fn s3_object_key(garage: &Garage, prefix: &str, snapshot: &str, suffix: &str) -> String {
    let manifest = get_object(garage, &format!("{prefix}/snapshots/{snapshot}.json")).await;
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    common::object_entry(&mut manifest, suffix)["key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_core_round_trip_works_on_s3() {
    let Some(garage) = Garage::start() else { return };
    let prefix = "site/isntgram";
    let site = s3_site(&garage, prefix).await;
    // Incompressible rows make a dump of several 5 MiB parts: the multipart path, through the real binary.
    common::add_random_table(&site.db, DATABASE, "blobs", 12).await;

    let backup = s3_dr(&site, &garage, &["backup", "-v"]).ok();
    let snapshot = backup.stdout.trim().to_string();
    assert_eq!(snapshot.len(), 23, "backup prints the snapshot id, got {snapshot:?}");
    assert!(!backup.all_output().contains(&garage.secret), "the secret key must never be printed or logged");
    assert!(!site.repo.join("snapshots").exists(), "nothing went to the local repository");

    // Everything is in the bucket, under the prefix; no multipart upload is left open.
    let keys = bucket_keys(&garage, prefix).await;
    assert!(keys.contains(&format!("{prefix}/snapshots/{snapshot}.json")), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(&format!("{prefix}/"))), "{keys:?}");
    let dump_key = s3_object_key(&garage, prefix, &snapshot, "app/pg_dump.zst.age").await;
    let dump = garage
        .client()
        .await
        .head_object()
        .bucket(&garage.bucket)
        .key(format!("{prefix}/{dump_key}"))
        .send()
        .await
        .unwrap();
    assert!(dump.content_length().unwrap() > 10 << 20, "the dump spans several parts: {dump:?}");
    assert!(dump.e_tag().unwrap().contains('-'), "a multipart object: {:?}", dump.e_tag());
    assert!(garage.open_multipart_uploads().await.is_empty());

    // The manifest on S3 holds no credentials.
    let manifest =
        String::from_utf8(get_object(&garage, &format!("{prefix}/snapshots/{snapshot}.json")).await).unwrap();
    assert!(!manifest.contains(&garage.secret) && !manifest.contains(&garage.key_id), "{manifest}");

    let list = s3_dr(&site, &garage, &["snapshots", "--json"]).ok().json();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [snapshot.as_str()]);
    let sources: Vec<&str> =
        list[0]["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(sources, ["app", "config", "uploads"]);

    let verify = s3_dr(&site, &garage, &["verify", "--all", "--json"]).ok().json();
    let objects = verify["snapshots"][0]["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 6, "dump, globals, 2 x (tar, index)");
    assert!(objects.iter().all(|o| o["error"].is_null()), "{verify}");

    let original = fingerprint(&site.db, DATABASE).await;
    assert!(original.len() >= 15, "the fixture has many tables: {original:?}");
    let original_roles = roles(&site.db).await;
    for jobs in ["2", "1"] {
        let target = scratch().await;
        let restored = site.path(&format!("restored-{jobs}"));
        let run = s3_dr_with(
            &site,
            &garage,
            &["restore", "--to", "latest", "--jobs", jobs],
            &Site::into_args(&target.url(DATABASE), &restored),
        )
        .ok();
        assert!(run.stdout.contains(&snapshot), "{}", run.stdout);
        assert!(!run.all_output().contains(&garage.secret));

        assert_eq!(
            fingerprint(&target, DATABASE).await,
            original,
            "--jobs {jobs}: every table, sequence, large object"
        );
        assert_eq!(roles(&target).await, original_roles, "--jobs {jobs}: roles, with their password hashes");
        assert_eq!(listing(&restored.join("config"), &[]), listing(&site.config_dir(), &[]), "--jobs {jobs}");
        let uploads = listing(&restored.join("uploads"), &[]);
        assert_eq!(uploads, listing(&site.uploads_dir(), &UPLOAD_EXCLUDES), "--jobs {jobs}: modes, mtimes, links");
        assert_eq!(uploads["dangling.jpg"], "symlink -> missing.jpg");
        assert!(uploads["albums/restricted"].starts_with("dir 750 "));
    }

    // A restore drill from S3: every check passes, and its encrypted record lands in the bucket.
    let drill = s3_dr(&site, &garage, &["drill", "--json"]).ok().json();
    assert_eq!(drill["snapshot"], snapshot.as_str());
    assert_eq!(drill["succeeded"], true, "{drill:#}");
    let record_key = format!("{prefix}/drills/{}.json.age", drill["id"].as_str().unwrap());
    assert!(bucket_keys(&garage, prefix).await.contains(&record_key), "the record is on S3: {record_key}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_on_s3_is_named_by_verify_and_refused_by_restore() {
    let Some(garage) = Garage::start() else { return };
    let prefix = "tampered";
    let site = s3_site(&garage, prefix).await;
    let snapshot = s3_dr(&site, &garage, &["backup"]).ok().stdout.trim().to_string();
    let key = s3_object_key(&garage, prefix, &snapshot, "app/pg_dump.zst.age").await;
    let full = format!("{prefix}/{key}");
    let mut bytes = get_object(&garage, &full).await;
    let at = bytes.len() - 300;
    bytes[at] ^= 0x01;
    put_object(&garage, &full, bytes).await;

    let run = s3_dr(&site, &garage, &["verify"]);
    assert!(run.stdout.contains(&format!("{snapshot} BAD")), "{}", run.stdout);
    let error = run.user_error(1);
    assert!(error.contains(&key) && error.contains("corrupt"), "{error}");

    let run = s3_dr(&site, &garage, &["verify", "--all", "--json"]);
    let report = run.json();
    run.user_error(1);
    let objects = report["snapshots"][0]["objects"].as_array().unwrap();
    let bad: Vec<&str> = objects.iter().filter(|o| !o["error"].is_null()).map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(bad, [key.as_str()], "only the damaged object is bad, and every object was read: {report}");
    assert_eq!(objects.len(), 6);

    let target = scratch().await;
    for jobs in ["2", "1"] {
        let into = format!("app={}", target.url(DATABASE));
        let run =
            s3_dr(&site, &garage, &["restore", "--to", "latest", "--only", "app", "--jobs", jobs, "--into", &into]);
        let error = run.user_error(1);
        assert!(error.contains(&key), "--jobs {jobs}: {error}");
        assert!(!database_exists(&target, DATABASE).await, "--jobs {jobs}: nothing is left in the target");
    }
}

/// A dr.toml with only a repository section.
fn write_repository_config(dir: &std::path::Path, repository: &str) -> std::path::PathBuf {
    let path = dir.join("dr.toml");
    std::fs::write(&path, repository).unwrap();
    path
}

fn init(config: &std::path::Path, env: &[(&'static str, String)]) -> Run {
    let mut command = common::dr_command();
    command.arg("--config").arg(config).arg("init");
    run_with(command, env)
}

/// The user-facing failure of a `dr init`: exit 1, one error line, a hint; no secret anywhere.
#[track_caller]
fn init_error(run: Run, garage: &Garage) -> (String, String) {
    assert!(!run.all_output().contains(&garage.secret), "the secret key must never be printed:\n{}", run.stderr);
    let hint = run.hint().unwrap_or_default();
    let error = run.user_error(1);
    (error, hint)
}

#[tokio::test(flavor = "multi_thread")]
async fn init_explains_a_missing_bucket_refused_credentials_and_an_existing_repository() {
    let Some(garage) = Garage::start() else { return };
    let dir = tempfile::tempdir().unwrap();

    let missing =
        garage.repository_toml("x", None).replace(&format!("s3://{}/", garage.bucket), "s3://no-such-bucket/");
    let config = write_repository_config(dir.path(), &missing);
    let (error, hint) = init_error(init(&config, &garage.env()), &garage);
    assert!(error.contains("no-such-bucket") && error.contains("does not exist"), "{error}");
    assert!(hint.contains("create the bucket"), "{hint}");

    let config = write_repository_config(dir.path(), &garage.repository_toml("creds", None));
    let mut env = garage.env();
    let wrong_secret: String = garage.secret.chars().rev().collect();
    env.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY", wrong_secret.clone()));
    let run = init(&config, &env);
    assert!(!run.all_output().contains(&wrong_secret), "{}", run.stderr);
    let (error, hint) = init_error(run, &garage);
    assert!(error.contains("credentials"), "{error}");
    assert!(hint.contains("AWS_SECRET_ACCESS_KEY"), "{hint}");

    let mut env = garage.env();
    env.retain(|(k, _)| *k != "AWS_ACCESS_KEY_ID");
    env.push(("AWS_ACCESS_KEY_ID", "GK000000000000000000000000".to_string()));
    let (error, _) = init_error(init(&config, &env), &garage);
    assert!(error.contains("credentials"), "an unknown key id: {error}");
    assert!(bucket_keys(&garage, "creds").await.is_empty(), "a refused init writes nothing");

    // Once initialized, a second init refuses and says the repository is there.
    let run = init(&config, &garage.env()).ok();
    assert!(!run.all_output().contains(&garage.secret));
    let (error, hint) = init_error(init(&config, &garage.env()), &garage);
    assert!(error.contains("already exists"), "{error}");
    assert!(hint.contains("dr snapshots"), "{hint}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_explains_an_unreachable_endpoint() {
    let Some(garage) = Garage::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nobody listens on: connections are refused at once, and an endpoint that never answered is
    // not retried (a wrong endpoint or a server that is down; docs/s3.md).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = write_repository_config(dir.path(), &garage.repository_toml("x", Some(&endpoint)));
    let started = std::time::Instant::now();
    let run = init(&config, &garage.env());
    let elapsed = started.elapsed();
    assert!(!run.stderr.contains("retrying"), "not retried:\n{}", run.stderr);
    assert!(elapsed < std::time::Duration::from_secs(5), "it fails at once: {elapsed:?}");
    let (error, hint) = init_error(run, &garage);
    assert!(error.contains("cannot reach") && error.contains(&endpoint), "{error}");
    assert!(hint.contains("endpoint"), "{hint}");
    eprintln!("an unreachable endpoint took {elapsed:?} to give up on");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_says_at_once_when_no_credentials_are_found() {
    let Some(garage) = Garage::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = write_repository_config(dir.path(), &garage.repository_toml("x", None));
    // The environment of a host with no AWS set-up at all.
    let env: Vec<(&'static str, String)> = garage
        .env()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("AWS_ACCESS") && !name.starts_with("AWS_SECRET"))
        .collect();
    let mut command = common::dr_command();
    command.arg("--config").arg(&config).arg("init");
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
        command.env_remove(name);
    }
    let started = std::time::Instant::now();
    let run = run_with(command, &env);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "not retried like a network failure");
    assert!(!run.stderr.contains("WARN"), "the SDK's own provider warnings stay quiet:\n{}", run.stderr);
    let (error, hint) = init_error(run, &garage);
    assert!(error.ends_with("no S3 credentials found"), "{error}");
    assert!(hint.contains("AWS_ACCESS_KEY_ID"), "{hint}");
}

#[test]
fn the_binary_refuses_s3_settings_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[repository]\nurl = \"file:///var/lib/dr/repo\"\nendpoint = \"http://127.0.0.1:3900\"\n", "endpoint"),
        ("[repository]\nurl = \"s3://dr-backups/site\"\npart_size = \"1MiB\"\n", "part_size"),
        ("[repository]\nurl = \"s3://Dr_Backups/site\"\n", "bucket name"),
    ];
    for (repository, named) in cases {
        let config = write_repository_config(dir.path(), repository);
        let error = init(&config, &[]).user_error(1);
        assert!(error.contains(named), "{repository}: {error}");
    }
}

/// Not even a trace log of every crate (the SDK's signing, hyper's requests) shows the secret key.
#[tokio::test(flavor = "multi_thread")]
async fn the_secret_key_is_absent_even_from_trace_logs() {
    let Some(garage) = Garage::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = write_repository_config(dir.path(), &garage.repository_toml("trace", None));
    let mut command = common::dr_command();
    command.arg("--config").arg(&config).arg("init").env("RUST_LOG", "trace");
    let run = run_with(command, &garage.env()).ok();
    assert!(run.stderr.len() > 10_000, "a trace log was written:\n{}", run.stderr);
    assert!(!run.all_output().contains(&garage.secret), "the secret key is in the trace log");
}
