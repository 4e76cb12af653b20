//! dr's reading of pg_dump's custom archive format (`dr::pg::archive`) checked against pg_dump itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use dr::pg::archive::{BlockWalker, Toc};

use crate::common;
use common::{DATABASE, Site};

/// The data offsets a restore writes into an archive that pg_dump wrote to a pipe make it the file pg_dump
/// writes when given a file name, byte for byte but for the creation time in the header. The fixture has
/// tables, sequences and large objects: both kinds of data block.
#[tokio::test(flavor = "multi_thread")]
async fn offsets_found_in_a_piped_archive_make_it_pg_dumps_own_file() {
    let site = Site::new().await;
    let pg_dump = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_dump", site.db.major()));
    let url = site.db.url(DATABASE);
    let piped = Command::new(&pg_dump).args(["--format=custom", "--compress=0", "--dbname", &url]).output().unwrap();
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let file = site.path("app.dump");
    let status = Command::new(&pg_dump)
        .args(["--format=custom", "--compress=0", "--dbname", &url, "--file"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let from_file = std::fs::read(&file).unwrap();

    let mut archive = piped.stdout;
    let (toc, prefix) = Toc::read(&mut &archive[..]);
    let toc = toc.unwrap();
    assert_eq!(prefix, archive[..toc.len as usize]);
    let mut walker = BlockWalker::new(&toc);
    // In pieces of an odd size, as a decoder hands them over.
    for piece in archive[toc.len as usize..].chunks(4093) {
        walker.feed(piece);
    }
    assert!(walker.at_block_boundary());
    let patches = toc.offset_patches(walker.starts());
    let blocks = ["TABLE DATA", "BLOBS"].map(|d| toc.entries.iter().filter(|e| e.desc == d).count());
    assert!(blocks[0] >= 5 && blocks[1] == 1, "the fixture's tables and large objects: {blocks:?}");
    assert_eq!(patches.len(), blocks[0] + blocks[1], "every data block is found");
    assert_ne!(archive, from_file);
    for (at, bytes) in patches {
        archive[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    assert_eq!(archive.len(), from_file.len());
    let differing: Vec<usize> = (0..archive.len()).filter(|&i| archive[i] != from_file[i]).collect();
    assert!(differing.iter().all(|&i| i < 64), "only the creation time may differ: {differing:?}");
}
