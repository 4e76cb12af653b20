//! `dr demo`: the whole round trip on scratch infrastructure, as a first command on a fresh machine.
//!
//! Starts a scratch PostgreSQL, fills it with a small photo-sharing site (plus configuration and upload
//! files), backs it all up to a local repository, restores into a second scratch server and directory, proves
//! the contents are identical, verifies the snapshot, runs a restore drill on it, and cleans up. Each step is
//! reported with its time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, EncryptionConfig, FilesFormat, FilesSource, PostgresSource, RepositoryConfig};
use crate::crypto::{Identities, KeyPair};
use crate::error::{Error, Result};
use crate::files::{Excludes, tree_listing};
use crate::pg::{ScratchOptions, ScratchPostgres, connect, describe, inspect};
use crate::progress::NoProgress;
use crate::repo::Repository;
use crate::repo::snapshot_id::Selector;
use crate::{engine, store};

const SAMPLE_SITE: &str = include_str!("sample_site.sql");
const DATABASE: &str = "isntgram";
const UPLOAD_EXCLUDES: [&str; 2] = ["*.tmp", "cache/**"];

#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the repository and files in place (the servers are always stopped).
    pub keep: bool,
}

/// One finished step.
#[derive(Debug, Clone)]
pub struct DemoStep {
    pub title: String,
    pub elapsed: Duration,
    pub detail: String,
}

#[derive(Debug)]
pub struct DemoOutcome {
    pub steps: Vec<DemoStep>,
    pub total: Duration,
    /// The work directory, when kept.
    pub kept: Option<PathBuf>,
}

struct DemoSteps<'a> {
    done: Vec<DemoStep>,
    report: &'a mut (dyn FnMut(&DemoStep) + Send),
}

impl DemoSteps<'_> {
    async fn run<T>(&mut self, title: &str, work: impl Future<Output = Result<(T, String)>>) -> Result<T> {
        let start = Instant::now();
        let (value, detail) = work.await?;
        let step = DemoStep { title: title.to_string(), elapsed: start.elapsed(), detail };
        (self.report)(&step);
        self.done.push(step);
        Ok(value)
    }
}

pub async fn run(options: &DemoOptions, report: &mut (dyn FnMut(&DemoStep) + Send)) -> Result<DemoOutcome> {
    let clock = Instant::now();
    // A run directory, like a restore's: a demo that is killed leaves its servers and files to the next sweep.
    let work = tokio::task::spawn_blocking(|| crate::run_dir::RunDir::create(None, "demo"))
        .await
        .map_err(|e| Error::io("creating the demo directory", std::io::Error::other(e)))??;
    let root = work.path().to_path_buf();
    let mut steps = DemoSteps { done: Vec::new(), report };

    let source = steps
        .run("start a scratch PostgreSQL (the site's database)", async {
            let server = start_scratch(&root).await?;
            let detail = format!("PostgreSQL {} on {}", server.major(), server.socket_dir().display());
            Ok((server, detail))
        })
        .await?;
    let site = root.join("site");
    steps
        .run("create the sample site: database, config files, uploads", async {
            let rows = seed_database(&source).await?;
            let files = write_sample_files(&site).map_err(|e| Error::io("writing the sample files", e))?;
            Ok(((), format!("{rows} rows in 6 tables, {files} files")))
        })
        .await?;

    let config = demo_config(&root, &site, &source);
    let key = KeyPair::generate();
    let identity_path = root.join("identity.txt");
    let repo = steps
        .run("generate a key pair and initialize a local repository", async {
            key.write_identity_file(&identity_path)?;
            let store = store::open_local(&format!("file://{}", root.join("repo").display()))?;
            let repo = Repository::init(Arc::from(store)).await?;
            Ok((repo, format!("repository {}", root.join("repo").display())))
        })
        .await?;
    let config = Config {
        encryption: EncryptionConfig {
            recipients: vec![key.recipient()],
            identity_file: Some(identity_path.clone()),
            dedup_key_file: None,
        },
        ..config
    };

    let backup = steps
        .run("back up database, roles, config and uploads", async {
            let report = engine::backup(&config, &repo, &engine::BackupOptions::default(), &NoProgress).await?;
            let detail = format!("snapshot {} ({})", report.snapshot, crate::units::bytes(report.stored_size));
            Ok((report, detail))
        })
        .await?;

    let target = steps
        .run("start a second scratch PostgreSQL (the recovery target)", async {
            let server = start_scratch(&root).await?;
            let detail = format!("PostgreSQL {}", server.major());
            Ok((server, detail))
        })
        .await?;
    let restored = root.join("restored");
    let identities = Arc::new(Identities::load(&identity_path)?);
    steps
        .run("restore the snapshot into the second server and a new directory", async {
            let options = engine::RestoreOptions {
                path: None,
                selector: Selector::Id(backup.snapshot.to_string()),
                only: Vec::new(),
                into: vec![
                    ("app".into(), target.url(DATABASE)),
                    ("config".into(), restored.join("config").display().to_string()),
                    ("uploads".into(), restored.join("uploads").display().to_string()),
                ],
                jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
                force: false,
                temp_dir: Some(root.clone()),
                point_in_time: false,
                replay_until: None,
            };
            let report = engine::restore(&config, &repo, identities.clone(), &options, &NoProgress).await?;
            Ok(((), format!("{} sources", report.sources.len())))
        })
        .await?;

    steps
        .run("compare: every table, sequence, large object, role and file", async {
            let detail = compare(&source, &target, &site, &restored).await?;
            Ok(((), detail))
        })
        .await?;
    steps
        .run("verify the snapshot: hashes, decryption, archive contents", async {
            let selection = engine::VerifySelection::One(Selector::Latest);
            let report =
                engine::verify(&config, &repo, identities.clone(), &selection, engine::ReadPacks::All, &NoProgress)
                    .await?;
            let objects = report.snapshots.iter().map(|s| s.objects.len()).sum::<usize>();
            if !report.ok() {
                return Err(Error::Mismatch {
                    what: "the snapshot".into(),
                    differences: report.bad_objects().map(|o| format!("{}: {:?}", o.key, o.error)).collect(),
                });
            }
            Ok(((), format!("{objects} objects intact")))
        })
        .await?;

    steps
        .run("restore drill: a third scratch server, every check, RPO and RTO", async {
            let options = crate::drill::DrillOptions {
                selector: Selector::Latest,
                scratch_url: None,
                keep: false,
                jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
                temp_dir: Some(root.clone()),
                cancel: tokio_util::sync::CancellationToken::new(),
            };
            let outcome = crate::drill::drill(&config, &repo, identities.clone(), &options, &NoProgress).await?;
            let record = &outcome.record;
            if let Some(reason) = &record.reason {
                return Err(Error::DrillFailed { outcome: "failed", reason: reason.clone(), hint: outcome.hint });
            }
            let seconds = |s: Option<f64>| crate::units::seconds(s.unwrap_or(0.0));
            let detail = format!(
                "{} checks passed; RTO {} (objective {}), RPO {} (objective {})",
                record.checks.len(),
                seconds(record.rto.seconds),
                seconds(record.rto.objective_seconds),
                seconds(record.rpo.seconds),
                seconds(record.rpo.objective_seconds),
            );
            Ok(((), detail))
        })
        .await?;

    let kept = steps
        .run("stop the scratch servers and clean up", async {
            let stopped = tokio::task::spawn_blocking(move || source.stop().and(target.stop()))
                .await
                .map_err(|e| Error::io("stopping the scratch servers", std::io::Error::other(e)))?;
            stopped?;
            if options.keep {
                let kept = work.keep();
                let detail = format!("kept {}", kept.display());
                Ok((Some(kept), detail))
            } else {
                drop(work);
                Ok((None, "removed the demo directory".to_string()))
            }
        })
        .await?;
    Ok(DemoOutcome { steps: steps.done, total: clock.elapsed(), kept })
}

async fn start_scratch(parent: &Path) -> Result<ScratchPostgres> {
    let options = ScratchOptions { parent_dir: Some(parent.to_path_buf()), ..ScratchOptions::default() };
    tokio::task::spawn_blocking(move || ScratchPostgres::start(&options))
        .await
        .map_err(|e| Error::io("starting a scratch server", std::io::Error::other(e)))?
}

fn demo_config(root: &Path, site: &Path, source: &ScratchPostgres) -> Config {
    Config {
        repository: RepositoryConfig {
            url: format!("file://{}", root.join("repo").display()),
            ..RepositoryConfig::default()
        },
        postgres: vec![PostgresSource {
            name: "app".into(),
            url: source.url(DATABASE),
            globals: true,
            continuous: false,
        }],
        files: vec![
            FilesSource {
                name: "config".into(),
                path: site.join("config"),
                exclude: Vec::new(),
                format: FilesFormat::Tar,
                external_symlinks: false,
                ..FilesSource::default()
            },
            FilesSource {
                name: "uploads".into(),
                path: site.join("uploads"),
                exclude: UPLOAD_EXCLUDES.iter().map(|s| s.to_string()).collect(),
                format: FilesFormat::Chunked,
                external_symlinks: false,
                ..FilesSource::default()
            },
        ],
        // The objectives of a small site with hourly backups, for the drill step to measure against.
        objectives: crate::config::Objectives {
            rpo: Some(Duration::from_secs(3600)),
            rto: Some(Duration::from_secs(15 * 60)),
        },
        ..Config::default()
    }
}

fn database_error(message: String) -> Error {
    Error::Database { source_name: "demo".into(), target: "scratch server".into(), message, source: None }
}

async fn seed_database(server: &ScratchPostgres) -> Result<i64> {
    let admin = connect(&server.conninfo("postgres")).await.map_err(|e| database_error(e.to_string()))?;
    admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await.map_err(|e| database_error(describe(&e)))?;
    let client = connect(&server.conninfo(DATABASE)).await.map_err(|e| database_error(e.to_string()))?;
    client.batch_execute(SAMPLE_SITE).await.map_err(|e| database_error(describe(&e)))?;
    let rows: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts) + (SELECT count(*) FROM comments)
                  + (SELECT count(*) FROM likes) + (SELECT count(*) FROM avatars)
                  + (SELECT count(*) FROM analytics.daily_uploads)",
            &[],
        )
        .await
        .map_err(|e| database_error(describe(&e)))?
        .get(0);
    Ok(rows)
}

/// Writes the site's config and uploads; returns the number of files.
fn write_sample_files(site: &Path) -> std::io::Result<usize> {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    let config = site.join("config");
    fs::create_dir_all(config.join("nginx"))?;
    fs::write(config.join("isntgram.toml"), "[site]\nname = \"isntgram\"\nupload_dir = \"/srv/isntgram/uploads\"\n")?;
    fs::write(
        config.join("nginx/site.conf"),
        "server {\n  listen 80;\n  location /uploads/ { root /srv/isntgram; }\n}\n",
    )?;
    let secret = config.join("secrets.env");
    fs::write(&secret, "SESSION_KEY=demo\n")?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;

    let uploads = site.join("uploads");
    let month = uploads.join("2026/11");
    fs::create_dir_all(&month)?;
    let mut files = 3;
    for i in 1..=24u32 {
        // Photo-like content: incompressible bytes behind a JPEG-ish header.
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
        bytes.extend((0..20_000u32).map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 13) as u8));
        fs::write(month.join(format!("{i:04}.jpg")), bytes)?;
        files += 1;
    }
    fs::create_dir_all(uploads.join("albums/empty"))?;
    std::os::unix::fs::symlink("2026/11/0001.jpg", uploads.join("latest.jpg"))?;
    fs::write(uploads.join("upload-4711.tmp"), b"half-uploaded")?;
    fs::create_dir_all(uploads.join("cache"))?;
    fs::write(uploads.join("cache/thumb-0001.jpg"), b"thumbnail")?;
    Ok(files)
}

/// Compares the two databases and the two trees; `Ok(summary)` only when identical.
async fn compare(source: &ScratchPostgres, target: &ScratchPostgres, site: &Path, restored: &Path) -> Result<String> {
    let fingerprint = |server: &ScratchPostgres| {
        let conninfo = server.conninfo(DATABASE);
        async move {
            let client = connect(&conninfo).await.map_err(|e| database_error(e.to_string()))?;
            inspect::fingerprint(&client).await.map_err(|e| database_error(describe(&e)))
        }
    };
    let (before, after) = (fingerprint(source).await?, fingerprint(target).await?);
    let mut differences: Vec<String> = before
        .iter()
        .filter(|(name, digest)| after.get(*name) != Some(digest))
        .map(|(name, _)| format!("table {name}"))
        .collect();
    differences.extend(after.keys().filter(|k| !before.contains_key(*k)).map(|k| format!("extra {k}")));

    let role_password = |server: &ScratchPostgres| {
        let conninfo = server.conninfo("postgres");
        async move {
            let client = connect(&conninfo).await.map_err(|e| database_error(e.to_string()))?;
            let rows = client
                .query("SELECT rolpassword FROM pg_authid WHERE rolname = 'isntgram_app'", &[])
                .await
                .map_err(|e| database_error(describe(&e)))?;
            Ok::<_, Error>(rows.first().map(|r| r.get::<_, Option<String>>(0)))
        }
    };
    let (role_before, role_after) = (role_password(source).await?, role_password(target).await?);
    if role_after.is_none() || role_before != role_after {
        differences.push("role isntgram_app (missing or with another password)".into());
    }

    let invalid = |e: crate::files::BadExclude| Error::ConfigInvalid(e.to_string());
    let no_excludes = Excludes::new(&[]).map_err(invalid)?;
    let upload_excludes = Excludes::new(&UPLOAD_EXCLUDES.map(String::from)).map_err(invalid)?;
    let mut files = 0;
    for (name, excludes) in [("config", &no_excludes), ("uploads", &upload_excludes)] {
        let listing = |root: PathBuf, excludes: &Excludes| {
            tree_listing(&root, excludes).map_err(|e| Error::io(format!("listing {}", root.display()), e))
        };
        let original = listing(site.join(name), excludes)?;
        let copy = listing(restored.join(name), &no_excludes)?;
        files += copy.len();
        if original != copy {
            differences.push(format!("files of {name}"));
        }
    }
    if !differences.is_empty() {
        return Err(Error::Mismatch { what: "the restored site".into(), differences });
    }
    Ok(format!("{} tables/sequences/large objects and {files} file entries identical", before.len()))
}
