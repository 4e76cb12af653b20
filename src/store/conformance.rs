//! The one test suite every [`Store`] must pass: the local and memory stores in unit tests, and real
//! servers in the integration tests. It panics on the first broken promise, naming it.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{Store, get_bytes};
use crate::error::Error;

/// Sizes that cross the interesting boundaries: empty, one byte, several multi-megabyte chunks, and (with S3's
/// smallest part size, 5 MiB) exactly one part and several parts with a short last one.
const SIZES: [usize; 6] = [0, 1, 4096, (1 << 20) + 1, 5 << 20, (12 << 20) + 3];

/// Runs the suite in a fresh namespace under `conformance/` and leaves nothing behind.
pub async fn run(store: &dyn Store) {
    let prefix = format!("conformance/{:08x}", rand::random::<u32>());

    for size in SIZES {
        let data = pattern(size);
        let key = format!("{prefix}/stream-{size}");
        let mut writer = store.put_stream(&key).await.expect("put_stream");
        for chunk in data.chunks(700_000) {
            writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        }
        assert!(
            store.head(&key).await.expect("head").is_none(),
            "an object must stay invisible until finish ({size} bytes)"
        );
        writer.finish().await.expect("finish");
        assert_eq!(read_all(store, &key).await, data, "streamed object of {size} bytes reads back");
        assert_eq!(store.head(&key).await.expect("head").expect("exists").size, size as u64);
    }

    let small = format!("{prefix}/small.json");
    store.put(&small, Bytes::from_static(b"{\"a\":1}")).await.expect("put");
    store.put(&small, Bytes::from_static(b"{\"a\":2}")).await.expect("overwrite");
    assert_eq!(get_bytes(store, &small, 1024).await.expect("get_bytes"), b"{\"a\":2}");
    assert!(matches!(get_bytes(store, &small, 3).await, Err(Error::ObjectCorrupt { .. })));

    let aborted = format!("{prefix}/aborted");
    let mut writer = store.put_stream(&aborted).await.expect("put_stream");
    writer.write(Bytes::from_static(b"never")).await.expect("write");
    writer.abort().await.expect("abort");
    assert!(store.head(&aborted).await.expect("head").is_none(), "an aborted object must not exist");

    let missing = format!("{prefix}/missing");
    match store.get(&missing).await {
        Err(Error::ObjectMissing { key }) => assert_eq!(key, missing),
        Err(other) => panic!("a missing object must be ObjectMissing, got {other}"),
        Ok(_) => panic!("a missing object must not open"),
    }
    assert!(store.head(&missing).await.expect("head").is_none());

    // Listing: many keys, sorted, filtered by prefix, nested keys included.
    let listed_prefix = format!("{prefix}/list/");
    let mut expected = Vec::new();
    for i in 0..120 {
        let key = format!("{listed_prefix}{i:04}");
        store.put(&key, Bytes::from(vec![1u8; i % 3])).await.expect("put");
        expected.push(key);
    }
    let nested = format!("{listed_prefix}zz/nested");
    store.put(&nested, Bytes::new()).await.expect("put");
    expected.push(nested);
    let listed: Vec<String> = store.list(&listed_prefix).await.expect("list").into_iter().map(|m| m.key).collect();
    assert_eq!(listed, expected, "list returns every key under the prefix, sorted");
    let partial: Vec<String> =
        store.list(&format!("{listed_prefix}001")).await.expect("list").into_iter().map(|m| m.key).collect();
    assert_eq!(partial.len(), 10, "a prefix may end inside a name: {partial:?}");

    // Delete everything, including a key that is already gone.
    for meta in store.list(&format!("{prefix}/")).await.expect("list") {
        store.delete(&meta.key).await.expect("delete");
    }
    store.delete(&missing).await.expect("deleting a missing object succeeds");
    assert!(store.list(&format!("{prefix}/")).await.expect("list").is_empty());
}

async fn read_all(store: &dyn Store, key: &str) -> Vec<u8> {
    let mut reader = store.get(key).await.expect("get");
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).await.expect("read");
    buf
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8).collect()
}
