//! Relative paths in a configuration file resolve against the file's directory, however the file was found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{dr_command, run};

const CONFIG: &str = "[repository]\nurl = \"repo\"\n";

#[test]
fn a_relative_repository_is_beside_a_config_named_relatively() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/dr.toml"), CONFIG).unwrap();
    run(dr_command().current_dir(dir.path()).args(["--config", "etc/dr.toml", "init"])).ok();
    assert!(dir.path().join("etc/repo/config.json").is_file(), "the repository is created beside the config");
}

#[test]
fn a_relative_repository_is_beside_a_config_found_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dr.toml"), CONFIG).unwrap();
    run(dr_command().current_dir(dir.path()).arg("init")).ok();
    assert!(dir.path().join("repo/config.json").is_file());
    let run = run(dr_command().current_dir(dir.path()).arg("snapshots"));
    assert!(run.ok().stdout.contains("no snapshots"));
}
