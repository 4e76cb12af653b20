//! Fault injection between dr and a real S3 server (Garage): a proxy (tests/common/faults.rs) answers chosen
//! requests with 500/503, drops connections or delays them. Transient faults are retried and change nothing in
//! what is stored; permanent ones fail cleanly, leaving no snapshot, no objects and no open multipart upload;
//! an interrupted download resumes from the byte where it broke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::faults::{Action, FaultProxy, Gate, Rule, describe};
use common::garage::Garage;
use common::{DATABASE, FilesSite, Run, Site, UPLOAD_EXCLUDES, dr_command, fingerprint, listing};
use dr::Store;
use dr::retry::RetryPolicy;
use dr::store::s3::MIN_PART_SIZE;
use dr::store::{S3Options, S3Store};
use tokio::io::AsyncReadExt;

const MIB: usize = 1 << 20;

/// Short backoffs, so that the in-process tests retry in milliseconds.
fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(30),
    }
}

fn options(garage: &Garage, prefix: &str, endpoint: Option<&str>) -> S3Options {
    let mut options = garage.options(prefix);
    if let Some(endpoint) = endpoint {
        options.endpoint = Some(endpoint.to_string());
    }
    options.part_size = MIN_PART_SIZE;
    options.retry = quick_retry();
    options
}

/// A store on Garage directly, and one through the proxy, on the same prefix.
async fn stores(garage: &Garage, proxy: &FaultProxy, prefix: &str) -> (S3Store, S3Store) {
    let direct = S3Store::new(options(garage, prefix, None)).await;
    let proxied = S3Store::new(options(garage, prefix, Some(&proxy.url()))).await;
    (direct, proxied)
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for chunk in bytes.chunks_mut(8) {
        let word = rand::random::<u64>().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    bytes
}

/// Writes `data` through a streaming writer, in 1 MiB chunks as the pipeline does.
async fn upload(store: &S3Store, key: &str, data: &[u8]) -> dr::Result<()> {
    let mut writer = store.put_stream(key).await?;
    for chunk in data.chunks(MIB) {
        if let Err(e) = writer.write(Bytes::copy_from_slice(chunk)).await {
            let _ = writer.abort().await;
            return Err(e);
        }
    }
    writer.finish().await
}

async fn read_all(store: &S3Store, key: &str) -> std::io::Result<Vec<u8>> {
    let mut reader = store.get(key).await.map_err(std::io::Error::other)?;
    let mut data = Vec::new();
    reader.read_to_end(&mut data).await?;
    Ok(data)
}

/// Polls until no multipart upload is open in the bucket (an abort may finish just after the error returns).
async fn assert_no_open_upload(garage: &Garage) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = garage.open_multipart_uploads().await;
        if open.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "multipart uploads left open: {open:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_upload_faults_are_retried_with_the_same_bytes() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (direct, proxied) = stores(&garage, &proxy, "transient").await;
    let data = random_bytes(17 * MIB + 12_345); // parts 1-3 of 5 MiB and a last one of 2 MiB
    let part = |n: u32| format!("partNumber={n}&");
    let slow_down = proxy.add(Rule::new("PUT", &part(2), Action::Error { status: 503, close: false }));
    let dropped = proxy.add(Rule::new("PUT", &part(3), Action::Drop));
    let unheard = proxy.add(Rule::new("PUT", &part(1), Action::DropAfter { bytes: 0 }));
    let internal = proxy.add(Rule::new("POST", "uploadId=", Action::Error { status: 500, close: true }));
    let delayed = proxy.add(Rule::new("PUT", &part(4), Action::Delay(Duration::from_millis(300))));

    upload(&proxied, "objects/big", &data).await.unwrap_or_else(|e| panic!("{e}\n{}", describe(&proxy.seen())));

    for rule in [slow_down, dropped, unheard, internal, delayed] {
        assert_eq!(proxy.fired(rule), 1, "rule {rule}:\n{}", describe(&proxy.seen()));
    }
    assert_eq!(proxy.matched(slow_down), 2, "part 2 was sent again");
    assert_eq!(proxy.matched(dropped), 2, "part 3 was sent again");
    assert_eq!(proxy.matched(unheard), 2, "part 1 was sent again, though the server had it");
    assert_eq!(proxy.matched(internal), 2, "the completion was sent again");
    assert_eq!(read_all(&direct, "objects/big").await.unwrap(), data, "the stored object is the original");
    assert_no_open_upload(&garage).await;

    // SigV4 signs each request's payload hash, and Garage checks it: every attempt at a part carried the same
    // SHA-256, so a retry re-sent the very same bytes.
    for n in 1..=4 {
        let hashes: std::collections::BTreeSet<String> = proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.target.contains(&part(n)))
            .map(|s| s.header("x-amz-content-sha256").unwrap_or_default().to_string())
            .collect();
        assert_eq!(hashes.len(), 1, "part {n}: {hashes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_whose_answer_was_lost_is_not_a_failure() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (direct, proxied) = stores(&garage, &proxy, "lost-answer").await;
    let data = random_bytes(11 * MIB);
    // Garage completes the upload, but dr never hears the answer and sends the completion again.
    let lost = proxy.add(Rule::new("POST", "uploadId=", Action::DropAfter { bytes: 0 }));
    upload(&proxied, "objects/big", &data).await.unwrap_or_else(|e| panic!("{e}\n{}", describe(&proxy.seen())));
    assert_eq!(proxy.matched(lost), 2);
    assert_eq!(read_all(&direct, "objects/big").await.unwrap(), data);
    assert_no_open_upload(&garage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_interrupted_mid_object_resumes_from_the_last_byte() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (direct, proxied) = stores(&garage, &proxy, "resume").await;
    let data = random_bytes(20 * MIB + 777);
    upload(&direct, "objects/big", &data).await.unwrap();

    let cut = 3 * MIB as u64;
    let rule = proxy.add(Rule::new("GET", "objects/big", Action::DropAfter { bytes: cut }).times(2));
    let read = read_all(&proxied, "objects/big").await.unwrap_or_else(|e| panic!("{e}\n{}", describe(&proxy.seen())));
    assert!(read == data, "the bytes read are the original ones ({} of {} bytes)", read.len(), data.len());

    assert_eq!(proxy.fired(rule), 2);
    let ranges: Vec<Option<String>> =
        proxy.seen().iter().filter(|s| s.method == "GET").map(|s| s.range.clone()).collect();
    assert_eq!(
        ranges,
        [None, Some(format!("bytes={cut}-")), Some(format!("bytes={}-", 2 * cut))],
        "each resumption starts at the first byte not received"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_download_refuses_an_object_replaced_meanwhile() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (direct, proxied) = stores(&garage, &proxy, "replaced").await;
    let data = random_bytes(12 * MIB);
    upload(&direct, "objects/big", &data).await.unwrap();

    // The first GET breaks after 1 MiB; the resuming GET is held while the object is replaced (same size).
    let gate = Gate::new();
    proxy.add(Rule::new("GET", "objects/big", Action::DropAfter { bytes: MIB as u64 }));
    let held = proxy.add(Rule::new("GET", "objects/big", Action::Hold(gate.clone())).after(1));
    let replacement = random_bytes(12 * MIB);
    let replace = async {
        while proxy.fired(held) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        upload(&direct, "objects/big", &replacement).await.unwrap();
        gate.open();
    };
    let (read, ()) = tokio::join!(read_all(&proxied, "objects/big"), replace);
    assert_eq!(proxy.seen().last().unwrap().range.as_deref(), Some("bytes=1048576-"), "the resumed GET");
    let error = read.expect_err("two versions of an object must never be spliced").to_string();
    assert!(error.contains("changed while it was being read"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_upload_fault_aborts_the_multipart_upload() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (direct, proxied) = stores(&garage, &proxy, "permanent").await;
    let failing = proxy.add(Rule::new("PUT", "partNumber=2&", Action::Error { status: 500, close: false }).always());

    let error = upload(&proxied, "objects/big", &random_bytes(17 * MIB)).await.unwrap_err().to_string();
    assert!(error.contains("objects/big") && error.contains("InternalError"), "{error}");
    assert_eq!(proxy.matched(failing), quick_retry().max_attempts as usize, "every attempt the policy allows");
    assert_eq!(proxy.count("DELETE", "uploadId="), 1, "the upload was aborted:\n{}", describe(&proxy.seen()));
    assert_no_open_upload(&garage).await;
    assert!(direct.list("").await.unwrap().is_empty(), "nothing is visible");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_writer_aborts_its_multipart_upload() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (direct, proxied) = stores(&garage, &proxy, "dropped").await;
    let mut writer = proxied.put_stream("objects/big").await.unwrap();
    for chunk in random_bytes(12 * MIB).chunks(MIB) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(garage.open_multipart_uploads().await.len(), 1, "an upload is in progress");
    drop(writer);
    assert_no_open_upload(&garage).await;
    assert!(direct.list("").await.unwrap().is_empty(), "nothing is visible");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_whose_answer_was_lost_is_not_a_failure() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let (_, proxied) = stores(&garage, &proxy, "lost-abort").await;
    let mut writer = proxied.put_stream("objects/big").await.unwrap();
    for chunk in random_bytes(11 * MIB).chunks(MIB) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let lost = proxy.add(Rule::new("DELETE", "uploadId=", Action::DropAfter { bytes: 0 }));
    writer.abort().await.unwrap_or_else(|e| panic!("{e}\n{}", describe(&proxy.seen())));
    assert_eq!(proxy.matched(lost), 2, "the abort was sent again, and its NoSuchUpload means done");
    assert_no_open_upload(&garage).await;
}

// ---- The real `dr` binary through the proxy (the default retry policy, its delays shrunk by DR_RETRY_BASE) ----

/// The first backoff of the `dr` runs below: the default policy's attempts, in milliseconds instead of seconds.
const QUICK_BACKOFF: &str = "10ms";

/// The `[[files]]` sections of a site whose files live in `root/site`.
fn files_sources(root: &Path) -> String {
    format!(
        "[[files]]\nname = \"config\"\npath = \"{config}\"\nformat = \"tar\"\n\n[[files]]\nname = \"uploads\"\n\
         path = \"{uploads}\"\nexclude = [{excludes}]\nformat = \"tar\"\n",
        config = root.join("site/config").display(),
        uploads = root.join("site/uploads").display(),
        excludes = UPLOAD_EXCLUDES.map(|e| format!("{e:?}")).join(", "),
    )
}

/// Two configurations for the same repository: one reaching Garage directly, one through the proxy.
fn s3_configs(dir: &Path, garage: &Garage, proxy: &FaultProxy, prefix: &str, rest: &str) -> (PathBuf, PathBuf) {
    let direct = dir.join("direct.toml");
    let proxied = dir.join("proxied.toml");
    std::fs::write(&direct, format!("{}\n{rest}", garage.repository_toml(prefix, None))).unwrap();
    std::fs::write(&proxied, format!("{}\n{rest}", garage.repository_toml(prefix, Some(&proxy.url())))).unwrap();
    (direct, proxied)
}

fn dr_at(garage: &Garage, config: &Path, args: &[&str]) -> Run {
    let mut command = dr_command();
    command.arg("--config").arg(config).args(args).envs(garage.env()).env(dr::retry::BASE_OVERRIDE_VAR, QUICK_BACKOFF);
    common::run(&mut command)
}

/// A files-only site with a 13 MiB incompressible upload (a multipart object), its repository initialized on
/// Garage under `prefix`; returns the direct and proxied configurations.
fn files_site(garage: &Garage, proxy: &FaultProxy, prefix: &str) -> (FilesSite, PathBuf, PathBuf) {
    let site = FilesSite::new();
    common::write_random_file(&site.path("site/uploads/video.bin"), 13 * MIB);
    let rest = format!("{}\n{}", site.encryption(), files_sources(site.dir.path()));
    let (direct, proxied) = s3_configs(site.dir.path(), garage, proxy, prefix, &rest);
    dr_at(garage, &direct, &["init"]).ok();
    (site, direct, proxied)
}

/// Every key in the bucket under `prefix`.
async fn bucket_keys(garage: &Garage, prefix: &str) -> Vec<String> {
    let listed = garage.client().await.list_objects_v2().bucket(&garage.bucket).prefix(prefix).send().await.unwrap();
    listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

fn snapshot_ids(garage: &Garage, config: &Path) -> Vec<String> {
    let list = dr_at(garage, config, &["snapshots", "--json"]).ok().json();
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// After a failed backup: no snapshot, no object of it, no multipart upload left open.
async fn assert_nothing_left(garage: &Garage, direct: &Path, prefix: &str) {
    assert_eq!(snapshot_ids(garage, direct), Vec::<String>::new(), "no snapshot was committed");
    assert_eq!(bucket_keys(garage, &format!("{prefix}/objects/")).await, Vec::<String>::new(), "objects deleted");
    assert_eq!(bucket_keys(garage, &format!("{prefix}/snapshots/")).await, Vec::<String>::new(), "no manifest");
    assert_no_open_upload(garage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_through_transient_faults_completes_with_identical_contents() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let prefix = "transient/site";
    let site = Site::new().await;
    // Incompressible rows and an incompressible file: a dump and an archive of several 5 MiB parts each.
    common::add_random_table(&site.db, DATABASE, "blobs", 12).await;
    common::write_random_file(&site.uploads_dir().join("video.bin"), 13 * MIB);
    let rest = format!(
        "[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\n[[postgres]]\nname = \"app\"\nurl = \"{}\"\n\
         globals = true\n\n{}",
        site.recipient,
        site.identity.display(),
        site.db.url(DATABASE),
        files_sources(site.dir.path()),
    );
    let (direct, proxied) = s3_configs(site.dir.path(), &garage, &proxy, prefix, &rest);
    dr_at(&garage, &direct, &["init"]).ok();

    let part = "x-id=UploadPart";
    let rules = [
        proxy.add(Rule::new("PUT", part, Action::Error { status: 503, close: false }).and("partNumber=2&")),
        proxy.add(Rule::new("PUT", part, Action::DropAfter { bytes: 0 }).and("partNumber=3&")),
        proxy.add(Rule::new("POST", "uploadId=", Action::Error { status: 500, close: true })),
        // A plain PUT of a small object, dropped before it reaches the server.
        proxy.add(Rule::new("PUT", "/objects/", Action::Drop).except(part)),
        proxy.add(Rule::new("PUT", "/snapshots/", Action::Delay(Duration::from_millis(500)))),
    ];
    let backup = dr_at(&garage, &proxied, &["backup"]);
    let seen = describe(&proxy.seen());
    let backup = Run { stderr: format!("{}\nproxy log:\n{seen}", backup.stderr), ..backup }.ok();
    for rule in rules {
        assert_eq!(proxy.fired(rule), 1, "rule {rule}:\n{seen}");
    }
    for rule in &rules[..4] {
        assert!(proxy.matched(*rule) >= 2, "rule {rule}: the request was retried\n{seen}");
    }
    assert!(backup.stderr.matches("retrying").count() >= 4, "a log line per retry:\n{}", backup.stderr);
    let snapshot = backup.stdout.trim().to_string();
    assert_eq!(snapshot_ids(&garage, &direct), [snapshot]);
    assert_no_open_upload(&garage).await;

    // Restored straight from Garage: the same rows and files.
    let restored = site.path("restored");
    let mut command = dr_command();
    command
        .arg("--config")
        .arg(&direct)
        .args(["restore", "--to", "latest"])
        .args(Site::into_args(&site.db.url("restored"), &restored))
        .envs(garage.env())
        .env(dr::retry::BASE_OVERRIDE_VAR, QUICK_BACKOFF);
    common::run(&mut command).ok();
    assert_eq!(fingerprint(&site.db, "restored").await, fingerprint(&site.db, DATABASE).await);
    assert_eq!(listing(&restored.join("config"), &[]), listing(&site.config_dir(), &[]));
    assert_eq!(listing(&restored.join("uploads"), &[]), listing(&site.uploads_dir(), &UPLOAD_EXCLUDES));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_fault_fails_the_backup_cleanly() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let prefix = "permanent/site";
    let (_site, direct, proxied) = files_site(&garage, &proxy, prefix);
    let denied = proxy.add(Rule::new("PUT", "x-id=UploadPart", Action::Error { status: 403, close: false }).always());

    let run = dr_at(&garage, &proxied, &["backup"]);
    let error = run.user_error(1);
    assert!(error.contains(&format!("s3://{}/{prefix}", garage.bucket)), "names the repository: {error}");
    assert!(error.contains("uploads/files.tar"), "names the object: {error}");
    assert!(error.contains("AccessDenied"), "{error}");
    assert!(proxy.fired(denied) >= 1);
    assert!(proxy.count("DELETE", "uploadId=") >= 1, "the upload was aborted:\n{}", describe(&proxy.seen()));
    assert_nothing_left(&garage, &direct, prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_cannot_be_written_leaves_no_snapshot_and_no_objects() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let prefix = "manifest/site";
    let (_site, direct, proxied) = files_site(&garage, &proxy, prefix);
    let failing = proxy.add(Rule::new("PUT", "/snapshots/", Action::Error { status: 500, close: false }).always());

    let run = dr_at(&garage, &proxied, &["backup"]);
    let stderr = run.stderr.clone();
    let error = run.user_error(1);
    assert!(error.contains("snapshots/") && error.contains("InternalError"), "{error}");
    assert_eq!(proxy.fired(failing), 8, "every attempt of the default policy:\n{stderr}");
    let retries = stderr.lines().filter(|l| l.contains("retrying") && l.contains("snapshots/")).count();
    assert_eq!(retries, 7, "a log line per retry:\n{stderr}");
    assert!(proxy.count("DELETE", "/objects/") >= 4, "the snapshot's objects were deleted");
    assert_nothing_left(&garage, &direct, prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_and_verify_resume_an_interrupted_download() {
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let prefix = "download/site";
    let (site, direct, proxied) = files_site(&garage, &proxy, prefix);
    dr_at(&garage, &direct, &["backup"]).ok();

    let cut = 3 * MIB as u64;
    let rule = proxy.add(Rule::new("GET", "uploads/files.tar", Action::DropAfter { bytes: cut }));
    let restored = site.path("restored");
    let mut command = dr_command();
    command
        .arg("--config")
        .arg(&proxied)
        .args(["restore", "--to", "latest"])
        .arg("--into")
        .arg(format!("config={}", restored.join("config").display()))
        .arg("--into")
        .arg(format!("uploads={}", restored.join("uploads").display()))
        .envs(garage.env())
        .env(dr::retry::BASE_OVERRIDE_VAR, QUICK_BACKOFF);
    let run = common::run(&mut command);
    let seen = describe(&proxy.seen());
    let run = Run { stderr: format!("{}\nproxy log:\n{seen}", run.stderr), ..run }.ok();
    assert_eq!(proxy.fired(rule), 1);
    let tar_gets: Vec<Option<String>> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.target.contains("uploads/files.tar"))
        .map(|s| s.range.clone())
        .collect();
    assert_eq!(tar_gets, [None, Some(format!("bytes={cut}-"))], "resumed where it broke:\n{seen}");
    assert!(run.stderr.contains("resuming from byte"), "{}", run.stderr);
    assert_eq!(listing(&restored.join("uploads"), &[]), listing(&site.path("site/uploads"), &UPLOAD_EXCLUDES));
    assert_eq!(listing(&restored.join("config"), &[]), listing(&site.path("site/config"), &[]));

    proxy.add(Rule::new("GET", "uploads/files.tar", Action::DropAfter { bytes: cut }));
    let verify = dr_at(&garage, &proxied, &["verify", "--json"]).ok().json();
    let objects = verify["snapshots"][0]["objects"].as_array().unwrap();
    assert!(!objects.is_empty() && objects.iter().all(|o| o["error"].is_null()), "{verify}");
    assert_eq!(proxy.count("GET", "uploads/files.tar"), 4, "verify's read was resumed too");
}
