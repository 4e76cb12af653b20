//! The audit log: every backup, restore, drill (and a failed one) leaves one JSON line saying who, what,
//! which snapshot and the outcome, and never a password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{DATABASE, Site, scratch};

#[tokio::test(flavor = "multi_thread")]
async fn backups_restores_and_drills_are_on_record() {
    let site = Site::new().await;
    let log = site.path("audit/audit.jsonl");
    site.write_config(&format!("[audit]\npath = \"{}\"\n", log.display()));
    let snapshot = site.backup();
    let target = scratch().await;
    let restored = site.path("restored");
    site.dr_with(&["restore", "--to", "latest"], &Site::into_args(&target.url(DATABASE), &restored)).ok();
    site.dr(&["drill"]).ok();
    // A restore whose target needs a password it does not have: a failure, with the password kept out.
    let url = format!("postgres://nobody:SECRETPW@127.0.0.1:1/{DATABASE}");
    site.dr(&["restore", "--to", "latest", "--only", "app", "--into", &format!("app={url}")]).fails(1);

    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["action"].as_str().unwrap(), l["outcome"].as_str().unwrap())).collect();
    assert_eq!(summary, [("backup", "success"), ("restore", "success"), ("drill", "success"), ("restore", "failure")]);
    assert!(lines[..3].iter().all(|l| l["snapshot"] == snapshot.as_str()), "{lines:#?}");
    assert_eq!(lines[0]["via"], "dr backup");
    assert_eq!(lines[0]["user"], nix::unistd::User::from_uid(nix::unistd::Uid::effective()).unwrap().unwrap().name);
    assert!(lines[1]["detail"].as_str().unwrap().contains("into app -> "), "{:#?}", lines[1]);
    assert!(lines[3]["error"].as_str().is_some_and(|e| !e.is_empty()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("SECRETPW"), "no password in the audit log:\n{text}");
}
