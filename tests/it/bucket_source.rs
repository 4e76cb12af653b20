//! A bucket as a files source, against Garage as both the source and the repository (two buckets, two keys):
//! backup, unchanged objects skipped without a GET, restore into another bucket, into the same one (refused
//! without --force, then replaced whole) and into a directory, metadata kept, verify and drill; objects that
//! change or vanish during the backup; access denied on the source bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::faults::{Action, FaultProxy, Gate, Rule};
use common::garage::Garage;
use common::{FilesSite, Run, dr_command};
use sha2::{Digest, Sha256};

/// What the test knows of an object: its bytes' SHA-256 and the headers a restore must give back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    sha256: String,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// The source bucket, the repository's bucket, the profiles file and the site (its keys, its dr.toml).
struct BucketSite {
    site: FilesSite,
    source: Garage,
    repository: Garage,
    profiles: PathBuf,
}

const PREFIX: &str = "site";

impl BucketSite {
    /// A source bucket seeded with photo-like objects under `site/` (and one outside it), read by its own
    /// read-only key through the profile `uploads-ro`; the repository is another bucket with the run's key.
    async fn new() -> Option<BucketSite> {
        let source = Garage::start()?;
        let repository = Garage::start()?;
        let site = FilesSite::new();
        let (ro_id, ro_secret) = source.new_key("ro", &["--read"]);
        let (rw_id, rw_secret) = source.new_key("rw", &["--read", "--write"]);
        let (none_id, none_secret) = source.new_key("none", &[]);
        let profiles = site.path("aws-credentials");
        std::fs::write(
            &profiles,
            format!(
                "[uploads-ro]\naws_access_key_id = {ro_id}\naws_secret_access_key = {ro_secret}\n\n\
                 [uploads-rw]\naws_access_key_id = {rw_id}\naws_secret_access_key = {rw_secret}\n\n\
                 [nobody]\naws_access_key_id = {none_id}\naws_secret_access_key = {none_secret}\n"
            ),
        )
        .unwrap();
        let bucket_site = BucketSite { site, source, repository, profiles };
        bucket_site.seed().await;
        bucket_site.write_config("dr.toml", "uploads-ro", None);
        bucket_site.dr("dr.toml", &["init"]).ok();
        Some(bucket_site)
    }

    async fn seed(&self) {
        let client = self.source.client().await;
        let put = |key: &str, body: Vec<u8>| {
            client.put_object().bucket(&self.source.bucket).key(format!("{PREFIX}/{key}")).body(ByteStream::from(body))
        };
        put("photos/2026/01/a.jpg", random(300 << 10))
            .content_type("image/jpeg")
            .cache_control("public, max-age=31536000, immutable")
            .metadata("owner", "alice")
            .metadata("album", "holidays")
            .send()
            .await
            .unwrap();
        put("photos/2026/01/b.jpg", random(200 << 10)).content_type("image/jpeg").send().await.unwrap();
        put("photos/été 2026/plage + mer.jpg", random(40 << 10)).content_type("image/jpeg").send().await.unwrap();
        put("videos/clip.mp4", random(3 << 20)).content_type("video/mp4").send().await.unwrap();
        put("notes.txt", b"hello from the bucket\n".to_vec())
            .content_type("text/plain; charset=utf-8")
            .content_disposition("attachment; filename=\"notes.txt\"")
            .content_language("en")
            .send()
            .await
            .unwrap();
        for i in 0..20 {
            put(&format!("avatars/u{i:02}.png"), random(1000 + i * 37)).content_type("image/png").send().await.unwrap();
        }
        put("empty-folder/", Vec::new()).send().await.unwrap();
        client
            .put_object()
            .bucket(&self.source.bucket)
            .key("elsewhere/not-this-source.txt")
            .body(ByteStream::from_static(b"outside the prefix"))
            .send()
            .await
            .unwrap();
    }

    /// A dr.toml in the site's directory whose `uploads` source reads the bucket with `profile`, through
    /// `endpoint` when given (a proxy) else directly.
    fn write_config(&self, name: &str, profile: &str, endpoint: Option<&str>) -> PathBuf {
        let path = self.site.path(name);
        let text = format!(
            "{repository}\n{encryption}\n[[files]]\nname = \"uploads\"\npath = \"s3://{bucket}/{PREFIX}\"\n\
             endpoint = \"{endpoint}\"\nregion = \"garage\"\nprofile = \"{profile}\"\nconcurrency = 4\n",
            repository = self.repository.repository_toml("repo", None),
            encryption = self.site.encryption(),
            bucket = self.source.bucket,
            endpoint = endpoint.unwrap_or(&self.source.endpoint),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, config: &str, args: &[&str]) -> std::process::Command {
        let mut command = dr_command();
        command
            .arg("--config")
            .arg(self.site.path(config))
            .args(args)
            .envs(self.repository.env())
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.profiles)
            .env(dr::retry::BASE_OVERRIDE_VAR, "10ms");
        command
    }

    fn dr(&self, config: &str, args: &[&str]) -> Run {
        common::run(&mut self.command(config, args))
    }

    /// Every object under `prefix/` of `bucket` (as the run's key sees it), by key relative to the prefix.
    async fn objects(&self, bucket: &str, prefix: &str) -> BTreeMap<String, Seen> {
        let client = self.source.client().await;
        let listed = client.list_objects_v2().bucket(bucket).prefix(format!("{prefix}/")).send().await.unwrap();
        let mut seen = BTreeMap::new();
        for object in listed.contents() {
            let key = object.key().unwrap();
            let got = client.get_object().bucket(bucket).key(key).send().await.unwrap();
            let metadata = got.metadata().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
            let (content_type, cache_control) =
                (got.content_type().map(String::from), got.cache_control().map(String::from));
            let content_disposition = got.content_disposition().map(String::from);
            let content_language = got.content_language().map(String::from);
            let body = got.body.collect().await.unwrap().into_bytes();
            let relative = key.strip_prefix(&format!("{prefix}/")).unwrap().to_string();
            let sha256 = hex::encode(Sha256::digest(&body));
            seen.insert(
                relative,
                Seen { sha256, content_type, cache_control, content_disposition, content_language, metadata },
            );
        }
        seen
    }
}

fn random(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

fn backup(site: &BucketSite, config: &str) -> serde_json::Value {
    let report = site.dr(config, &["backup", "--json"]).ok().json();
    report["sources"].as_array().unwrap().iter().find(|s| s["name"] == "uploads").unwrap().clone()
}

/// Every regular file below `root` with its SHA-256, and every directory (as `path/`).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(root).unwrap().display().to_string();
        if entry.file_type().is_dir() {
            found.insert(format!("{relative}/"), String::new());
        } else {
            found.insert(relative, hex::encode(Sha256::digest(std::fs::read(entry.path()).unwrap())));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_source_is_backed_up_restored_into_buckets_and_a_directory_and_drilled() {
    let Some(site) = BucketSite::new().await else { return };
    let original = site.objects(&site.source.bucket, PREFIX).await;
    assert_eq!(original.len(), 26, "25 objects and the folder object");

    let first = backup(&site, "dr.toml");
    assert_eq!(first["chunked"]["files_unchanged"], 0, "{first}");
    let first_id = site.dr("dr.toml", &["snapshots", "--json"]).ok().json()[0]["id"].as_str().unwrap().to_string();

    // Unchanged: nothing downloaded, the listing is all (counted through a proxy in front of the source).
    let proxy = FaultProxy::start(&site.source.endpoint);
    site.write_config("proxied.toml", "uploads-ro", Some(&proxy.url()));
    let second = backup(&site, "proxied.toml");
    let object_gets = format!("/{}/{PREFIX}/", site.source.bucket);
    assert_eq!(
        proxy.count("GET", &object_gets),
        0,
        "no object was downloaded:\n{}",
        common::faults::describe(&proxy.seen())
    );
    assert_eq!(second["chunked"]["files_unchanged"], 25, "{second}");
    assert_eq!(second["chunked"]["chunks_added"], 0, "not even the tree changed: {second}");

    // One object changed (bytes and headers), one deleted, one added: two GETs.
    let client = site.source.client().await;
    let bucket = &site.source.bucket;
    client
        .put_object()
        .bucket(bucket)
        .key(format!("{PREFIX}/notes.txt"))
        .body(ByteStream::from_static(b"rewritten\n"))
        .content_type("text/markdown")
        .metadata("edited", "yes")
        .send()
        .await
        .unwrap();
    client.delete_object().bucket(bucket).key(format!("{PREFIX}/photos/2026/01/b.jpg")).send().await.unwrap();
    client
        .put_object()
        .bucket(bucket)
        .key(format!("{PREFIX}/photos/2026/02/c.jpg"))
        .body(ByteStream::from(random(100 << 10)))
        .content_type("image/jpeg")
        .send()
        .await
        .unwrap();
    let latest_objects = site.objects(bucket, PREFIX).await;
    let gets_before = proxy.count("GET", &object_gets);
    let third = backup(&site, "proxied.toml");
    assert_eq!(proxy.count("GET", &object_gets) - gets_before, 2, "{}", common::faults::describe(&proxy.seen()));
    assert_eq!(third["chunked"]["files_unchanged"], 23, "{third}");

    // The first snapshot into another bucket, with the read-write profile of a restore host.
    let target = Garage::start().unwrap();
    let (rw_id, _) = {
        let text = std::fs::read_to_string(&site.profiles).unwrap();
        let id =
            text.lines().skip_while(|l| *l != "[uploads-rw]").nth(1).unwrap().split(" = ").nth(1).unwrap().to_string();
        (id, ())
    };
    target.allow(&rw_id, &["--read", "--write"]);
    site.write_config("restore.toml", "uploads-rw", None);
    let into = format!("uploads=s3://{}/restored", target.bucket);
    site.dr("restore.toml", &["restore", "--to", &first_id, "--into", &into]).ok();
    assert_eq!(site.objects(&target.bucket, "restored").await, original, "bytes, headers and user metadata");

    // Into the source bucket itself: refused while it holds objects, then replaced whole with --force.
    let refused = site.dr("restore.toml", &["restore", "--to", &first_id]).fails(1);
    assert!(refused.stderr.contains("not empty") && refused.stderr.contains("--force"), "{}", refused.stderr);
    client
        .put_object()
        .bucket(bucket)
        .key(format!("{PREFIX}/junk.bin"))
        .body(ByteStream::from_static(b"not in any snapshot"))
        .send()
        .await
        .unwrap();
    let forced = site.dr("restore.toml", &["restore", "--to", &first_id, "--force", "--json"]).ok().json();
    let warnings = forced["sources"][0]["warnings"].to_string();
    assert!(warnings.contains("2 objects deleted"), "junk.bin and c.jpg, added since: {warnings}");
    assert_eq!(site.objects(bucket, PREFIX).await, original, "the prefix is the first snapshot's again");
    assert!(site.objects(bucket, "elsewhere").await.contains_key("not-this-source.txt"), "outside the prefix: kept");

    // The latest snapshot into a directory: the objects as files, the folder object as a directory.
    let dir = site.site.path("restored-dir");
    site.dr("dr.toml", &["restore", "--to", "latest", "--into", &format!("uploads={}", dir.display())]).ok();
    let files = tree(&dir);
    for (key, object) in &latest_objects {
        match key.strip_suffix('/') {
            Some(folder) => assert!(files.contains_key(&format!("{folder}/")), "{key}"),
            None => assert_eq!(files.get(key), Some(&object.sha256), "{key}"),
        }
    }

    site.dr("dr.toml", &["verify", "--all"]).ok();
    let drill = site.dr("dr.toml", &["drill", "--json"]).ok().json();
    let checks = drill["checks"].as_array().unwrap();
    let files_check = checks.iter().find(|c| c["name"] == "files uploads").unwrap_or_else(|| panic!("{drill}"));
    assert_eq!(files_check["status"], "pass", "{drill}");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_that_change_or_vanish_during_the_backup_are_recorded() {
    let Some(site) = BucketSite::new().await else { return };
    let proxy = FaultProxy::start(&site.source.endpoint);
    site.write_config("proxied.toml", "uploads-ro", Some(&proxy.url()));
    // The GETs of two objects wait at the proxy until both were changed behind dr's back.
    let gate = Gate::new();
    let bucket = site.source.bucket.clone();
    for key in ["photos/2026/01/a.jpg", "photos/2026/01/b.jpg"] {
        proxy.add(Rule::new("GET", &format!("/{bucket}/{PREFIX}/{key}"), Action::Hold(gate.clone())).times(1));
    }
    let child =
        site.command("proxied.toml", &["backup", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let held = format!("/{bucket}/{PREFIX}/photos/2026/01/");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.count("GET", &held) < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", common::faults::describe(&proxy.seen()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = site.source.client().await;
    let replacement = random(50 << 10);
    client
        .put_object()
        .bucket(&bucket)
        .key(format!("{PREFIX}/photos/2026/01/a.jpg"))
        .body(ByteStream::from(replacement.clone()))
        .content_type("image/webp")
        .send()
        .await
        .unwrap();
    client.delete_object().bucket(&bucket).key(format!("{PREFIX}/photos/2026/01/b.jpg")).send().await.unwrap();
    gate.open();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let warnings = report["sources"][0]["warnings"].to_string();
    assert!(warnings.contains("photos/2026/01/b.jpg: vanished during the backup"), "{warnings}");
    assert!(warnings.contains("photos/2026/01/a.jpg: replaced during the backup"), "{warnings}");

    // The snapshot holds the newer a.jpg whole, and no b.jpg.
    let dir = site.site.path("restored");
    site.dr("dr.toml", &["restore", "--to", "latest", "--into", &format!("uploads={}", dir.display())]).ok();
    assert_eq!(std::fs::read(dir.join("photos/2026/01/a.jpg")).unwrap(), replacement);
    assert!(!dir.join("photos/2026/01/b.jpg").exists());
    // The next backup reads the replaced object again (its listing is now the new version's) and caches it.
    let next = backup(&site, "dr.toml");
    assert_eq!(next["chunked"]["files_unchanged"], 23, "all but a.jpg: {next}");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_on_the_source_bucket_is_one_clear_error() {
    let Some(site) = BucketSite::new().await else { return };
    site.write_config("denied.toml", "nobody", None);
    let failed = site.dr("denied.toml", &["backup"]).fails(1);
    let bucket = &site.source.bucket;
    let error = failed.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.contains("files source \"uploads\"") && error.contains("access denied"), "{}", failed.stderr);
    assert!(error.contains(&format!("s3://{bucket}/{PREFIX}")), "names the bucket: {}", failed.stderr);
    assert!(failed.stderr.contains("hint:") && failed.stderr.contains("s3:GetObject"), "{}", failed.stderr);
    assert_eq!(failed.stderr.matches("error:").count(), 1, "one error: {}", failed.stderr);
    assert_eq!(site.dr("dr.toml", &["snapshots", "--json"]).ok().json(), serde_json::json!([]), "no snapshot");
    let check = site.dr("denied.toml", &["check"]).fails(1);
    assert!(check.stdout.contains("files \"uploads\"") && check.stdout.contains("access denied"), "{}", check.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_broken_mid_object_is_resumed_and_the_snapshot_is_whole() {
    let Some(site) = BucketSite::new().await else { return };
    let proxy = FaultProxy::start(&site.source.endpoint);
    site.write_config("proxied.toml", "uploads-ro", Some(&proxy.url()));
    let video = format!("/{}/{PREFIX}/videos/clip.mp4", site.source.bucket);
    // The first GET of the video breaks after 1 MiB, and so does the ranged GET that resumes it.
    let dropped = proxy.add(Rule::new("GET", &video, Action::DropAfter { bytes: 1 << 20 }).times(2));
    let report = backup(&site, "proxied.toml");
    assert_eq!(proxy.fired(dropped), 2, "{}", common::faults::describe(&proxy.seen()));
    assert!(proxy.count("GET", &video) >= 3, "resumed: {}", common::faults::describe(&proxy.seen()));
    assert_eq!(report["chunked"]["files_unchanged"], 0, "{report}");
    let dir = site.site.path("restored");
    site.dr("dr.toml", &["restore", "--to", "latest", "--into", &format!("uploads={}", dir.display())]).ok();
    let original = site.objects(&site.source.bucket, PREFIX).await;
    let restored = tree(&dir);
    assert_eq!(restored.get("videos/clip.mp4"), Some(&original["videos/clip.mp4"].sha256), "the video is whole");
}
