//! `dr serve` as a process: scheduled backups produce snapshots; the endpoints answer with the right figures
//! (the Prometheus text parsed); `/readyz` turns unhealthy when the RPO objective is breached; a token guards
//! `/metrics` and `/status`; SIGTERM during a backup exits 0 leaving no partial snapshot; SIGHUP with a broken
//! configuration keeps the running schedule; a run missed while the service was down is caught up once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{DATABASE, Site};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Service {
    child: Child,
    base: String,
}

impl Service {
    fn start(site: &Site) -> Service {
        let mut command = site.command(&["serve"]);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = command.spawn().unwrap();
        let base = format!("http://{}", listen_of(&site.config_path));
        let service = Service { child, base };
        service.wait_for(|| reqwest::blocking_get(&format!("{}/healthz", service.base)).is_some_and(|r| r.0 == 200));
        service
    }

    fn get(&self, path: &str) -> (u16, String, BTreeMap<String, String>) {
        reqwest::blocking_get(&format!("{}{path}", self.base)).expect("the service answers")
    }

    fn get_with_token(&self, path: &str, token: &str) -> (u16, String) {
        let (code, body, _) = reqwest::blocking_get_auth(&format!("{}{path}", self.base), token).unwrap();
        (code, body)
    }

    #[track_caller]
    fn wait_for(&self, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Stops with SIGTERM; returns the exit code and stderr.
    fn stop(mut self) -> (i32, String) {
        self.signal(Signal::SIGTERM);
        let output = std::mem::replace(&mut self.child, std::process::Command::new("true").spawn().unwrap());
        let output = output.wait_with_output().unwrap();
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP client on reqwest's async one (the tests are synchronous around a child process).
mod reqwest {
    use std::collections::BTreeMap;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// On a thread of its own, since the tests themselves run inside a tokio runtime.
    fn fetch(url: &str, token: Option<&str>) -> Option<(u16, String, BTreeMap<String, String>)> {
        let (url, token) = (url.to_string(), token.map(str::to_string));
        std::thread::spawn(move || fetch_on_this_thread(&url, token.as_deref())).join().unwrap()
    }

    fn fetch_on_this_thread(url: &str, token: Option<&str>) -> Option<(u16, String, BTreeMap<String, String>)> {
        runtime().block_on(async {
            let client = ::reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().ok()?;
            let mut request = client.get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.ok()?;
            let code = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            Some((code, response.text().await.ok()?, headers))
        })
    }

    pub fn blocking_get(url: &str) -> Option<(u16, String, BTreeMap<String, String>)> {
        fetch(url, None)
    }

    pub fn blocking_get_auth(url: &str, token: &str) -> Option<(u16, String, BTreeMap<String, String>)> {
        fetch(url, Some(token))
    }
}

fn listen_of(config: &Path) -> String {
    let text = fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("listen = ")).expect("a listen line");
    line.trim_start_matches("listen = ").trim_matches('"').to_string()
}

/// `[service]` for a test: a free port, state under the site's directory, plus `extra` lines.
fn service_toml(site: &Site, extra: &str) -> String {
    format!(
        "[service]\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n{extra}\n",
        common::free_port(),
        site.path("state").display()
    )
}

/// Parses Prometheus text into `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number in {l:?}")))
        })
        .collect()
}

fn snapshot_count(site: &Site) -> usize {
    fs::read_dir(site.repo.join("snapshots")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_run_and_the_endpoints_report_them() {
    let site = Site::new().await;
    let service_section = service_toml(&site, "");
    site.write_config(&format!(
        "{service_section}[objectives]\nrpo = \"1h\"\n\n[[job]]\nname = \"frequent\"\nschedule = \"*/2 * * * * *\"\nrun = \"backup\"\n"
    ));
    let service = Service::start(&site);
    service.wait_for(|| snapshot_count(&site) >= 2);
    service
        .wait_for(|| samples(&service.get("/metrics").1).get("dr_repository_snapshots").copied().unwrap_or(0.0) >= 1.0);

    let (code, body, headers) = service.get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");

    let (code, text, headers) = service.get("/metrics");
    assert_eq!(code, 200);
    assert!(headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let metrics = samples(&text);
    let successes = metrics[r#"dr_job_runs_total{job="frequent",run="backup",outcome="success"}"#];
    assert!(successes >= 1.0, "{text}");
    assert_eq!(metrics[r#"dr_job_runs_total{job="frequent",run="backup",outcome="failure"}"#], 0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    let last_backup = metrics[r#"dr_backup_last_success_timestamp_seconds{source="app"}"#];
    assert!(now - last_backup < 60.0, "{text}");
    assert!(metrics[r#"dr_backup_last_size_bytes{source="uploads",size="plain"}"#] > 100_000.0, "{text}");
    assert!(metrics["dr_rpo_age_seconds"] < 60.0 && metrics["dr_rpo_objective_seconds"] == 3600.0, "{text}");
    assert_eq!(metrics["dr_repository_reachable"], 1.0);

    // Every metric the shipped alert rules and dashboard use is one the service exports.
    let declared: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for file in ["docs/monitoring/dr-alerts.yml", "docs/monitoring/grafana-dashboard.json"] {
        let shipped = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        let used: std::collections::BTreeSet<&str> = shipped
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("dr_") && w.len() > 3)
            .collect();
        assert!(used.len() >= 5, "{file}: {used:?}");
        for metric in used {
            assert!(declared.contains(&metric), "{file} uses {metric}, which /metrics does not export");
        }
    }

    let (code, body, _) = service.get("/readyz");
    assert_eq!(code, 200, "{body}");
    let (code, body, _) = service.get("/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["status"]["jobs"]["frequent"]["kind"], "backup");
    assert!(status["status"]["last_backup"]["snapshot"].as_str().unwrap().len() == 23, "{status:#}");

    // `dr status` asks the running service.
    let cli = site.dr(&["status", "--json"]).ok().json();
    assert_eq!(cli["source"], format!("dr serve at {}", service.base.trim_start_matches("http://")));
    assert_eq!(cli["status"]["jobs"]["frequent"]["kind"], "backup");

    let (code, stderr) = service.stop();
    assert_eq!(code, 0, "{stderr}");
    // Not a TTY: JSON lines, each job event with the job's name and outcome.
    let finished = stderr.lines().find(|l| l.contains("job finished")).unwrap_or_else(|| panic!("{stderr}"));
    let event: serde_json::Value = serde_json::from_str(finished).unwrap();
    assert_eq!(
        (event["fields"]["job"].as_str(), event["fields"]["outcome"].as_str()),
        (Some("frequent"), Some("success"))
    );
    // The engine's own lines inside a job carry the job's name and run id too.
    let committed = stderr.lines().find(|l| l.contains("backup committed")).unwrap_or_else(|| panic!("{stderr}"));
    let event: serde_json::Value = serde_json::from_str(committed).unwrap();
    assert_eq!(event["span"]["job"], "frequent", "{event}");
    assert_eq!(event["span"]["run_id"].as_str().map(str::len), Some(23), "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_unhealthy_when_the_rpo_objective_is_breached_and_status_says_why() {
    let site = Site::new().await;
    site.backup();
    std::thread::sleep(Duration::from_millis(2100));
    let service_section = service_toml(&site, "");
    site.write_config(&format!("{service_section}[objectives]\nrpo = \"2s\"\n"));
    let service = Service::start(&site);
    service.wait_for(|| service.get("/readyz").0 == 503);
    let (_, body, _) = service.get("/readyz");
    let readyz: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(readyz["reasons"][0].as_str().unwrap().starts_with("RPO objective breached"), "{readyz}");
    let metrics = samples(&service.get("/metrics").1);
    assert!(metrics["dr_rpo_age_seconds"] > 2.0);
    let (code, stderr) = service.stop();
    assert_eq!(code, 0, "{stderr}");

    // Without a service, `dr status` reads the repository and says the same, and who holds a lock.
    let repo =
        dr::Repository::open(std::sync::Arc::from(dr::store::open_local(&site.repo.display().to_string()).unwrap()))
            .await
            .unwrap();
    let options = dr::repo::lock::LockOptions::new("prune");
    let held = repo.lock(dr::repo::lock::LockKind::Exclusive, &options).await.unwrap();
    let run = site.dr(&["status"]).ok();
    assert!(run.stdout.contains("lock:        exclusive prune by "), "{}", run.stdout);
    held.release().await.unwrap();
    assert!(
        run.stdout.contains("repository (no dr serve answered)") && run.stdout.contains("ready:       NO"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_guards_metrics_and_status_but_not_health() {
    let site = Site::new().await;
    let token_file = site.path("token");
    fs::write(&token_file, "3f9a8c7e1d2b4a6f\n").unwrap();
    let service_section = service_toml(&site, &format!("token_file = \"{}\"", token_file.display()));
    site.write_config(&service_section);
    let service = Service::start(&site);
    assert_eq!(service.get("/metrics").0, 401);
    assert_eq!(service.get("/status").0, 401);
    assert_eq!(service.get_with_token("/metrics", "3f9a8c7e1d2b4a6e").0, 401);
    assert_eq!(service.get_with_token("/metrics", "3f9a8c7e1d2b4a6f").0, 200);
    assert_eq!(service.get_with_token("/status", "3f9a8c7e1d2b4a6f").0, 200);
    assert_eq!(service.get("/healthz").0, 200);
    assert!(site.dr(&["status", "--json"]).ok().json()["source"].as_str().unwrap().starts_with("dr serve"));
    service.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_ages_and_still_works_when_the_configuration_on_disk_is_broken() {
    let site = Site::new().await;
    let token_file = site.path("token");
    fs::write(&token_file, "5e1f0c\n").unwrap();
    let service_section = service_toml(&site, &format!("token_file = \"{}\"", token_file.display()));
    site.write_config(&format!(
        "{service_section}[[job]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nrun = \"backup\"\n"
    ));
    site.backup();
    let service = Service::start(&site);
    let run = site.dr(&["status"]).ok();
    assert!(run.stdout.contains("source:      dr serve at 127.0.0.1:"), "{}", run.stdout);
    let latest = run.stdout.lines().find(|l| l.starts_with("latest data:")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(latest.ends_with(" s ago)"), "{latest}");
    let job = run.stdout.lines().find(|l| l.starts_with("nightly")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(job.contains("backup") && job.contains("never run") && job.contains("  in "), "{job}");
    assert!(run.stdout.contains("JOB") && run.stdout.contains("NEXT RUN"), "{}", run.stdout);

    // An edit leaves dr.toml invalid (still TOML): the service keeps running with what it loaded, and
    // `dr status` still finds it, with the listen address and token it can read from the file.
    let config = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, format!("{config}\n[compression]\nlevel = 99\n")).unwrap();
    let run = site.dr(&["status"]).ok();
    assert!(run.stdout.contains("configuration: BROKEN: "), "{}", run.stdout);
    assert!(run.stdout.contains("dr serve at 127.0.0.1:"), "{}", run.stdout);
    assert!(run.stderr.contains("the configuration does not load"), "{}", run.stderr);
    let json = site.dr(&["status", "--json"]).ok().json();
    assert!(json["configuration_error"].as_str().unwrap().contains("level = 99"), "{json}");

    // Not TOML at all: --url (and --token-file) still reach it.
    fs::write(&site.config_path, "this is [not toml").unwrap();
    let url = service.base.clone();
    let run = site.dr(&["status", "--url", &url, "--token-file", token_file.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("configuration: BROKEN: "), "{}", run.stdout);
    service.stop();
    // With neither a configuration nor a service, the configuration's error is the error.
    let error = site.dr(&["status", "--url", &url]).user_error(1);
    assert!(error.contains("configuration file"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_backup_exits_0_and_leaves_no_partial_snapshot() {
    let site = Site::new().await;
    common::add_random_table(&site.db, DATABASE, "bulk", 160).await;
    let service_section = service_toml(&site, "grace = \"200ms\"");
    site.write_config(&format!(
        "{service_section}[[job]]\nname = \"backup\"\nschedule = \"* * * * * *\"\nrun = \"backup\"\n"
    ));
    let service = Service::start(&site);
    // Wait until the backup has written objects, then stop it in the middle.
    service.wait_for(|| !common::files_below(&site.repo.join("objects")).is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = service.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("cancelling the running jobs"), "the grace period ran out: {stderr}");
    assert_eq!(snapshot_count(&site), 0, "no snapshot was committed");
    let leftovers = common::files_below(&site.repo.join("objects"));
    assert!(leftovers.is_empty(), "the cancelled backup deleted its objects, partial ones too: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_a_broken_configuration_keeps_the_old_schedule() {
    let site = Site::new().await;
    let service_section = service_toml(&site, "");
    let job = |name: &str| format!("[[job]]\nname = \"{name}\"\nschedule = \"0 0 3 * * *\"\nrun = \"backup\"\n");
    site.write_config(&format!("{service_section}{}", job("nightly")));
    let service = Service::start(&site);
    let jobs = || -> Vec<String> {
        let status: serde_json::Value = serde_json::from_str(&service.get("/status").1).unwrap();
        status["status"]["jobs"].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(jobs(), ["nightly"]);

    site.write_config(&format!(
        "{service_section}[[job]]\nname = \"broken\"\nschedule = \"every day\"\nrun = \"backup\"\n"
    ));
    service.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(jobs(), ["nightly"], "the broken configuration was refused");

    site.write_config(&format!("{service_section}{}{}", job("nightly"), job("weekly")));
    service.signal(Signal::SIGHUP);
    service.wait_for(|| jobs() == ["nightly", "weekly"]);
    let (code, stderr) = service.stop();
    assert_eq!(code, 0);
    assert!(stderr.contains("reload refused") && stderr.contains("\\\"broken\\\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_run_is_caught_up_once_at_start() {
    let site = Site::new().await;
    let service_section = service_toml(&site, "");
    site.write_config(&format!(
        "{service_section}[[job]]\nname = \"hourly\"\nschedule = \"0 0 * * * *\"\nrun = \"backup\"\n"
    ));
    fs::create_dir_all(site.path("state")).unwrap();
    fs::write(site.path("state/jobs.json"), r#"{"last_started": {"hourly": "2026-01-01T00:00:00Z"}}"#).unwrap();
    let service = Service::start(&site);
    service.wait_for(|| snapshot_count(&site) == 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(snapshot_count(&site), 1, "once, not once per missed hour");
    service.stop();
}

#[test]
fn an_invalid_schedule_is_refused_at_start_naming_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dr.toml");
    fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}\"\n[service]\nlisten = \"127.0.0.1:{}\"\n[[job]]\nname = \"weekly-drill\"\nschedule = \"0 4 * * Sun\"\nrun = \"drill\"\n",
            dir.path().join("repo").display(),
            common::free_port()
        ),
    )
    .unwrap();
    let error = common::run(&mut common::config_command(&config, &["serve"])).user_error(1);
    assert!(error.contains("job \"weekly-drill\"") && error.contains("not a valid cron expression"), "{error}");
}

/// A webhook receiver: every JSON body POSTed to it, in order.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_alerts_once_and_resolves_once() {
    let site = Site::new().await;
    let (url, received) = webhook_receiver().await;
    let service_section = service_toml(&site, "");
    let alert = format!("[[alert]]\nname = \"ops\"\nurl = \"{url}\"\n");
    let job = "[[job]]\nname = \"backup\"\nschedule = \"* * * * * *\"\nrun = \"backup\"\n";
    // The database is unreachable: every run fails.
    let good = fs::read_to_string(&site.config_path).unwrap();
    let broken = good.replace(&format!("port={}", site.db.port()), "port=1");
    assert_ne!(broken, good);
    fs::write(&site.config_path, format!("{broken}\n{service_section}{alert}{job}")).unwrap();
    let service = Service::start(&site);
    let failures =
        || samples(&service.get("/metrics").1)[r#"dr_job_runs_total{job="backup",run="backup",outcome="failure"}"#];
    service.wait_for(|| failures() >= 3.0);
    service.wait_for(|| !received.lock().unwrap().is_empty());
    {
        let messages = received.lock().unwrap();
        assert_eq!(messages.len(), 1, "one alert for the incident, not one per failed run: {messages:#?}");
        assert_eq!(messages[0]["status"], "firing");
        assert_eq!(messages[0]["key"], "job:backup");
        assert!(messages[0]["text"].as_str().unwrap().contains("dr job backup (backup) failed"), "{:#?}", messages[0]);
        assert!(messages[0]["detail"].as_str().unwrap().contains("isntgram"), "{:#?}", messages[0]);
    }

    // Fixed: the next run succeeds and the incident clears, once.
    fs::write(&site.config_path, format!("{good}\n{service_section}{alert}{job}")).unwrap();
    service.signal(Signal::SIGHUP);
    service.wait_for(|| received.lock().unwrap().len() >= 2);
    service.wait_for(|| snapshot_count(&site) >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let messages = received.lock().unwrap().clone();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert_eq!((messages[1]["status"].as_str(), messages[1]["key"].as_str()), (Some("resolved"), Some("job:backup")));
    service.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_job_writes_dated_reports_and_posts_the_summary() {
    let site = Site::new().await;
    site.backup();
    let (url, received) = webhook_receiver().await;
    let service_section = service_toml(&site, "");
    let reports = site.path("reports");
    site.write_config(&format!(
        "{service_section}[report]\noutput_dir = \"{}\"\n[[alert]]\nname = \"ops\"\nurl = \"{url}\"\n\
         [[job]]\nname = \"weekly-report\"\nschedule = \"*/2 * * * * *\"\nrun = \"report\"\n",
        reports.display()
    ));
    let service = Service::start(&site);
    service.wait_for(|| received.lock().unwrap().iter().any(|m| m["event"] == "report"));
    service.stop();
    let stem = format!("report-{}", chrono::Utc::now().format("%Y-%m-%d"));
    for extension in ["md", "html", "json"] {
        let path = reports.join(format!("{stem}.{extension}"));
        assert!(path.is_file(), "{} written", path.display());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(reports.join(format!("{stem}.json"))).unwrap()).unwrap();
    assert_eq!(json["snapshots"].as_array().unwrap().len(), 1);
    let messages = received.lock().unwrap();
    let report = messages.iter().find(|m| m["event"] == "report").unwrap();
    let markdown = fs::read_to_string(reports.join(format!("{stem}.md"))).unwrap();
    assert_eq!(report["text"].as_str().unwrap(), markdown, "the Markdown report is what was posted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_job_applies_the_retention_policy_and_counts_what_it_deleted() {
    let site = Site::new().await;
    site.backup();
    site.backup();
    site.backup();
    let service_section = service_toml(&site, "");
    site.write_config(&format!(
        "{service_section}[retention]\nkeep_last = 1\n[[job]]\nname = \"prune\"\nschedule = \"*/2 * * * * *\"\nrun = \"prune\"\n"
    ));
    let service = Service::start(&site);
    service.wait_for(|| samples(&service.get("/metrics").1)["dr_prune_deleted_snapshots_total"] >= 2.0);
    assert_eq!(snapshot_count(&site), 1);
    let metrics = samples(&service.get("/metrics").1);
    assert!(metrics["dr_prune_deleted_objects_total"] >= 12.0, "two snapshots of 6 objects each");
    let (code, stderr) = service.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// Waits until the service's `/status` says the stream of `app` is stored past `time`.
fn wait_for_stream_past(service: &Service, time: chrono::DateTime<chrono::Utc>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body, _) = service.get("/status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let covered = status["status"]["streams"]["app"]["covered_until"].as_str();
        let past = |t: &str| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap() > time + chrono::TimeDelta::seconds(2);
        if covered.is_some_and(past) {
            return;
        }
        assert!(Instant::now() < deadline, "the stream never passed {time}: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A continuous source: the service captures its changes from the start, takes the first base backup by itself,
/// reports the stream's RPO and the slot's WAL, and a point-in-time restore gets the changes.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_captures_a_continuous_source_and_takes_its_base_at_once() {
    let site = crate::pitr::logical_site("").await;
    let text = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, format!("{text}\n{}", service_toml(&site, ""))).unwrap();
    let service = Service::start(&site);
    service.wait_for(|| snapshot_count(&site) == 1);
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'changed after the base' WHERE id <= 3").await;
    let changed: chrono::DateTime<chrono::Utc> = chrono::Utc::now();
    wait_for_stream_past(&service, changed);
    let metrics = samples(&service.get("/metrics").1);
    assert!(metrics["dr_stream_rpo_age_seconds{source=\"app\"}"] < 10.0, "{metrics:?}");
    assert_eq!(metrics["dr_stream_up{source=\"app\"}"], 1.0);
    assert!(metrics.contains_key("dr_stream_slot_retained_bytes{source=\"app\"}"));

    let into = format!("app={}", site.db.url("pitr_service"));
    site.dr(&["restore", "--to", "latest", "--only", "app", "--into", &into]).ok();
    let bios = common::query_strings(&site.db, "pitr_service", "SELECT bio FROM users WHERE id <= 3 ORDER BY id").await;
    assert_eq!(bios, vec!["changed after the base"; 3]);

    // Killed with -9 while it captures: the next service resumes the same stream, with nothing lost or doubled.
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'around the kill' WHERE id <= 6").await;
    service.signal(Signal::SIGKILL);
    drop(service);
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'while no service ran' WHERE id = 6").await;
    let service = Service::start(&site);
    let changed = chrono::Utc::now();
    wait_for_stream_past(&service, changed);
    assert_eq!(snapshot_count(&site), 1, "the same stream resumed: no new base was needed");
    let into = format!("app={}", site.db.url("pitr_after_kill"));
    site.dr(&["restore", "--to", "latest", "--only", "app", "--into", &into]).ok();
    let bios =
        common::query_strings(&site.db, "pitr_after_kill", "SELECT bio FROM users WHERE id <= 6 ORDER BY id").await;
    assert_eq!(bios, [vec!["around the kill"; 5], vec!["while no service ran"]].concat());

    let (code, stderr) = service.stop();
    assert_eq!(code, 0, "{stderr}");
    site.dr(&["stream", "drop", "app"]).ok();
}
