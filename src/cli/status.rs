//! `dr status [--json] [--url URL] [--token-file FILE]`: the service's `/status` at a glance, asked of the
//! running `dr serve` at `[service] listen` (with the token of `token_file`); without a running service, what
//! the repository alone tells: the newest snapshot and its age against the RPO objective.
//!
//! A configuration file that no longer loads (an edit in progress, a typo that the service's reload refused)
//! does not stop it: the running service still works from the configuration it loaded, so `dr status` asks it
//! at `--url`, else at the `[service] listen` and `token_file` it can still read from the file's TOML, else at
//! the default address, and says that the file is broken.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr::service::RepositoryStatus;
use dr::{Error, Result};
use serde_json::Value;

use super::Context;
use super::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,

    /// Ask the service at this base URL (default: from [service] listen, else http://127.0.0.1:9187).
    #[arg(long, value_name = "URL")]
    url: Option<String>,

    /// The bearer token for /status (default: [service] token_file).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let (status, config_error) = match context.load_config() {
        Ok(loaded) => {
            let config = loaded.config;
            let base =
                args.url.clone().unwrap_or_else(|| dr::service::local_base_url(&dr::service::listen_address(&config)));
            let token_file = args.token_file.clone().or_else(|| config.service.token_file.clone());
            let status = match ask_service(&base, token_file.as_deref()).await {
                Ok(status) => status,
                Err(e) => {
                    tracing::info!("no service answers at {base} ({e}): reading the repository instead");
                    repository_status(context, &config).await?
                }
            };
            (status, None)
        }
        Err(config_error) => {
            let salvaged = salvage_service_settings(context);
            let base = args.url.clone().unwrap_or_else(|| {
                dr::service::local_base_url(salvaged.listen.as_deref().unwrap_or(dr::service::DEFAULT_LISTEN))
            });
            let token_file = args.token_file.clone().or(salvaged.token_file);
            match ask_service(&base, token_file.as_deref()).await {
                Ok(status) => (status, Some(config_error)),
                // Neither the file nor a service: the configuration's error is the one to fix.
                Err(e) => {
                    tracing::warn!("no service answers at {base} either ({e})");
                    return Err(config_error);
                }
            }
        }
    };
    if let Some(e) = &config_error {
        tracing::warn!(
            "the configuration does not load ({e}); showing what the running service reports from the \
             configuration it loaded before"
        );
    }
    if args.json {
        let mut status = status;
        if let Some(e) = &config_error {
            status["configuration_error"] = Value::from(e.to_string());
        }
        return print_json(&status);
    }
    print_human(&status, config_error.as_ref(), Utc::now());
    Ok(())
}

/// What `dr status` can still read from a configuration file that does not load: `[service] listen` and
/// `token_file`, when the file is at least TOML.
#[derive(Default)]
struct Salvaged {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

fn salvage_service_settings(context: &Context) -> Salvaged {
    let Some(path) = context.config_file() else { return Salvaged::default() };
    let Ok(text) = std::fs::read_to_string(&path) else { return Salvaged::default() };
    let Ok(table) = text.parse::<toml::Table>() else { return Salvaged::default() };
    let service = table.get("service").and_then(|s| s.as_table());
    let field = |key: &str| service.and_then(|s| s.get(key)).and_then(|v| v.as_str()).map(String::from);
    let token_file = field("token_file").map(|t| {
        let t = PathBuf::from(t);
        // As in the configuration: relative to the file's directory.
        if t.is_relative() { path.parent().unwrap_or(Path::new("/")).join(t) } else { t }
    });
    Salvaged { listen: field("listen"), token_file }
}

/// Why no running service gave its status (logged; the repository is read instead).
#[derive(Debug, thiserror::Error)]
enum NoAnswer {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("reading {}: {source}", .path.display())]
    Token { path: PathBuf, source: std::io::Error },
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
}

async fn ask_service(base: &str, token_file: Option<&Path>) -> std::result::Result<Value, NoAnswer> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut request = client.get(format!("{}/status", base.trim_end_matches('/')));
    if let Some(path) = token_file {
        let token = std::fs::read_to_string(path).map_err(|source| NoAnswer::Token { path: path.into(), source })?;
        request = request.bearer_auth(token.trim());
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        return Err(NoAnswer::Status(response.status()));
    }
    let mut status: Value = response.json().await?;
    let address = base.trim_start_matches("http://").trim_end_matches('/');
    status["source"] = Value::from(format!("dr serve at {address}"));
    Ok(status)
}

/// The part of `/status` the repository alone can give.
async fn repository_status(context: &Context, config: &dr::Config) -> Result<Value> {
    let repo = context.open_repository(config).await?;
    let repository = RepositoryStatus::read(&repo, config.objectives.rpo).await?;
    let now = Utc::now();
    Ok(serde_json::json!({
        "source": "repository (no dr serve answered)",
        "now": now,
        "ready": repository.unready_reasons(now).is_empty(),
        "rpo_age_seconds": repository.rpo_age_seconds(now),
        "status": {
            "repository": {
                "location": repository.location,
                "reachable": true,
                "snapshots": repository.snapshots,
                "latest_snapshot": repository.latest_snapshot,
                "latest_consistent_at": repository.latest_consistent_at,
                "rpo_objective_seconds": repository.rpo_objective_seconds,
                "locks": repository.locks,
            }
        }
    }))
}

/// A time as `2026-12-02 14:03:11 UTC (3 h ago)`, or `in 5 min` for one ahead.
fn when(value: &Value, now: DateTime<Utc>) -> Option<String> {
    let time: DateTime<Utc> = value.as_str()?.parse().ok()?;
    Some(format!("{} ({})", time.format("%Y-%m-%d %H:%M:%S UTC"), dr::units::relative(time, now)))
}

fn print_human(status: &Value, config_error: Option<&Error>, now: DateTime<Utc>) {
    let seconds = |v: &Value| v.as_f64().map(dr::units::seconds);
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(e) = config_error {
        rows.push(("configuration".into(), format!("BROKEN: {e}")));
    }
    rows.push(("source".into(), status["source"].as_str().unwrap_or("?").to_string()));
    let repository = &status["status"]["repository"];
    rows.push((
        "repository".into(),
        format!(
            "{} ({}{})",
            repository["location"].as_str().unwrap_or("?"),
            dr::units::plural(repository["snapshots"].as_u64().unwrap_or(0) as usize, "snapshot"),
            if repository["reachable"] == false { ", UNREACHABLE" } else { "" }
        ),
    ));
    if let Some(latest) = when(&repository["latest_consistent_at"], now) {
        rows.push(("latest data".into(), latest));
    }
    let age = seconds(&status["rpo_age_seconds"]).unwrap_or_else(|| "no snapshot".into());
    let objective =
        seconds(&repository["rpo_objective_seconds"]).map_or(String::new(), |o| format!(" (objective {o})"));
    rows.push(("RPO age".into(), format!("{age}{objective}")));
    rows.push(("ready".into(), if status["ready"] == true { "yes" } else { "NO" }.into()));
    for reason in status["unready_reasons"].as_array().into_iter().flatten() {
        rows.push((String::new(), format!("- {}", reason.as_str().unwrap_or_default())));
    }
    for lock in repository["locks"].as_array().into_iter().flatten() {
        rows.push((
            "lock".into(),
            format!(
                "{} {} since {} (expires {})",
                lock["kind"].as_str().unwrap_or("?"),
                lock["holder"].as_str().unwrap_or("?"),
                when(&lock["since"], now).unwrap_or_else(|| "?".into()),
                when(&lock["expires_at"], now).unwrap_or_else(|| "?".into()),
            ),
        ));
    }
    if let Some(drill) = status["status"]["last_drill"].as_object() {
        rows.push((
            "last drill".into(),
            format!(
                "{} {} (RTO {})",
                when(&drill["finished_at"], now).unwrap_or_else(|| "?".into()),
                if drill["succeeded"] == true { "succeeded" } else { "FAILED" },
                seconds(&drill["rto_seconds"]).unwrap_or_default()
            ),
        ));
    }
    let width = rows.iter().map(|(label, _)| label.len() + 1).max().unwrap_or(0).max(12);
    for (label, value) in &rows {
        let label = if label.is_empty() { String::new() } else { format!("{label}:") };
        outln!("{label:<width$} {value}", width = width);
    }
    if let Some(jobs) = status["status"]["jobs"].as_object()
        && !jobs.is_empty()
    {
        outln!();
        let table: Vec<[String; 4]> = jobs
            .iter()
            .map(|(name, job)| {
                let last = match job["last_outcome"].as_str() {
                    Some(outcome) => {
                        let at = job["last_finished"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
                        at.map_or(outcome.to_string(), |t| format!("{outcome} {}", dr::units::relative(t, now)))
                    }
                    None if job["running_since"].is_string() => "running".to_string(),
                    None => "never run".to_string(),
                };
                let next = job["next_run"]
                    .as_str()
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                    .map_or("-".to_string(), |t| dr::units::relative(t, now));
                [name.clone(), job["kind"].as_str().unwrap_or("?").to_string(), last, next]
            })
            .collect();
        print_table(&["JOB", "KIND", "LAST RUN", "NEXT RUN"], &table);
    }
}

/// Left-aligned columns as wide as their widest cell.
fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    outln!("{}", line(header.to_vec()));
    for row in rows {
        outln!("{}", line(row.iter().map(String::as_str).collect()));
    }
}
