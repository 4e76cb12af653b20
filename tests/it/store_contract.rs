//! The `Store` contract as named tests, one per promise the trait makes (`src/store/mod.rs`), stamped out for
//! every store: `memory::`, `local::`, `throttled::` (a local store behind the bandwidth limit, which must keep
//! every promise of the store it wraps, its leftovers included) and `s3::` (Garage). A store that breaks a promise fails the test that
//! names it. The promises about what killed writers leave behind (`Store::leftovers`) are here too: the local
//! and S3 stores offer them, the memory store has none and says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use common::garage::Garage;
use dr::Error;
use dr::store::throttle::{Rate, TokenBucket};
use dr::store::{LocalStore, MemoryStore, S3Store, Store, Throttled, get_bytes};
use tokio::io::AsyncReadExt;

/// One store under test, and what keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    backing: Backing,
}

enum Backing {
    Memory,
    Local(tempfile::TempDir),
    /// The server and the key prefix the store lives under.
    S3(Garage, String),
}

async fn memory() -> Option<Subject> {
    Some(Subject { store: Arc::new(MemoryStore::new()), backing: Backing::Memory })
}

async fn local() -> Option<Subject> {
    let dir = tempfile::tempdir().unwrap();
    Some(Subject { store: Arc::new(LocalStore::new(dir.path())), backing: Backing::Local(dir) })
}

/// A local store behind both limits, fast enough (1 GiB/s) that the suite takes no longer for it.
async fn throttled() -> Option<Subject> {
    let dir = tempfile::tempdir().unwrap();
    let bucket = || Some(Arc::new(TokenBucket::new(Rate::from_bytes_per_second(1 << 30).unwrap())));
    let store = Throttled::new(Box::new(LocalStore::new(dir.path())), bucket(), bucket());
    Some(Subject { store: Arc::new(store), backing: Backing::Local(dir) })
}

/// S3 on Garage, with S3's smallest part size, so that a few MiB cross part boundaries.
async fn s3() -> Option<Subject> {
    let garage = Garage::start()?;
    let prefix = format!("contract/{:08x}", rand::random::<u32>());
    let mut options = garage.options(&prefix);
    options.part_size = dr::store::s3::MIN_PART_SIZE;
    let store = S3Store::new(options).await;
    store.check_access().await.unwrap();
    Some(Subject { store: Arc::new(store), backing: Backing::S3(garage, prefix) })
}

impl Subject {
    /// Leaves an upload of `key` unfinished, as a writer killed mid-write would (a dropped one cleans up).
    async fn leave_unfinished_upload(&self, key: &str) {
        match &self.backing {
            Backing::Memory => unreachable!("the memory store keeps nothing half-written"),
            Backing::Local(dir) => {
                let path = dir.path().join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let name = path.file_name().unwrap().to_str().unwrap();
                std::fs::write(path.with_file_name(format!(".{name}.partial-0123456789abcdef")), b"half").unwrap();
            }
            Backing::S3(garage, prefix) => {
                let client = garage.client().await;
                let full = format!("{prefix}/{key}");
                client.create_multipart_upload().bucket(&garage.bucket).key(full).send().await.unwrap();
            }
        }
    }

    /// Whether the object went up in one request: true for every store but S3, where a multipart upload's
    /// ETag ends in `-<parts>`.
    async fn stored_in_one_request(&self, key: &str) -> bool {
        let Backing::S3(garage, prefix) = &self.backing else { return true };
        let head = garage.client().await.head_object().bucket(&garage.bucket).key(format!("{prefix}/{key}")).send();
        let etag = head.await.unwrap().e_tag().unwrap_or_default().trim_matches('"').to_string();
        !etag.contains('-')
    }

    /// Waits (a few seconds at most) until no upload is open in the store: S3 aborts a dropped writer's upload
    /// in the background.
    async fn assert_no_open_upload(&self) {
        let Some(leftovers) = self.store.leftovers() else { return };
        let later = Utc::now() + chrono::Duration::minutes(10);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let open = leftovers.stale_uploads(later).await.unwrap();
            if open.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "uploads left open: {open:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Backing::S3(garage, _) = &self.backing {
            assert!(garage.open_multipart_uploads().await.is_empty(), "no upload is left open in the bucket");
        }
    }
}

/// Stamps one test per promise into a module named after the store.
macro_rules! contract {
    ($subject:ident) => {
        mod $subject {
            promise!($subject, a_put_object_reads_back_whole);
            promise!($subject, streamed_objects_read_back_at_every_size);
            promise!($subject, sized_streams_read_back_within_their_size_and_beyond_it);
            promise!($subject, an_unfinished_stream_is_invisible);
            promise!($subject, an_aborted_writer_leaves_nothing);
            promise!($subject, a_dropped_writer_leaves_nothing_visible);
            promise!($subject, a_put_replaces_an_object_whole);
            promise!($subject, a_stream_over_an_object_keeps_the_old_one_until_finish);
            promise!($subject, two_writers_racing_on_one_key_leave_one_whole_object);
            promise!($subject, a_missing_object_is_object_missing);
            promise!($subject, list_is_sorted_and_takes_every_key_under_a_prefix);
            promise!($subject, delete_removes_and_deleting_a_missing_object_succeeds);
            promise!($subject, invalid_keys_are_refused);
            promise!($subject, get_bytes_refuses_an_object_over_its_limit);
            promise!($subject, stale_uploads_are_listed_and_aborted);
        }
    };
}

macro_rules! promise {
    ($subject:ident, $promise:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $promise() {
            if let Some(subject) = super::$subject().await {
                super::$promise(&subject).await;
            }
        }
    };
}

contract!(memory);
contract!(local);
contract!(throttled);
contract!(s3);

/// Sizes that cross the interesting boundaries: empty, one byte, several multi-megabyte chunks, and (with S3's
/// smallest part size, 5 MiB) exactly one part and several parts with a short last one.
const SIZES: [usize; 6] = [0, 1, 4096, (1 << 20) + 1, 5 << 20, (12 << 20) + 3];
const CHUNK: usize = 700_000;

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8 ^ seed).collect()
}

async fn read_all(store: &dyn Store, key: &str) -> Vec<u8> {
    let mut reader = store.get(key).await.expect("get");
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).await.expect("read");
    buf
}

async fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    store.list(prefix).await.expect("list").into_iter().map(|m| m.key).collect()
}

async fn stream(store: &dyn Store, key: &str, data: &[u8]) {
    let mut writer = store.put_stream(key).await.expect("put_stream");
    for chunk in data.chunks(CHUNK) {
        writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    writer.finish().await.expect("finish");
}

/// `put` writes a small object that `get`, `head` and `list` then show, whole.
async fn a_put_object_reads_back_whole(subject: &Subject) {
    let store = subject.store.as_ref();
    store.put("snapshots/a.json", Bytes::from_static(b"{\"a\":1}")).await.expect("put");
    assert_eq!(read_all(store, "snapshots/a.json").await, b"{\"a\":1}");
    assert_eq!(store.head("snapshots/a.json").await.expect("head").expect("exists").size, 7);
    assert_eq!(keys(store, "snapshots/").await, ["snapshots/a.json"]);
}

/// `put_stream` ... `finish` makes an object of any size, which reads back byte for byte.
async fn streamed_objects_read_back_at_every_size(subject: &Subject) {
    let store = subject.store.as_ref();
    for size in SIZES {
        let data = pattern(size, 0);
        let key = format!("objects/stream-{size}");
        stream(store, &key, &data).await;
        assert!(read_all(store, &key).await == data, "streamed object of {size} bytes reads back");
        assert_eq!(store.head(&key).await.expect("head").expect("exists").size, size as u64);
    }
    subject.assert_no_open_upload().await;
}

/// `put_stream_sized` makes the same objects as `put_stream`: one up to the size announced goes in one request
/// (S3: a PutObject, however many parts it spans), and one that outgrows it is still stored whole.
async fn sized_streams_read_back_within_their_size_and_beyond_it(subject: &Subject) {
    let store = subject.store.as_ref();
    let announced = (12 << 20) as u64;
    for (size, one_request) in [(0, true), (4096, true), (10 << 20, true), ((12 << 20) + 3, false)] {
        let data = pattern(size, 3);
        let key = format!("packs/sized-{size}");
        let mut writer = store.put_stream_sized(&key, announced).await.expect("put_stream_sized");
        for chunk in data.chunks(CHUNK) {
            writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        }
        writer.finish().await.expect("finish");
        assert!(read_all(store, &key).await == data, "a sized stream of {size} bytes reads back");
        assert_eq!(store.head(&key).await.expect("head").expect("exists").size, size as u64);
        if one_request {
            assert!(subject.stored_in_one_request(&key).await, "{size} bytes, announced {announced}: one request");
        }
    }
    subject.assert_no_open_upload().await;
}

/// Nothing is visible under the key until `finish` returned: not to `head`, `get` or `list`.
async fn an_unfinished_stream_is_invisible(subject: &Subject) {
    let store = subject.store.as_ref();
    let mut writer = store.put_stream("objects/pending").await.expect("put_stream");
    for chunk in pattern(6 << 20, 1).chunks(CHUNK) {
        writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    assert!(store.head("objects/pending").await.expect("head").is_none(), "head before finish");
    assert!(matches!(store.get("objects/pending").await, Err(Error::ObjectMissing { .. })), "get before finish");
    assert!(keys(store, "objects/").await.is_empty(), "list before finish");
    writer.finish().await.expect("finish");
    assert_eq!(keys(store, "objects/").await, ["objects/pending"]);
}

/// `abort` discards everything written; the key is left as it was (absent here) and no upload stays open.
async fn an_aborted_writer_leaves_nothing(subject: &Subject) {
    let store = subject.store.as_ref();
    let mut writer = store.put_stream("objects/aborted").await.expect("put_stream");
    for chunk in pattern(6 << 20, 2).chunks(CHUNK) {
        writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    writer.abort().await.expect("abort");
    assert!(store.head("objects/aborted").await.expect("head").is_none(), "an aborted object must not exist");
    assert!(keys(store, "").await.is_empty());
    subject.assert_no_open_upload().await;
}

/// A writer dropped half-way (its task cancelled) leaves nothing visible, and cleans up what it stored.
async fn a_dropped_writer_leaves_nothing_visible(subject: &Subject) {
    let store = subject.store.as_ref();
    let mut writer = store.put_stream("objects/a/dropped").await.expect("put_stream");
    for chunk in pattern(6 << 20, 3).chunks(CHUNK) {
        writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    drop(writer);
    assert!(store.head("objects/a/dropped").await.expect("head").is_none());
    assert!(keys(store, "").await.is_empty(), "nothing is listed");
    subject.assert_no_open_upload().await;
}

/// `put` over an existing object replaces it whole (readers see the old or the new object, never a part).
async fn a_put_replaces_an_object_whole(subject: &Subject) {
    let store = subject.store.as_ref();
    store.put("config.json", Bytes::from_static(b"{\"a\":1}")).await.expect("put");
    store.put("config.json", Bytes::from_static(b"{\"a\":22}")).await.expect("overwrite");
    assert_eq!(read_all(store, "config.json").await, b"{\"a\":22}");
    assert_eq!(store.head("config.json").await.expect("head").expect("exists").size, 8);
    assert_eq!(keys(store, "").await, ["config.json"], "one object, not two");
}

/// A stream over an existing key leaves the old object in place until `finish`, then replaces it whole.
async fn a_stream_over_an_object_keeps_the_old_one_until_finish(subject: &Subject) {
    let store = subject.store.as_ref();
    let (old, new) = (pattern(3 << 20, 4), pattern(7 << 20, 5));
    stream(store, "objects/replaced", &old).await;
    let mut writer = store.put_stream("objects/replaced").await.expect("put_stream");
    for chunk in new.chunks(CHUNK) {
        writer.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    assert!(read_all(store, "objects/replaced").await == old, "the old object until finish");
    writer.finish().await.expect("finish");
    assert!(read_all(store, "objects/replaced").await == new, "the new object, whole, after");
    subject.assert_no_open_upload().await;
}

/// Two writers of one key, interleaved and finishing together: the key holds one of the two objects, whole.
/// One of the two may fail, loudly, but not both: Garage drops an unfinished upload once a *newer* upload of
/// the same key completed (its objects keep no version older than the newest complete one), so the older
/// writer's completion then answers NoSuchUpload. AWS S3 and a local store let both complete.
async fn two_writers_racing_on_one_key_leave_one_whole_object(subject: &Subject) {
    let store = subject.store.as_ref();
    let (first, second) = (pattern(6 << 20, 6), pattern((6 << 20) + 5, 7));
    let mut a = store.put_stream("objects/raced").await.expect("put_stream");
    let mut b = store.put_stream("objects/raced").await.expect("put_stream");
    for (x, y) in first.chunks(CHUNK).zip(second.chunks(CHUNK)) {
        a.write(Bytes::copy_from_slice(x)).await.expect("write");
        b.write(Bytes::copy_from_slice(y)).await.expect("write");
    }
    let (done_a, done_b) = tokio::join!(a.finish(), b.finish());
    assert!(done_a.is_ok() || done_b.is_ok(), "one writer at least finishes: {done_a:?} {done_b:?}");
    let read = read_all(store, "objects/raced").await;
    assert!(read == first || read == second, "one writer's object, whole ({} bytes)", read.len());
    assert!(done_a.is_ok() || read == second, "a writer that failed did not leave its object");
    assert!(done_b.is_ok() || read == first, "a writer that failed did not leave its object");
    assert_eq!(store.head("objects/raced").await.expect("head").expect("exists").size, read.len() as u64);
    assert_eq!(keys(store, "").await, ["objects/raced"]);
    subject.assert_no_open_upload().await;
}

/// `get` of a missing key is `Error::ObjectMissing` naming the key; `head` says `None`.
async fn a_missing_object_is_object_missing(subject: &Subject) {
    let store = subject.store.as_ref();
    match store.get("objects/missing").await {
        Err(Error::ObjectMissing { key }) => assert_eq!(key, "objects/missing"),
        Err(other) => panic!("a missing object must be ObjectMissing, got {other}"),
        Ok(_) => panic!("a missing object must not open"),
    }
    assert!(store.head("objects/missing").await.expect("head").is_none());
    assert!(matches!(get_bytes(store, "objects/missing", 10).await, Err(Error::ObjectMissing { .. })));
}

/// `list` returns every visible object whose key starts with the prefix, nested keys included, sorted; a prefix
/// may end inside a name.
async fn list_is_sorted_and_takes_every_key_under_a_prefix(subject: &Subject) {
    let store = subject.store.as_ref();
    let mut expected = Vec::new();
    // Written out of order, so that a listing that merely returns the writing order fails.
    for i in (0..120).rev() {
        let key = format!("list/{i:04}");
        store.put(&key, Bytes::from(vec![1u8; i % 3])).await.expect("put");
        expected.push(key);
    }
    store.put("list/zz/nested", Bytes::new()).await.expect("put");
    store.put("listing-not-under/x", Bytes::new()).await.expect("put");
    store.put("a-before", Bytes::new()).await.expect("put");
    expected.push("list/zz/nested".to_string());
    expected.sort();
    assert_eq!(keys(store, "list/").await, expected, "every key under the prefix, sorted");
    let partial = keys(store, "list/001").await;
    assert_eq!(partial.len(), 10, "a prefix may end inside a name: {partial:?}");
    let sizes: Vec<u64> = store.list("list/000").await.expect("list").into_iter().map(|m| m.size).collect();
    assert_eq!(sizes, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0], "each listed with its size");
    assert_eq!(store.list("").await.expect("list").len(), 123, "the empty prefix lists everything");
    assert!(keys(store, "nothing/").await.is_empty());
}

/// `delete` removes an object; deleting a missing one succeeds.
async fn delete_removes_and_deleting_a_missing_object_succeeds(subject: &Subject) {
    let store = subject.store.as_ref();
    store.put("objects/a/b", Bytes::from_static(b"x")).await.expect("put");
    store.put("objects/a/c", Bytes::from_static(b"y")).await.expect("put");
    store.delete("objects/a/b").await.expect("delete");
    assert!(store.head("objects/a/b").await.expect("head").is_none());
    assert_eq!(keys(store, "").await, ["objects/a/c"], "only that object is gone");
    store.delete("objects/a/b").await.expect("deleting a missing object succeeds");
    store.delete("objects/a/c").await.expect("delete");
    assert!(keys(store, "").await.is_empty());
}

/// Keys are `/`-separated, relative, without empty, `.` or `..` components: others are refused, never used.
async fn invalid_keys_are_refused(subject: &Subject) {
    let store = subject.store.as_ref();
    for bad in ["", "/abs", "a//b", "a/../b", "a/.hidden", "../x"] {
        assert!(matches!(store.put(bad, Bytes::new()).await, Err(Error::Usage(_))), "put {bad:?}");
        assert!(store.put_stream(bad).await.is_err(), "put_stream {bad:?}");
        assert!(store.get(bad).await.is_err(), "get {bad:?}");
        assert!(store.head(bad).await.is_err(), "head {bad:?}");
        assert!(store.delete(bad).await.is_err(), "delete {bad:?}");
    }
    assert!(keys(store, "").await.is_empty(), "nothing was written");
}

/// `get_bytes` reads a small object whole, and refuses one larger than its limit as corrupt.
async fn get_bytes_refuses_an_object_over_its_limit(subject: &Subject) {
    let store = subject.store.as_ref();
    store.put("small.json", Bytes::from_static(b"{\"a\":2}")).await.expect("put");
    assert_eq!(get_bytes(store, "small.json", 1024).await.expect("get_bytes"), b"{\"a\":2}");
    assert_eq!(get_bytes(store, "small.json", 7).await.expect("exactly the limit"), b"{\"a\":2}");
    assert!(matches!(get_bytes(store, "small.json", 3).await, Err(Error::ObjectCorrupt { .. })));
}

/// A store that can hold killed writers' leftovers lists those older than the cut-off (never a finished object,
/// never a younger upload that may be a writer at work), and aborts them, twice harmlessly.
async fn stale_uploads_are_listed_and_aborted(subject: &Subject) {
    let store = subject.store.as_ref();
    let Some(leftovers) = store.leftovers() else {
        assert!(matches!(subject.backing, Backing::Memory), "only the memory store has no leftovers");
        return;
    };
    subject.leave_unfinished_upload("objects/a/killed").await;
    store.put("objects/a/whole", Bytes::from_static(b"whole")).await.expect("put");
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    assert!(leftovers.stale_uploads(long_ago).await.unwrap().is_empty(), "an upload younger than the cut-off");
    let later = Utc::now() + chrono::Duration::minutes(10);
    let stale = leftovers.stale_uploads(later).await.unwrap();
    let stale_keys: Vec<&str> = stale.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(stale_keys, ["objects/a/killed"], "{stale:?}");
    assert!(keys(store, "").await == ["objects/a/whole"], "an unfinished upload is never listed as an object");
    for upload in &stale {
        leftovers.abort_upload(upload).await.unwrap();
        leftovers.abort_upload(upload).await.expect("aborting twice is fine");
    }
    assert!(leftovers.stale_uploads(later).await.unwrap().is_empty());
    assert_eq!(read_all(store, "objects/a/whole").await, b"whole", "the finished object is untouched");
    subject.assert_no_open_upload().await;
}
