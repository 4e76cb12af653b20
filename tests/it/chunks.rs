//! Content-addressed storage (`dr::chunks`) on real stores: the dedup key in a repository, files chunked into
//! packs and found again through the index, on a local directory and on Garage; and what damage, a wrong key
//! or an abandoned pack looks like.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::garage::Garage;
use dr::chunks::index::{INDEX_PREFIX, index_key};
use dr::chunks::pack::PACKS_PREFIX;
use dr::chunks::{
    ChunkId, ChunkIndex, ChunkKeys, Chunker, Chunking, DedupKey, FrameCompressor, IndexReader, PackRecord, PackWriter,
    pack_key, read_pack, write_index,
};
use dr::store::{LocalStore, S3Store, Store};
use dr::{Error, Identities, KeyPair, Recipients, Repository};

/// Small packs, so that a few MiB of chunks make several.
const PACK_SIZE: u64 = 1 << 20;

struct Keys {
    recipients: Arc<Recipients>,
    identities: Arc<Identities>,
    _dir: tempfile::TempDir,
}

fn keys() -> Keys {
    let pair = KeyPair::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.txt");
    pair.write_identity_file(&path).unwrap();
    Keys {
        recipients: Arc::new(Recipients::parse(&[pair.recipient()]).unwrap()),
        identities: Arc::new(Identities::load(&path).unwrap()),
        _dir: dir,
    }
}

fn local() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(LocalStore::new(dir.path())), dir)
}

/// A store on Garage, with S3's smallest part size so that a pack crosses parts; `None` when Garage is
/// missing (outside CI).
async fn garage() -> Option<(Arc<dyn Store>, Garage)> {
    let garage = Garage::start()?;
    let mut options = garage.options(&format!("chunks/{:08x}", rand::random::<u32>()));
    options.part_size = dr::store::s3::MIN_PART_SIZE;
    let store = S3Store::new(options).await;
    store.check_access().await.unwrap();
    Some((Arc::new(store), garage))
}

/// Pseudo-random bytes (incompressible), reproducible from `seed`.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Backs up `files` as a chunked backup does: chunk, skip what `known` holds, pack the rest. Returns each
/// file's chunk ids and the packs written.
async fn pack_files(
    store: &Arc<dyn Store>,
    recipients: &Arc<Recipients>,
    key: &DedupKey,
    files: Vec<Vec<u8>>,
    known: Arc<ChunkIndex>,
) -> (Vec<Vec<ChunkId>>, Vec<PackRecord>) {
    let (store, recipients, key) = (store.clone(), recipients.clone(), key.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let chunking = Chunking::default_for(&key);
        let mut chunker = Chunker::new(chunking.file_sizes(), key.gear_seed());
        let mut compressor = FrameCompressor::new(3).unwrap();
        let mut writer = PackWriter::new(store, recipients, PACK_SIZE, runtime);
        let mut packed = std::collections::HashSet::new();
        let mut records = Vec::new();
        let mut lists = Vec::new();
        for file in &files {
            let mut ids = Vec::new();
            chunker
                .for_each_chunk(&file[..], file.len() as u64, |chunk| {
                    let id = key.chunk_id(chunk);
                    ids.push(id);
                    if !known.contains(&id) && packed.insert(id) {
                        let frame = compressor.compress(chunk).unwrap();
                        writer.add(id, &frame, chunk.len() as u32)?;
                    }
                    Ok(())
                })
                .unwrap();
            lists.push(ids);
            records.extend(writer.take_closed().unwrap());
        }
        records.extend(writer.finish().unwrap());
        (lists, records)
    })
    .await
    .unwrap()
}

/// Reads every file back from the packs the index names, checking each chunk.
async fn restore_files(
    store: &dyn Store,
    index: &ChunkIndex,
    identities: &Arc<Identities>,
    key: &DedupKey,
    lists: &[Vec<ChunkId>],
) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for ids in lists {
        let mut file = Vec::new();
        for id in ids {
            let at = index.locate(id).unwrap_or_else(|| panic!("chunk {id} is not in the index"));
            let pack =
                read_pack(store, &at.pack.name(), Some((at.pack.stored_size, &at.pack.sha256())), identities.clone())
                    .await
                    .unwrap();
            file.extend(pack.chunk(at.offset, at.stored_len, at.plain_len, id, key).unwrap());
        }
        files.push(file);
    }
    files
}

/// Photo-like files (a few below the minimum chunk, one large), compressible and not.
fn sample_files() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = (0..12).map(|i| random_bytes(20_000 + i * 25_000, i as u64 + 1)).collect();
    files.push(b"a small text file, compressible, compressible, compressible".repeat(2000));
    files.push(random_bytes(6 << 20, 99));
    files.push(Vec::new());
    files
}

/// Chunks, packs and indexes sample files, reads them back through a freshly loaded index, then backs them up
/// again with one file changed: only that file's chunks are packed.
async fn round_trip(store: Arc<dyn Store>) {
    let keys = keys();
    let key = DedupKey::generate();
    let files = sample_files();
    let empty = Arc::new(ChunkIndex::default());
    let (lists, packs) = pack_files(&store, &keys.recipients, &key, files.clone(), empty).await;
    assert!(packs.len() >= 3, "{} packs", packs.len());
    let listed: Vec<_> = store.list(PACKS_PREFIX).await.unwrap().into_iter().map(|m| m.key).collect();
    let mut written: Vec<_> = packs.iter().map(|p| pack_key(&p.name)).collect();
    written.sort();
    assert_eq!(listed, written, "exactly the recorded packs are visible");

    write_index(store.as_ref(), &keys.recipients, &key, "backup one", &[], &packs).await.unwrap();
    let index = Arc::new(ChunkIndex::load(store.as_ref(), IndexReader::from_key(&key)).await.unwrap());
    assert_eq!(index.len(), packs.iter().map(|p| p.chunks.len()).sum::<usize>());
    let restored = restore_files(store.as_ref(), &index, &keys.identities, &key, &lists).await;
    assert!(restored == files, "every file reads back whole");

    // The trailer of each pack lists what the writer recorded.
    for record in &packs {
        let contents = read_pack(store.as_ref(), &record.name, None, keys.identities.clone()).await.unwrap();
        let trailer: Vec<_> = contents.entries().iter().map(|e| (e.id, e.offset, e.stored_len, e.plain_len)).collect();
        assert_eq!(trailer, record.chunks);
    }

    let mut changed = files.clone();
    changed[3] = random_bytes(80_000, 1234);
    let (_, new_packs) = pack_files(&store, &keys.recipients, &key, changed, index).await;
    assert_eq!(new_packs.len(), 1);
    assert_eq!(new_packs[0].chunks.len(), 1, "only the changed file's chunk is stored again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_packs_and_the_index_on_a_local_store() {
    let (store, _dir) = local();
    round_trip(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_packs_and_the_index_on_garage() {
    let Some((store, _garage)) = garage().await else { return };
    round_trip(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_stored_pack_is_detected_and_names_the_pack() {
    let keys = keys();
    let (store, dir) = local();
    let key = DedupKey::generate();
    let (_, packs) =
        pack_files(&store, &keys.recipients, &key, vec![random_bytes(300_000, 5)], Default::default()).await;
    let pack = &packs[0];
    let object = pack_key(&pack.name);
    let path = dir.path().join(&object);
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(hex::encode(sha2_256(&stored)), pack.sha256, "the recorded SHA-256 is sha256sum's");
    common::flip_byte(&path, stored.len() as i64 / 2);

    let expected = Some((pack.stored_size, pack.sha256.as_str()));
    let err = read_pack(store.as_ref(), &pack.name, expected, keys.identities.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::ObjectCorrupt { key, .. } if *key == object), "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    // Without the index's hash, age's authentication catches it.
    let err = read_pack(store.as_ref(), &pack.name, None, keys.identities.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::ObjectCorrupt { key, .. } if *key == object), "{err}");
    assert!(err.to_string().contains("age authentication"), "{err}");
}

fn sha2_256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Adds a chunk to a new writer and drops it unfinished, as a failed backup does.
async fn drop_unfinished(store: &Arc<dyn Store>, recipients: &Arc<Recipients>) {
    let (store, recipients) = (store.clone(), recipients.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let key = DedupKey::generate();
        let mut writer = PackWriter::new(store, recipients, PACK_SIZE, runtime);
        let chunk = random_bytes(300_000, 7);
        writer.add(key.chunk_id(&chunk), &dr::chunks::compress_frame(3, &chunk).unwrap(), 300_000).unwrap();
        drop(writer);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pack_writer_leaves_no_pack_on_a_local_store() {
    let keys = keys();
    let (store, dir) = local();
    drop_unfinished(&store, &keys.recipients).await;
    assert!(store.list(PACKS_PREFIX).await.unwrap().is_empty());
    // The hidden partial file goes too, once the abort ran.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::files_below(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", common::files_below(dir.path()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pack_writer_leaves_no_pack_on_garage() {
    let Some((store, garage)) = garage().await else { return };
    let keys = keys();
    drop_unfinished(&store, &keys.recipients).await;
    assert!(store.list(PACKS_PREFIX).await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !garage.open_multipart_uploads().await.is_empty() {
        assert!(Instant::now() < deadline, "the pack's multipart upload is left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record(name: u128, chunks: &[&[u8]], key: &DedupKey) -> PackRecord {
    let mut offset = 0;
    let chunks = chunks
        .iter()
        .map(|c| {
            let entry = (key.chunk_id(c), offset, 10, c.len() as u32);
            offset += 10;
            entry
        })
        .collect();
    PackRecord { name: format!("{name:032x}"), stored_size: 100, sha256: "00".repeat(32), chunks }
}

#[tokio::test]
async fn index_objects_load_with_either_reader_and_superseded_ones_are_dropped() {
    let keys = keys();
    let (store, _dir) = local();
    let key = DedupKey::generate();
    let (a, b, c) = (record(1, &[b"a1", b"a2"], &key), record(2, &[b"b1"], &key), record(3, &[b"c1", b"a1"], &key));
    let first =
        write_index(store.as_ref(), &keys.recipients, &key, "backup 1", &[], &[a.clone(), b.clone()]).await.unwrap();
    let second = write_index(store.as_ref(), &keys.recipients, &key, "backup 2", &[], &[c]).await.unwrap();
    assert_ne!(first, second);

    for reader in [IndexReader::from_key(&key), IndexReader::Identities(keys.identities.clone())] {
        let index = ChunkIndex::load(store.as_ref(), reader).await.unwrap();
        assert_eq!(index.len(), 4, "a1 is in two packs and counted once");
        for (chunk, pack) in [(&b"a2"[..], 1u128), (b"b1", 2), (b"c1", 3)] {
            assert_eq!(index.locate(&key.chunk_id(chunk)).unwrap().pack.name(), format!("{pack:032x}"));
        }
        let mut names = index.index_names().to_vec();
        names.sort();
        let mut expected = vec![first.clone(), second.clone()];
        expected.sort();
        assert_eq!(names, expected);
    }

    // Prune's rewrite of the first object without pack 2: the old object no longer counts, present or not.
    let third = write_index(store.as_ref(), &keys.recipients, &key, "prune 1", std::slice::from_ref(&first), &[a])
        .await
        .unwrap();
    let index = ChunkIndex::load(store.as_ref(), IndexReader::from_key(&key)).await.unwrap();
    assert!(!index.contains(&key.chunk_id(b"b1")), "the superseded object's packs are gone");
    assert!(index.contains(&key.chunk_id(b"a2")) && index.contains(&key.chunk_id(b"c1")));
    assert_eq!(index.packs().len(), 2);
    assert_eq!(index.index_names().len(), 3, "superseded objects are still named, for the next supersedes");
    assert!(index.index_names().contains(&third));

    // Another repository's dedup key opens none of it.
    let err = ChunkIndex::load(store.as_ref(), IndexReader::from_key(&DedupKey::generate())).await.unwrap_err();
    assert!(matches!(err, Error::ObjectCorrupt { .. }), "{err}");
}

#[tokio::test]
async fn a_corrupt_index_object_is_an_error_naming_it() {
    let keys = keys();
    let (store, dir) = local();
    let key = DedupKey::generate();
    let name = write_index(store.as_ref(), &keys.recipients, &key, "backup 1", &[], &[record(1, &[b"x"], &key)])
        .await
        .unwrap();
    let object = index_key(&name);
    assert!(object.starts_with(INDEX_PREFIX) && object.ends_with(".jsonl.zst.age"));
    common::flip_byte(&dir.path().join(&object), -20);
    let err = ChunkIndex::load(store.as_ref(), IndexReader::from_key(&key)).await.unwrap_err();
    assert!(matches!(&err, Error::ObjectCorrupt { key, .. } if *key == object), "{err}");
    assert!(err.to_string().contains(&object), "{err}");
}

async fn repository() -> (Repository, tempfile::TempDir) {
    let (store, dir) = local();
    (Repository::init(store).await.unwrap(), dir)
}

#[tokio::test]
async fn the_dedup_key_is_created_once_and_read_from_the_file_or_with_the_identity() {
    let keys = keys();
    let (repo, repo_dir) = repository().await;
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("dedup.key");
    assert!(ChunkKeys::load(&repo, Some(&key_file), None).await.unwrap().is_none());

    // Neither a key file nor an identity: nothing is written.
    let err = ChunkKeys::create(&repo, &keys.recipients, None, false).await.unwrap_err();
    assert!(matches!(err, Error::ChunkKeyMissing { create: true, .. }), "{err}");
    assert!(err.hint().unwrap().contains("dedup_key_file = PATH"));
    assert!(!repo_dir.path().join("keys").exists() && !repo_dir.path().join("chunking.json").exists());

    let created = ChunkKeys::create(&repo, &keys.recipients, Some(&key_file), false).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(repo_dir.path().join("keys/dedup.age").is_file());
    let stored = std::fs::read(repo_dir.path().join("chunking.json")).unwrap();
    assert_eq!(Chunking::parse(&stored).unwrap().sha256(), created.chunking.sha256());

    // A backup host with the file.
    let loaded = ChunkKeys::load(&repo, Some(&key_file), None).await.unwrap().unwrap();
    assert_eq!(loaded.key, created.key);
    assert_eq!(loaded.chunking.sha256(), created.chunking.sha256());

    // A host with the identity and a configured but missing file: the key is read and the file written.
    let other_file = key_dir.path().join("copied.key");
    let loaded = ChunkKeys::load(&repo, Some(&other_file), Some(&keys.identities)).await.unwrap().unwrap();
    assert_eq!(loaded.key, created.key);
    assert_eq!(DedupKey::read_file(&other_file).unwrap(), created.key);
    let loaded = ChunkKeys::load(&repo, None, Some(&keys.identities)).await.unwrap().unwrap();
    assert_eq!(loaded.key, created.key);

    // Neither.
    let missing = key_dir.path().join("missing.key");
    let err = ChunkKeys::load(&repo, Some(&missing), None).await.unwrap_err();
    assert!(matches!(err, Error::ChunkKeyMissing { create: false, .. }), "{err}");
    assert!(err.hint().unwrap().contains("dr dedup-key --output FILE"), "{:?}", err.hint());
}

#[tokio::test]
async fn a_key_file_of_another_repository_is_refused_naming_the_file_and_the_repository() {
    let keys = keys();
    let (repo, _repo_dir) = repository().await;
    ChunkKeys::create(&repo, &keys.recipients, None, true).await.unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let stranger = key_dir.path().join("other-repo.key");
    DedupKey::generate().write_file(&stranger).unwrap();
    let err = ChunkKeys::load(&repo, Some(&stranger), Some(&keys.identities)).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::DedupKeyMismatch { .. }), "{message}");
    assert!(message.contains(&stranger.display().to_string()) && message.contains(repo.location()), "{message}");
    // The file is left as it was.
    assert_ne!(
        DedupKey::read_file(&stranger).unwrap(),
        ChunkKeys::load(&repo, None, Some(&keys.identities)).await.unwrap().unwrap().key
    );
}

#[tokio::test]
async fn a_run_that_stopped_after_writing_the_key_file_goes_on_with_that_key() {
    let keys = keys();
    let (repo, _repo_dir) = repository().await;
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("dedup.key");
    let earlier = DedupKey::generate();
    earlier.write_file(&key_file).unwrap();
    let created = ChunkKeys::create(&repo, &keys.recipients, Some(&key_file), false).await.unwrap();
    assert_eq!(created.key, earlier);
    let from_repository = ChunkKeys::load(&repo, None, Some(&keys.identities)).await.unwrap().unwrap();
    assert_eq!(from_repository.key, earlier);
    assert!(Path::new(&key_file).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_packs_fails_the_writer_with_the_store_s_error() {
    use common::faults::{Action, FaultProxy, Rule};
    let Some(garage) = Garage::start() else { return };
    let proxy = FaultProxy::start(&garage.endpoint);
    let mut options = garage.options("refused");
    options.endpoint = Some(proxy.url());
    let store: Arc<dyn Store> = Arc::new(S3Store::new(options).await);
    proxy.add(Rule::new("PUT", "/packs/", Action::Error { status: 403, close: false }).always());
    let keys = keys();
    let (writer_store, recipients) = (store.clone(), keys.recipients.clone());
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let key = DedupKey::generate();
        let mut writer = PackWriter::new(writer_store, recipients, PACK_SIZE, runtime);
        for n in 0..8 {
            let chunk = random_bytes(300_000, n + 1);
            writer.add(key.chunk_id(&chunk), &dr::chunks::compress_frame(3, &chunk).unwrap(), 300_000)?;
        }
        writer.finish()
    })
    .await
    .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(&err, Error::StoreAccessDenied { key, .. } if key.starts_with(PACKS_PREFIX)), "{err}");
    proxy.clear();
    assert!(store.list(PACKS_PREFIX).await.unwrap().is_empty());
}
