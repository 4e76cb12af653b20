//! Fault injection between dr and a real S3 server (Garage): a proxy (tests/common/faults.rs) answers chosen
//! requests with 500/503, drops connections or delays them. Transient faults are retried and change nothing in
//! what is stored; permanent ones fail cleanly, leaving no snapshot, no objects and no open multipart upload;
//! an interrupted download resumes from the byte where it broke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::faults::{Action, FaultProxy, Rule, describe};
use common::garage::Garage;
use dr::Store;
use dr::store::retry::RetryPolicy;
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

    // The first GET breaks after 1 MiB; the resuming GET waits while the object is replaced (same size).
    proxy.add(Rule::new("GET", "objects/big", Action::DropAfter { bytes: MIB as u64 }));
    proxy.add(Rule::new("GET", "objects/big", Action::Delay(Duration::from_secs(3))).after(1));
    let replace = {
        let proxy_seen = || proxy.count("GET", "objects/big");
        let started = Instant::now();
        let replacement = random_bytes(12 * MIB);
        let reader = read_all(&proxied, "objects/big");
        let writer = async {
            while proxy_seen() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            upload(&direct, "objects/big", &replacement).await.unwrap();
            started.elapsed()
        };
        let (read, replaced_at) = tokio::join!(reader, writer);
        (read, replaced_at, started.elapsed())
    };
    let (read, replaced_at, total) = replace;
    assert!(replaced_at < total, "the object was replaced before the resumed GET went through");
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
