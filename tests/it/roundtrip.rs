//! Site → repository → site, against real PostgreSQL servers: what comes back equals what went in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{DATABASE, Site, UPLOAD_EXCLUDES, fingerprint, listing, roles, scratch};

async fn round_trip(jobs: &str) {
    let site = Site::new().await;
    let snapshot = site.backup();
    assert!(snapshot.len() == 23, "backup prints the snapshot id, got {snapshot:?}");

    let target = scratch().await;
    let restored = site.path("restored");
    let run = site
        .dr(&[
            "restore",
            "--to",
            "latest",
            "--jobs",
            jobs,
            "--into",
            &format!("app={}", target.url(DATABASE)),
            "--into",
            &format!("config={}", restored.join("config").display()),
            "--into",
            &format!("uploads={}", restored.join("uploads").display()),
        ])
        .ok();
    assert!(run.stdout.contains(&snapshot), "{}", run.stdout);

    let original = fingerprint(&site.db, DATABASE).await;
    assert!(original.len() >= 14, "the fixture has many tables: {original:?}");
    assert_eq!(fingerprint(&target, DATABASE).await, original, "every table, sequence and large object");
    assert_eq!(roles(&target).await, roles(&site.db).await, "roles, with their password hashes");

    assert_eq!(listing(&restored.join("config"), &[]), listing(&site.config_dir(), &[]));
    let uploads = listing(&restored.join("uploads"), &[]);
    assert_eq!(uploads, listing(&site.uploads_dir(), &UPLOAD_EXCLUDES), "modes, mtimes, links, empty dirs");
    for excluded in ["upload-1.tmp", "2026/11/resize.tmp", "cache/thumb.jpg", "private"] {
        assert!(!uploads.contains_key(excluded), "{excluded} must be excluded");
    }
    assert!(uploads.contains_key("cache"), "an excluded directory's contents go, the directory stays");
    assert_eq!(uploads["dangling.jpg"], "symlink -> missing.jpg");
    assert!(uploads["albums/empty"].starts_with("dir 755 "));
    assert!(uploads["albums/restricted"].starts_with("dir 750 "));
    let config = listing(&restored.join("config"), &[]);
    assert!(config["secrets.env"].starts_with("file 600 "));
    assert!(config["deploy.sh"].starts_with("file 755 "));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parallel_restore_gives_back_identical_contents() {
    round_trip("2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_restore_gives_back_identical_contents() {
    round_trip("1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_listed_selected_by_time_and_prefix_and_verified() {
    let site = Site::new().await;
    let first = site.backup();
    common::sql(&site.db, DATABASE, "INSERT INTO analytics.daily_uploads VALUES ('2027-01-01', 1)").await;
    // Ids have second precision; make sure the second snapshot is in a later second.
    common::next_second();
    let second = site.backup();
    assert!(second > first);

    let list = site.dr(&["snapshots", "--json"]).ok().json();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let sources: Vec<&str> =
        list[0]["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(sources, ["app", "config", "uploads"]);
    assert!(list[0]["stored_size"].as_u64().unwrap() > 0);
    let table = site.dr(&["snapshots"]).ok().stdout;
    assert!(table.contains(&first) && table.contains("app ") && table.contains("2 snapshots"), "{table}");

    // The first snapshot, by the time it was taken and by a unique id prefix.
    let time = chrono::NaiveDateTime::parse_from_str(&first[..16], "%Y%m%dT%H%M%SZ").unwrap().and_utc();
    for selector in [time.to_rfc3339(), first[..first.len() - 2].to_string()] {
        let target = scratch().await;
        site.dr(&["restore", "--to", &selector, "--only", "app", "--into", &format!("app={}", target.url(DATABASE))])
            .ok();
        let rows = common::query_strings(&target, DATABASE, "SELECT count(*)::text FROM analytics.daily_uploads").await;
        assert_eq!(rows, ["25"], "--to {selector} restores the first snapshot");
    }

    let verify = site.dr(&["verify", "--all", "--json"]).ok().json();
    let snapshots = verify["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 2);
    assert!(snapshots.iter().all(|s| s["objects"].as_array().unwrap().iter().all(|o| o["error"].is_null())));
    assert_eq!(snapshots[0]["objects"].as_array().unwrap().len(), 6, "dump, globals, 2 x (tar, index)");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_only_some_sources() {
    let site = Site::new().await;
    site.dr(&["backup", "--only", "config", "--only", "uploads"]).ok();
    let list = site.dr(&["snapshots", "--json"]).ok().json();
    let sources: Vec<&str> =
        list[0]["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(sources, ["config", "uploads"]);

    let run = site.dr(&["backup", "--only", "nope"]).fails(2);
    assert!(run.error().contains("\"nope\"") && run.error().contains("app, config, uploads"), "{}", run.error());
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_json_reports_every_source() {
    let site = Site::new().await;
    let report = site.dr(&["backup", "--json"]).ok().json();
    let sources = report["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3);
    assert!(sources.iter().all(|s| s["stored_size"].as_u64().unwrap() > 0));
    assert_eq!(report["snapshot"].as_str().unwrap().len(), 23);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_keeps_user_data_encrypted_and_passwords_out() {
    let site = Site::new().await;
    let snapshot = site.backup();
    let manifest = std::fs::read_to_string(site.repo.join(format!("snapshots/{snapshot}.json"))).unwrap();
    for secret in ["isntgram", "posts", "daily_uploads", "0001.jpg", "secrets.env", "SCRAM", "demo-only"] {
        assert!(!manifest.contains(secret), "the plain manifest must not mention {secret:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert!(json["private"].as_str().unwrap().starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(json["sources"][0]["objects"][0]["sha256"].as_str().unwrap().len() == 64);
}
