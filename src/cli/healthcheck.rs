//! `dr healthcheck [--ready] [--url URL]`: asks the running `dr serve` for `/healthz` (or `/readyz`) and exits 0
//! only on HTTP 200. It is the container image's `HEALTHCHECK`: the runtime image has no curl, and this reads
//! `[service] listen` from the same configuration the service uses, so the two cannot disagree on the port.

use std::time::Duration;

use dr::{Error, Result};

use super::Context;

/// Orchestrators run the check every few seconds; a service that takes longer than this to answer is not healthy.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ask /readyz (repository reachable, newest snapshot within the RPO objective) instead of /healthz.
    #[arg(long)]
    ready: bool,
    /// The service's base URL (default: from [service] listen, a wildcard address reached over loopback).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let base = match args.url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let config = context.load_config()?.config;
            dr::service::local_base_url(&dr::service::listen_address(&config))
        }
    };
    let url = format!("{base}/{}", if args.ready { "readyz" } else { "healthz" });
    let unhealthy = |reason: String| Error::ServiceUnhealthy { url: url.clone(), reason, source: None };
    let failed = |reason: String, e: reqwest::Error| Error::ServiceUnhealthy {
        url: url.clone(),
        reason,
        source: Some(Box::new(e)),
    };
    let client =
        reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| failed(format!("HTTP client: {e}"), e))?;
    let response = client.get(&url).send().await.map_err(|e| failed(format!("no answer ({})", root_cause(&e)), e))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let detail = reasons(&body);
        return Err(unhealthy(format!("HTTP {status}{}{detail}", if detail.is_empty() { "" } else { ": " })));
    }
    if !context.quiet {
        outln!("{url}: {}", body.lines().next().unwrap_or("ok").trim());
    }
    Ok(())
}

/// reqwest's Display stops at "error sending request"; the cause (connection refused, timed out) is below it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `/readyz` answers `{"ready": false, "reasons": [...]}`; anything else is quoted by its first line.
fn reasons(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => match value["reasons"].as_array() {
            Some(reasons) => reasons.iter().filter_map(|r| r.as_str()).collect::<Vec<_>>().join("; "),
            None => body.lines().next().unwrap_or("").trim().to_string(),
        },
        Err(_) => body.lines().next().unwrap_or("").trim().to_string(),
    }
}
