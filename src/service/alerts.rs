//! Webhook alerts: one message when an incident starts (a job fails, a drill fails, the RPO objective is
//! breached) and one when it clears, never one per failed run or per minute. Plus the weekly report's
//! Markdown, posted where `reports = true`.
//!
//! Each message is a JSON POST: `text` (what Slack, Mattermost, Rocket.Chat and Teams' incoming webhooks
//! display) and fields for machines (`event`, `status` firing/resolved, `key`, `title`, `detail`, `host`,
//! `at`). Delivery is retried with backoff; a webhook that stays down is logged, and does not hold up jobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::config::{AlertConfig, Config};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Four attempts, waiting about 0.5 s, 1 s and 2 s between them (the one rule of `crate::retry`).
const DELIVERY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(4),
    max_elapsed: Duration::from_secs(60),
};

#[derive(Debug, Clone)]
struct Sink {
    name: String,
    url: String,
    reports: bool,
}

/// The webhooks of the current configuration.
#[derive(Debug, Clone, Default)]
pub struct Sinks(Vec<Sink>);

impl Sinks {
    pub fn from_config(config: &Config) -> Result<Sinks> {
        config.alerts.iter().map(sink).collect::<Result<Vec<_>>>().map(Sinks)
    }
}

/// Checks an `[[alert]]` as written: exactly one of `url` and `url_file`, and an inline `url` that is an
/// http(s) URL. The file behind `url_file` is read, and its URL checked, when `dr serve` builds its sinks.
pub fn validate(alert: &AlertConfig) -> Result<()> {
    match (&alert.url, &alert.url_file) {
        (Some(url), None) => check_url(alert, url),
        (None, Some(_)) => Ok(()),
        _ => Err(Error::ConfigInvalid(format!("[[alert]] {:?}: set exactly one of url and url_file", alert.name))),
    }
}

fn check_url(alert: &AlertConfig, url: &str) -> Result<()> {
    let context = format!("[[alert]] {:?}", alert.name);
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::ConfigInvalid(format!("{context}: bad URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::ConfigInvalid(format!("{context}: the URL must be http:// or https://")));
    }
    Ok(())
}

fn sink(alert: &AlertConfig) -> Result<Sink> {
    let context = format!("[[alert]] {:?}", alert.name);
    let url = match (&alert.url, &alert.url_file) {
        (Some(url), None) => url.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("{context}: reading url_file {}", path.display()), e))?
            .trim()
            .to_string(),
        _ => return Err(Error::ConfigInvalid(format!("{context}: set exactly one of url and url_file"))),
    };
    check_url(alert, &url)?;
    Ok(Sink { name: alert.name.clone(), url, reports: alert.reports })
}

/// Open incidents, by key (`job:<name>`, `drill`, `rpo`), with when they started. Kept across reloads.
#[derive(Debug, Default)]
pub struct Incidents(Mutex<HashMap<String, DateTime<Utc>>>);

impl Incidents {
    /// Records the state of `key`; returns whether it changed (so a message is due): `Some(true)` when an
    /// incident opened, `Some(false)` when one cleared.
    pub fn transition(&self, key: &str, failing: bool) -> Option<bool> {
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (open.contains_key(key), failing) {
            (false, true) => {
                open.insert(key.to_string(), Utc::now());
                Some(true)
            }
            (true, false) => {
                open.remove(key);
                Some(false)
            }
            _ => None,
        }
    }

    pub fn open(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }
}

/// Sends an incident's opening (`firing`) or its clearing to every webhook, in the background.
pub fn incident(sinks: &Sinks, key: &str, firing: bool, title: &str, detail: &str) {
    let status = if firing { "firing" } else { "resolved" };
    let text = if firing {
        format!(":red_circle: {title}\n{detail}")
    } else {
        format!(":white_check_mark: resolved: {title}")
    };
    let payload = json!({
        "text": text,
        "event": "incident",
        "status": status,
        "key": key,
        "title": title,
        "detail": detail,
        "host": crate::host::hostname(),
        "at": Utc::now(),
    });
    for sink in &sinks.0 {
        tokio::spawn(deliver(sink.clone(), payload.clone()));
    }
}

/// Posts a report's Markdown to the webhooks that take reports.
pub fn report(sinks: &Sinks, headline: &str, markdown: &str) {
    let payload = json!({
        "text": markdown,
        "event": "report",
        "title": headline,
        "host": crate::host::hostname(),
        "at": Utc::now(),
    });
    for sink in sinks.0.iter().filter(|s| s.reports) {
        tokio::spawn(deliver(sink.clone(), payload.clone()));
    }
}

async fn deliver(sink: Sink, payload: serde_json::Value) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(15)).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(alert = %sink.name, "cannot build an HTTP client: {e}");
            return;
        }
    };
    for attempt in 1..=DELIVERY.max_attempts {
        let outcome = client.post(&sink.url).json(&payload).send().await;
        let problem = match outcome {
            Ok(response) if response.status().is_success() => return,
            // A 4xx other than throttling will not get better by retrying.
            Ok(response) if response.status().is_client_error() && response.status().as_u16() != 429 => {
                tracing::error!(alert = %sink.name, status = %response.status(), "the webhook refused the alert");
                return;
            }
            Ok(response) => format!("HTTP {}", response.status()),
            // The URL may hold a token: log the error without it.
            Err(e) => e.without_url().to_string(),
        };
        if attempt == DELIVERY.max_attempts {
            tracing::error!(alert = %sink.name, attempts = attempt, "alert not delivered: {problem}");
            return;
        }
        tracing::warn!(alert = %sink.name, attempt, "alert delivery failed, retrying: {problem}");
        tokio::time::sleep(DELIVERY.backoff(attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_opens_once_and_clears_once() {
        let incidents = Incidents::default();
        assert_eq!(incidents.transition("job:backup", true), Some(true));
        assert_eq!(incidents.transition("job:backup", true), None, "still failing: no new message");
        assert_eq!(incidents.transition("job:backup", false), Some(false));
        assert_eq!(incidents.transition("job:backup", false), None);
        assert!(incidents.open().is_empty());
    }
}
