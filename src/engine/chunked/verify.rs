//! Verifying chunked files sources: every tree reads back, every chunk it names is in the index, and every
//! pack holding them is in the store at its recorded size; the packs (all, or a subset) are read whole and
//! every chunk in them is decrypted, decompressed and its id recomputed.
//!
//! Packs are shared between snapshots, so they are checked once per run, and each snapshot's tree is told
//! which of its packs failed.

use std::collections::{BTreeMap, HashMap};

use super::restore::ChunkedReader;
use crate::chunks::read_indexed_pack;
use crate::error::{Error, Result};
use crate::files::TreeKind;
use crate::progress::Progress;
use crate::repo::manifest::ObjectEntry;

/// Which packs a verification reads whole (every pack is checked for presence and size either way).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadPacks {
    /// Every pack the checked snapshots need.
    #[default]
    All,
    /// Part `n` of `m` (1-based): the packs whose name, as a number, is `n - 1` modulo `m`; `m` runs with
    /// `n` = 1..m read every pack once (restic's `--read-data-subset n/m`).
    Part { n: u32, m: u32 },
    /// A random share of the packs, in percent.
    Percent(f64),
}

impl ReadPacks {
    fn reads(&self, pack_name: &str) -> bool {
        match *self {
            ReadPacks::All => true,
            ReadPacks::Part { n, m } => {
                let number = u32::from_str_radix(&pack_name[..pack_name.len().min(8)], 16).unwrap_or(0);
                number % m == n - 1
            }
            ReadPacks::Percent(share) => rand::random::<f64>() * 100.0 < share,
        }
    }
}

/// One tree to check: its snapshot's source and object.
pub(crate) struct TreeToCheck {
    pub object: ObjectEntry,
}

/// What the check found per tree (same order as given): `None` when whole, else the problems in one text.
pub(crate) async fn check_trees(
    reader: &ChunkedReader,
    trees: &[TreeToCheck],
    read: ReadPacks,
    progress: &dyn Progress,
) -> Result<Vec<Option<String>>> {
    let mut problems: Vec<Vec<String>> = vec![Vec::new(); trees.len()];
    // pack index → the trees that need it, with one file each for the message.
    let mut users: BTreeMap<u32, BTreeMap<usize, String>> = BTreeMap::new();
    for (n, tree) in trees.iter().enumerate() {
        let object = match reader.tree_object(&tree.object).await {
            Ok(object) => object,
            Err(e @ Error::WrongIdentity { .. }) => return Err(e),
            Err(e) => {
                problems[n].push(e.to_string());
                continue;
            }
        };
        let entries = reader.tree_entries(&object, &tree.object.key);
        let index = reader.index.clone();
        let walked = tokio::task::spawn_blocking(move || {
            let mut needed: HashMap<u32, String> = HashMap::new();
            let mut missing: Vec<String> = Vec::new();
            let (mut files, mut bytes) = (0u64, 0u64);
            for entry in entries {
                let entry = entry?;
                // A hard link counts as a file, as at backup; its data is its first path's.
                if matches!(entry.kind, TreeKind::HardLink { .. }) {
                    files += 1;
                }
                if !matches!(entry.kind, TreeKind::File) {
                    continue;
                }
                files += 1;
                bytes += entry.size;
                let path = String::from_utf8_lossy(&entry.path).into_owned();
                for id in &entry.chunks {
                    match index.locate(id) {
                        Some(location) => {
                            needed.entry(location.pack_number).or_insert_with(|| path.clone());
                        }
                        None => missing.push(format!("{path}: chunk {id} is in no pack index")),
                    }
                }
            }
            Ok::<_, Error>((needed, missing, files, bytes))
        })
        .await
        .map_err(|e| Error::io("verifying a tree", std::io::Error::other(e)))?;
        match walked {
            Ok((needed, missing, files, bytes)) => {
                problems[n].extend(missing.into_iter().take(10));
                if (files, bytes) != (object.files, object.bytes) {
                    problems[n].push(format!(
                        "the tree lists {files} files / {bytes} bytes, its object says {} / {}",
                        object.files, object.bytes
                    ));
                }
                for (pack, path) in needed {
                    users.entry(pack).or_default().insert(n, path);
                }
            }
            Err(e) => problems[n].push(format!("the tree cannot be read: {e}")),
        }
    }

    // One listing gives every pack's presence and size: no request per pack that is not read.
    let stored: BTreeMap<String, u64> =
        reader.repo.store().list(crate::chunks::PACKS_PREFIX).await?.into_iter().map(|m| (m.key, m.size)).collect();
    let task = progress.task("packs", Some(users.len() as u64));
    for (pack, trees_using) in users {
        let record = reader.index.pack(pack);
        let key = crate::chunks::pack_key(&record.name());
        let problem = match stored.get(&key) {
            None => Some(format!("pack {key} is missing")),
            Some(&size) if size != record.stored_size => {
                Some(format!("pack {key} is {size} bytes, the index says {}", record.stored_size))
            }
            Some(_) if read.reads(&record.name()) => {
                match read_indexed_pack(reader.repo.store(), record, reader.identities.clone()).await {
                    Ok(contents) => contents.check_all(&reader.keys.key).err().map(|e| e.to_string()),
                    Err(e @ Error::WrongIdentity { .. }) => return Err(e),
                    Err(e) => Some(e.to_string()),
                }
            }
            Some(_) => None,
        };
        task.advance(1);
        if let Some(problem) = problem {
            for (n, path) in trees_using {
                problems[n].push(format!("{problem} (it holds data of {path}, among others)"));
            }
        }
    }
    task.finish("checked");
    Ok(problems.into_iter().map(|p| (!p.is_empty()).then(|| p.join("; "))).collect())
}
