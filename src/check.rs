//! `dr check`: everything a backup, a restore and the service will need, tried up front, and every problem
//! reported at once instead of one per run.
//!
//! Each check reuses the function the real command calls (schedule loading, key parsing, `Repository::open`,
//! the database connection, the pg_dump lookup), so a check passes exactly when that step would. Nothing is
//! written: not to the repository, the databases or the paths.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::crypto::{Identities, Recipients};
use crate::error::Error;
use crate::pg::{self, tools};

/// How long one database or repository check may take before it counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(20);

/// What was checked, in order.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub items: Vec<Item>,
}

impl CheckReport {
    pub fn problems(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| !i.ok)
    }

    pub fn ok(&self) -> bool {
        self.problems().next().is_none()
    }
}

/// One thing checked: `subject` names it (`files "uploads"`, `repository s3://...`), `detail` says what was
/// found, `hint` what to do about a problem.
#[derive(Debug, Serialize)]
pub struct Item {
    pub area: Area,
    pub subject: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Configuration,
    Schedules,
    Paths,
    Keys,
    Repository,
    Database,
}

impl Area {
    pub fn label(self) -> &'static str {
        match self {
            Area::Configuration => "configuration",
            Area::Schedules => "schedules",
            Area::Paths => "paths",
            Area::Keys => "keys",
            Area::Repository => "repository",
            Area::Database => "database",
        }
    }
}

impl Item {
    pub fn ok(area: Area, subject: impl Into<String>, detail: impl Into<String>) -> Item {
        Item { area, subject: subject.into(), ok: true, detail: detail.into(), hint: None }
    }

    /// A problem from an error of the engine: its message (on one line) and its hint.
    pub fn problem(area: Area, subject: impl Into<String>, error: &Error) -> Item {
        let detail = error.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        Item { area, subject: subject.into(), ok: false, detail, hint: error.hint() }
    }

    fn from_result(area: Area, subject: impl Into<String>, result: crate::Result<String>) -> Item {
        match result {
            Ok(detail) => Item::ok(area, subject, detail),
            Err(e) => Item::problem(area, subject, &e),
        }
    }
}

/// Runs every check on a configuration that loaded (a configuration that does not load is the one problem
/// the caller reports: nothing else can be checked without it).
pub async fn check(config: &Config) -> CheckReport {
    let mut items = schedules(config);
    items.extend(paths(config));
    items.extend(keys(config));
    items.push(repository(config).await);
    for source in config.files.iter().filter(|f| f.bucket_url().is_some()) {
        items.push(Item::from_result(Area::Paths, format!("files {:?}", source.name), bucket(source).await));
    }
    for source in &config.postgres {
        items.push(Item::from_result(Area::Database, format!("postgres {:?}", source.name), database(source).await));
    }
    CheckReport { items }
}

/// `[[job]]` and `schedules_dir`, through the service's own loader: each configured job on its own (so every
/// bad cron expression is named), then all of them together (duplicate names, the schedules directory).
fn schedules(config: &Config) -> Vec<Item> {
    let subject = "schedules";
    let alone = |jobs: Vec<crate::config::JobConfig>, dir: Option<std::path::PathBuf>| {
        let mut partial = config.clone();
        partial.jobs = jobs;
        partial.service.schedules_dir = dir;
        crate::service::load_jobs(&partial)
    };
    // The time zone first: every job would otherwise repeat its error.
    if let Err(e) = alone(Vec::new(), None) {
        return vec![Item::problem(Area::Schedules, subject, &e)];
    }
    let mut items: Vec<Item> = config
        .jobs
        .iter()
        .filter_map(|job| alone(vec![job.clone()], None).err().map(|e| (job, e)))
        .map(|(_, e)| Item::problem(Area::Schedules, "[[job]]", &e))
        .collect();
    if items.is_empty() {
        items.push(match crate::service::load_jobs(config) {
            Ok(jobs) if jobs.is_empty() => {
                Item::ok(Area::Schedules, subject, "no [[job]] (dr serve would run nothing)")
            }
            Ok(jobs) => {
                let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
                Item::ok(
                    Area::Schedules,
                    subject,
                    format!("{}: {}", crate::units::plural(jobs.len(), "job"), names.join(", ")),
                )
            }
            Err(e) => Item::problem(Area::Schedules, subject, &e),
        });
    }
    items
}

/// Files roots (exist, are directories, can be listed), and the other paths dr reads.
fn paths(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    for source in config.files.iter().filter(|f| f.bucket_url().is_none()) {
        let subject = format!("files {:?}", source.name);
        items.push(readable_dir(subject, &source.path, "the `path` of this [[files]] source"));
    }
    if let Some(dir) = &config.restore.temp_dir {
        items.push(readable_dir("[restore] temp_dir".into(), dir, "[restore] temp_dir"));
    }
    if let Some(path) = &config.service.token_file {
        let subject = "[service] token_file";
        items.push(match std::fs::read_to_string(path) {
            Ok(_) => Item::ok(Area::Paths, subject, format!("{} is readable", path.display())),
            Err(e) => Item {
                area: Area::Paths,
                subject: subject.into(),
                ok: false,
                detail: format!("{}: {e}", path.display()),
                hint: Some(format!("{}, or correct [service] token_file", access_hint(&e))),
            },
        });
    }
    items
}

/// A directory dr must list: `setting` names where its path is configured, for the hint.
fn readable_dir(subject: String, path: &Path, setting: &str) -> Item {
    let problem = |detail: String, hint: String| Item {
        area: Area::Paths,
        subject: subject.clone(),
        ok: false,
        detail,
        hint: Some(hint),
    };
    let listed = std::fs::metadata(path)
        .and_then(|meta| if meta.is_dir() { std::fs::read_dir(path).map(Some) } else { Ok(None) });
    match listed {
        Ok(Some(entries)) => Item::ok(
            Area::Paths,
            subject.clone(),
            format!("{} ({} at the top)", path.display(), crate::units::plural(entries.count(), "entry")),
        ),
        Ok(None) => {
            problem(format!("{} is not a directory", path.display()), format!("point {setting} at a directory"))
        }
        Err(e) => problem(format!("{}: {e}", path.display()), format!("{}, or correct {setting}", access_hint(&e))),
    }
}

fn access_hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "create it".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name);
            format!("let the user dr runs as ({}) read it", user.unwrap_or_else(|| nix::unistd::geteuid().to_string()))
        }
        _ => "check it".to_string(),
    }
}

/// Recipients parse; the identity loads; and, with both, the identity opens what is sealed to the recipients
/// (the proof that restores will be able to decrypt this host's backups).
fn keys(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    let recipients = Recipients::parse(&config.encryption.recipients);
    items.push(match &recipients {
        Ok(_) => Item::ok(
            Area::Keys,
            "[encryption] recipients",
            crate::units::plural(config.encryption.recipients.len(), "recipient"),
        ),
        Err(e) => Item::problem(Area::Keys, "[encryption] recipients", e),
    });
    let Some(path) = &config.encryption.identity_file else {
        items.push(Item::ok(
            Area::Keys,
            "[encryption] identity_file",
            "not set: this host can back up, but not restore, verify or drill",
        ));
        return items;
    };
    let subject = "[encryption] identity_file";
    let identities = match Identities::load(path) {
        Ok(identities) => identities,
        Err(e) => {
            items.push(Item::problem(Area::Keys, subject, &e));
            return items;
        }
    };
    let Ok(recipients) = recipients else {
        items.push(Item::ok(Area::Keys, subject, format!("{} loads", path.display())));
        return items;
    };
    items.push(Item::from_result(Area::Keys, subject, identity_matches(&recipients, &identities)));
    items
}

fn identity_matches(recipients: &Recipients, identities: &Identities) -> crate::Result<String> {
    let sealed = recipients.seal(b"dr check").map_err(|e| Error::io("encrypting a test message", e))?;
    let what = "a test message sealed to [encryption] recipients";
    identities.open(&sealed, what)?;
    Ok(format!("{} decrypts what is sealed to the recipients", identities.path().display()))
}

async fn repository(config: &Config) -> Item {
    let subject = format!("repository {}", config.repository.url);
    let open = async {
        let store = crate::store::open(&config.repository).await?;
        let repo = crate::Repository::open(Arc::from(store)).await?;
        let snapshots = repo.snapshot_ids().await?.len();
        Ok::<String, Error>(format!("reachable and initialized, {}", crate::units::plural(snapshots, "snapshot")))
    };
    let result = tokio::time::timeout(TIMEOUT, open).await.unwrap_or_else(|_| {
        Err(Error::StoreUnreachable {
            location: config.repository.url.clone(),
            endpoint: config.repository.endpoint.clone().unwrap_or_default(),
            source: format!("no answer within {}", crate::units::duration(TIMEOUT)).into(),
            retried: true,
        })
    });
    Item::from_result(Area::Repository, subject, result)
}

/// A bucket source: listed as a backup would (one key), with the source's own endpoint and credentials.
async fn bucket(source: &crate::config::FilesSource) -> crate::Result<String> {
    let check = async {
        let store = crate::engine::chunked::bucket::check_access(source).await?;
        Ok::<String, Error>(format!("{} can be listed", crate::store::Store::location(&store)))
    };
    tokio::time::timeout(TIMEOUT, check).await.unwrap_or_else(|_| {
        let unreachable = Error::StoreUnreachable {
            location: source.path.display().to_string(),
            endpoint: source.endpoint.clone().unwrap_or_default(),
            source: format!("no answer within {}", crate::units::duration(TIMEOUT)).into(),
            retried: true,
        };
        Err(crate::engine::chunked::bucket::source_error(&source.name, unreachable))
    })
}

/// Connects as a backup would, and finds the pg_dump (and pg_dumpall) a backup of that server would run.
async fn database(source: &crate::config::PostgresSource) -> crate::Result<String> {
    let conninfo = crate::pg::source_conninfo(source)?;
    let target = conninfo.redacted();
    let db_error = |message: String| Error::Database {
        source_name: source.name.clone(),
        target: target.clone(),
        message,
        source: None,
    };
    let connected = async {
        let client = pg::connect(&conninfo).await.map_err(|e| e.into_error(&source.name, target.clone()))?;
        let row = client
            .query_one("SELECT current_setting('server_version'), current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| pg::database_error(&source.name, &target, e))?;
        stream_readiness(&client, source, &target).await?;
        Ok::<(String, i32), Error>((row.get(0), row.get(1)))
    };
    let (version, version_num) = tokio::time::timeout(TIMEOUT, connected)
        .await
        .unwrap_or_else(|_| Err(db_error(format!("no answer within {}", crate::units::duration(TIMEOUT)))))?;
    let major = (version_num / 10_000) as u32;
    let pg_dump = tools::find("pg_dump", tools::Want::AtLeast(major))?;
    if source.globals {
        tools::find("pg_dumpall", tools::Want::AtLeast(major))?;
    }
    Ok(format!("{target}: PostgreSQL {version}, pg_dump {} at {}", pg_dump.major, pg_dump.path.display()))
}

/// A continuous source's server must decode logically (docs/pitr.md); any other source must not keep a slot of
/// dr's, which makes the server keep WAL for nobody (continuous capture switched off without `dr stream drop`).
async fn stream_readiness(
    client: &tokio_postgres::Client,
    source: &crate::config::PostgresSource,
    target: &str,
) -> crate::Result<()> {
    if source.continuous {
        return crate::stream::slot::server_facts(client, &source.name).await.map(|_| ());
    }
    let slots = client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots
             WHERE database = current_database() AND slot_name LIKE 'dr\\_%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg::database_error(&source.name, target, e))?;
    if slots.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = slots.iter().map(|r| r.get(0)).collect();
    Err(crate::stream::slot::stream_error(
        &source.name,
        format!(
            "the server keeps WAL for replication slot {} of dr's, but continuous capture is off for this source",
            names.join(", ")
        ),
        format!("run `dr stream drop {}` (or set continuous = true again)", source.name),
    ))
}
