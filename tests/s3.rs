//! The S3 store against a real S3-compatible server (Garage): the shared store suite, pagination, and the
//! errors a user can cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::garage::Garage;
use dr::Store;
use dr::store::S3Store;

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_passes_the_store_conformance_suite() {
    let Some(garage) = Garage::start() else { return };
    let mut options = garage.options("conformance");
    options.part_size = dr::store::s3::MIN_PART_SIZE;
    let store = S3Store::new(options).await;
    store.check_access().await.unwrap();
    dr::store::conformance::run(&store).await;
    assert!(garage.open_multipart_uploads().await.is_empty(), "no upload is left open");
}

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
