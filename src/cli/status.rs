//! `dr status [--json]`: the service's `/status` at a glance, asked of the running `dr serve` at
//! `[service] listen` (with the token of `token_file`); without a running service, what the repository alone
//! tells: the newest snapshot and its age against the RPO objective.

use std::time::Duration;

use chrono::Utc;
use dr::Result;
use dr::service::RepositoryStatus;
use serde_json::Value;

use super::Context;
use super::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let config = context.load_config()?.config;
    let listen = dr::service::listen_address(&config);
    let status = match ask_service(&listen, config.service.token_file.as_deref()).await {
        Ok(status) => status,
        Err(e) => {
            tracing::info!("no service answers at {listen} ({e}): reading the repository instead");
            repository_status(context, &config).await?
        }
    };
    if args.json {
        return print_json(&status);
    }
    print_human(&status);
    Ok(())
}

async fn ask_service(listen: &str, token_file: Option<&std::path::Path>) -> std::result::Result<Value, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    let mut request = client.get(format!("{}/status", dr::service::local_base_url(listen)));
    if let Some(path) = token_file {
        let token = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        request = request.bearer_auth(token.trim());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut status: Value = response.json().await.map_err(|e| e.to_string())?;
    status["source"] = Value::from(format!("dr serve at {listen}"));
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

fn print_human(status: &Value) {
    let seconds = |v: &Value| v.as_f64().map(dr::units::seconds);
    println!("source:      {}", status["source"].as_str().unwrap_or("?"));
    let repository = &status["status"]["repository"];
    println!(
        "repository:  {} ({} snapshots{})",
        repository["location"].as_str().unwrap_or("?"),
        repository["snapshots"],
        if repository["reachable"] == false { ", UNREACHABLE" } else { "" }
    );
    let age = seconds(&status["rpo_age_seconds"]).unwrap_or_else(|| "no snapshot".into());
    let objective =
        seconds(&repository["rpo_objective_seconds"]).map_or(String::new(), |o| format!(" (objective {o})"));
    println!("RPO age:     {age}{objective}");
    println!("ready:       {}", if status["ready"] == true { "yes" } else { "NO" });
    for reason in status["unready_reasons"].as_array().into_iter().flatten() {
        println!("  - {}", reason.as_str().unwrap_or_default());
    }
    for lock in repository["locks"].as_array().into_iter().flatten() {
        println!(
            "lock:        {} {} since {} (expires {})",
            lock["kind"].as_str().unwrap_or("?"),
            lock["holder"].as_str().unwrap_or("?"),
            lock["since"].as_str().unwrap_or("?"),
            lock["expires_at"].as_str().unwrap_or("?")
        );
    }
    if let Some(drill) = status["status"]["last_drill"].as_object() {
        println!(
            "last drill:  {} {} (RTO {})",
            drill["finished_at"].as_str().unwrap_or("?"),
            if drill["succeeded"] == true { "succeeded" } else { "FAILED" },
            seconds(&drill["rto_seconds"]).unwrap_or_default()
        );
    }
    if let Some(jobs) = status["status"]["jobs"].as_object() {
        for (name, job) in jobs {
            println!(
                "job {name:<16} {:<8} last: {} {}  next: {}",
                job["kind"].as_str().unwrap_or("?"),
                job["last_outcome"].as_str().unwrap_or("never run"),
                job["last_finished"].as_str().unwrap_or(""),
                job["next_run"].as_str().unwrap_or("-")
            );
        }
    }
}
