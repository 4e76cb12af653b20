//! `dr recover`: a whole site destroyed and brought back by a runbook (database, files, a server process that
//! reads the database, checks), the dry run, confirmation, failure and resume, refusals, invalid runbooks, and
//! SIGINT during a step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{DATABASE, FilesSite, Run, Site, UPLOAD_EXCLUDES, database_exists, listing, run, sql};

/// The site's server: `/health` answers 200 only when the database answers a query.
const SERVER: &str = r#"import http.server, os, subprocess
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health" and subprocess.run(
            ["psql", "-tAc", "select count(*) from users", os.environ["DATABASE_URL"]],
            capture_output=True).returncode == 0
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"#;

/// The status code of `GET /health`, or None when nothing answers.
fn health(port: u16) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn wait_for_health(port: u16, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(port) != Some(status) {
        assert!(Instant::now() < deadline, "the server never answered {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the process whose pid a file holds, when dropped (the server a runbook started in the background).
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Whether a process is gone (a zombie waiting for a reaper counts as gone).
fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn write_runbook(path: &Path, text: &str) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn recover(config: &Path, runbook: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = common::config_command(config, &["recover", "--runbook"]);
    command.arg(runbook).args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    run(&mut command)
}

/// The path printed after `label` on stdout.
fn printed_path(run: &Run, label: &str) -> PathBuf {
    let line = run.stdout.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| {
        panic!("no {label:?} line:\n{}", run.stdout);
    });
    PathBuf::from(line.trim_start()[label.len()..].trim())
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_destroyed_site_comes_back_with_its_data_files_and_server() {
    let site = Site::new().await;
    let audit = site.path("log/audit.jsonl");
    site.write_config(&format!("[audit]\npath = \"{}\"\n", audit.display()));
    fs::write(site.config_dir().join("server.py"), SERVER).unwrap();
    let port = common::free_port();
    // trust authentication ignores the password; it is there to be masked everywhere.
    let target = site.db.conninfo(DATABASE).with("password", "hunter2").to_keyword_value();

    // The site runs, and is backed up.
    let mut server = Command::new("python3")
        .arg(site.config_dir().join("server.py"))
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &target)
        .spawn()
        .unwrap();
    wait_for_health(port, 200);
    let snapshot = site.backup();
    let fingerprint = common::fingerprint(&site.db, DATABASE).await;
    let config_files = listing(&site.config_dir(), &[]);
    let uploads = listing(&site.uploads_dir(), &UPLOAD_EXCLUDES);

    // Everything is lost: the server, the database, the directories.
    server.kill().unwrap();
    server.wait().unwrap();
    sql(&site.db, "postgres", &format!("DROP DATABASE {DATABASE} WITH (FORCE)")).await;
    fs::remove_dir_all(site.path("site")).unwrap();
    assert_eq!(health(port), None);

    let site_dir = site.path("site");
    let pid_file = site_dir.join("server.pid");
    let _server = KillOnDrop(pid_file.clone());
    let runbook = write_runbook(
        &site.path("runbooks/site.toml"),
        &format!(
            r#"name = "test site recovery"

[vars]
SITE_DIR = "{site_dir}"
API_TOKEN = "tok-s3cr3t"

[[step]]
name = "restore database"
restore = {{ source = "app", into = "${{TARGET_DATABASE_URL}}" }}

[[step]]
name = "restore configuration"
restore = {{ source = "config", into = "${{SITE_DIR}}/config" }}

[[step]]
name = "restore uploads"
restore = {{ source = "uploads", into = "${{SITE_DIR}}/uploads" }}

[[step]]
name = "start the site"
run = "python3 ${{SITE_DIR}}/config/server.py > ${{SITE_DIR}}/server.log 2>&1 & echo $! > ${{SITE_DIR}}/server.pid; echo started with ${{API_TOKEN}}"
env = {{ PORT = "{port}", DATABASE_URL = "${{TARGET_DATABASE_URL}}" }}
timeout = "30s"

[[step]]
name = "site answers"
http = {{ url = "http://127.0.0.1:{port}/health", expect_status = 200, within = "30s" }}

[[step]]
name = "data is there"
sql = {{ database = "${{TARGET_DATABASE_URL}}", query = "select count(*) from users", expect = "> 0" }}

[[step]]
name = "settle"
wait = "100ms"
"#,
            site_dir = site_dir.display()
        ),
    );
    let env = [("TARGET_DATABASE_URL", target.as_str())];
    let state_file = site.path("log/site.recover-state.json");

    // The dry run shows every step, resolved and masked, and changes nothing.
    let dry = recover(&site.config_path, &runbook, &["--dry-run"], &env).ok();
    for name in ["restore database", "restore configuration", "restore uploads", "start the site", "site answers"] {
        assert!(dry.stdout.contains(name), "{}", dry.stdout);
    }
    assert!(dry.stdout.contains(&format!("snapshot {snapshot}")), "{}", dry.stdout);
    assert!(dry.stdout.contains(&format!("{}/config", site_dir.display())), "{}", dry.stdout);
    assert!(dry.stdout.contains("echo started with ***"), "{}", dry.stdout);
    assert!(dry.stdout.contains(&format!("/{DATABASE}")), "the target database is named:\n{}", dry.stdout);
    for secret in ["hunter2", "tok-s3cr3t"] {
        assert!(!dry.all_output().contains(secret), "{secret} shown:\n{}", dry.all_output());
    }
    assert!(!database_exists(&site.db, DATABASE).await, "the dry run created the database");
    assert!(!site_dir.exists(), "the dry run created the site directory");
    assert!(!state_file.exists(), "the dry run saved a state");
    assert_eq!(health(port), None);

    // The shipped runbook validates and plans against this site (its steps are not run: no docker here).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/full-site.toml");
    let env_shipped = [("TARGET_DATABASE_URL", target.as_str()), ("SITE_DIR", site_dir.to_str().unwrap())];
    let plan = recover(&site.config_path, &shipped, &["--dry-run"], &env_shipped).ok();
    assert!(
        plan.stdout.contains("isntgram full-site recovery") && plan.stdout.contains("docker compose"),
        "{}",
        plan.stdout
    );
    assert!(!plan.all_output().contains("hunter2"), "{}", plan.all_output());
    assert!(!database_exists(&site.db, DATABASE).await && !site_dir.exists());

    // The recovery.
    let done = recover(&site.config_path, &runbook, &["--yes"], &env).ok();
    let output = done.all_output();
    for (i, name) in
        ["restore database", "start the site", "site answers", "data is there", "settle"].iter().enumerate()
    {
        assert!(output.contains(&format!("] {name} (")), "step {i} {name} not announced:\n{output}");
    }
    assert!(output.contains("| started with ***"), "the run step's output is shown, masked:\n{output}");
    assert_eq!(health(port), Some(200), "the restored server answers from the restored database");
    assert_eq!(common::fingerprint(&site.db, DATABASE).await, fingerprint);
    assert_eq!(listing(&site.config_dir(), &[]), config_files);
    assert_eq!(listing(&site.uploads_dir(), &UPLOAD_EXCLUDES), uploads);

    // The report: next to the state file, beside the audit log.
    let json_path = printed_path(&done, "report (JSON)");
    let markdown_path = printed_path(&done, "report ");
    assert_eq!(json_path.parent().unwrap(), site.path("log"));
    let report = read_json(&json_path);
    assert_eq!(report["snapshot"], snapshot.as_str());
    assert_eq!(report["succeeded"], true);
    assert_eq!(report["outcome"], "completed");
    assert!(report["data_age_seconds"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["total_seconds"].as_f64().unwrap() > 0.0, "{report}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 7);
    for step in steps {
        assert_eq!(step["outcome"], "succeeded", "{step}");
        assert_eq!(step["attempts"], 1, "{step}");
        assert!(step["duration_seconds"].as_f64().unwrap() > 0.0, "{step}");
    }
    assert!(steps[4]["output"][0].as_str().unwrap().contains("answered 200"), "{}", steps[4]);
    let markdown = fs::read_to_string(&markdown_path).unwrap();
    assert!(markdown.contains("Data age at recovery (RPO suffered)"), "{markdown}");
    assert!(markdown.contains("| 4 | start the site | run | ok | 1 |"), "{markdown}");
    assert!(state_file.exists());

    // The audit log: the three restores, and one entry for the run.
    let audit_text = fs::read_to_string(&audit).unwrap();
    let entries: Vec<serde_json::Value> = audit_text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.iter().filter(|e| e["action"] == "restore").count(), 3, "{audit_text}");
    let runs: Vec<&serde_json::Value> = entries.iter().filter(|e| e["action"] == "recover").collect();
    assert_eq!(runs.len(), 1, "{audit_text}");
    assert_eq!(runs[0]["snapshot"], snapshot.as_str());
    assert_eq!(runs[0]["outcome"], "success");
    assert!(runs[0]["detail"].as_str().unwrap().contains("test site recovery"), "{audit_text}");

    let everything = [
        output,
        fs::read_to_string(&json_path).unwrap(),
        markdown,
        fs::read_to_string(&state_file).unwrap(),
        audit_text,
    ];
    for secret in ["hunter2", "tok-s3cr3t"] {
        assert!(!everything.iter().any(|text| text.contains(secret)), "{secret} leaked");
    }
}

fn files_runbook(site: &FilesSite, out: &Path, steps: &str) -> PathBuf {
    write_runbook(
        &site.path("files.toml"),
        &format!(
            r#"name = "files recovery"
[vars]
OUT = "{out}"
FLAG = "{flag}"

[[step]]
name = "restore config"
restore = {{ source = "config", into = "${{OUT}}/config" }}

[[step]]
name = "restore uploads"
restore = {{ source = "uploads", into = "${{OUT}}/uploads" }}
{steps}"#,
            out = out.display(),
            flag = site.path("flag").display()
        ),
    )
}

#[test]
fn a_failed_step_stops_the_run_and_resume_finishes_it_without_restoring_again() {
    let site = FilesSite::new();
    site.init_and_backup();
    let out = site.path("restored");
    let runbook = files_runbook(
        &site,
        &out,
        r#"
[[step]]
name = "flag is set"
run = "echo checking the flag; test -f ${FLAG}"

[[step]]
name = "after"
run = "echo finished"
"#,
    );
    let state_file = site.path("files.recover-state.json");

    let failed = recover(&site.config_path, &runbook, &["--yes"], &[]);
    let stdout = failed.stdout.clone();
    let error = failed.user_error(1);
    assert!(error.contains("step \"flag is set\" failed: the command failed"), "{error}");
    assert!(stdout.contains("recovery failed at step \"flag is set\""), "{stdout}");
    let state = read_json(&state_file);
    let outcomes: Vec<&str> =
        state["steps"].as_array().unwrap().iter().map(|s| s["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "failed", "pending"]);
    assert_eq!(listing(&out.join("config"), &[]), listing(&site.path("site/config"), &[]));

    // The cause is fixed: resume runs the failed step and the rest, not the restores.
    fs::write(site.path("flag"), "").unwrap();
    let resumed = recover(&site.config_path, &runbook, &["--resume", "--yes"], &[]).ok();
    let output = resumed.all_output();
    assert!(!output.contains("restore config ("), "a completed restore ran again:\n{output}");
    assert!(output.contains("[3/4] flag is set") && output.contains("[4/4] after"), "{output}");
    assert!(output.contains("| finished"), "{output}");
    let report = read_json(&printed_path(&resumed, "report (JSON)"));
    assert_eq!(report["runs"], 2);
    assert_eq!(report["outcome"], "completed");
    let steps = report["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["outcome"] == "succeeded"), "{report}");
    assert!(steps[0]["duration_seconds"].as_f64().unwrap() > 0.0, "the first run's restore is in the report");
    assert_eq!(listing(&out.join("uploads"), &UPLOAD_EXCLUDES), listing(&site.path("site/uploads"), &UPLOAD_EXCLUDES));

    // A finished recovery has nothing to resume.
    let error = recover(&site.config_path, &runbook, &["--resume", "--yes"], &[]).user_error(2);
    assert!(error.contains("nothing to resume"), "{error}");

    // Running a completed restore step again into its (now non-empty) target is refused without --force...
    fs::write(out.join("config/added-after.txt"), "new").unwrap();
    let refused = recover(&site.config_path, &runbook, &["--resume", "--from-step", "restore config", "--yes"], &[]);
    let hint = refused.hint().unwrap_or_default();
    let error = refused.user_error(1);
    assert!(error.contains("step \"restore config\" failed: refusing to restore \"config\""), "{error}");
    assert!(error.contains("it is not empty"), "{error}");
    assert!(hint.contains("--force"), "{hint}");
    assert!(out.join("config/added-after.txt").exists(), "a refused restore touches nothing");
    // ... and replaces it with --force.
    recover(&site.config_path, &runbook, &["--resume", "--from-step", "restore config", "--yes", "--force"], &[]).ok();
    assert!(!out.join("config/added-after.txt").exists());
    assert_eq!(listing(&out.join("config"), &[]), listing(&site.path("site/config"), &[]));
}

#[test]
fn invalid_runbooks_and_unconfirmed_runs_are_refused_before_anything_runs() {
    let site = FilesSite::new();
    site.init_and_backup();
    let marker = site.path("marker");
    let first = format!("name = \"bad\"\n[[step]]\nname = \"touch\"\nrun = \"touch {}\"\n", marker.display());
    let cases = [
        ("[[step]]\nname = \"a\"\nrun = \"true\"\ntimeuot = \"1s\"\n", "line 9: unknown field `timeuot`"),
        ("[[step]]\nname = \"a\"\nshell = \"true\"\n", "line 8: unknown field `shell`"),
        (
            "[[step]]\nname = \"a\"\nrun = \"echo ${NOT_SET_ANYWHERE}\"\n",
            "step 2 \"a\" (line 6): undefined variable ${NOT_SET_ANYWHERE}",
        ),
        ("[[step]]\nname = \"touch\"\nwait = \"1s\"\n", "step 2 \"touch\" (line 6): duplicate step name \"touch\""),
        ("[[step]]\nname = \"a\"\nwait = \"1s\"\nrun = \"true\"\n", "(line 6): 2 step kinds (run, wait)"),
        (
            "[[step]]\nname = \"a\"\nsql = { database = \"dbname=x\", query = \"select 1\", expect = \">\" }\n",
            "sql: expect",
        ),
        ("[[step]\n", "line 6: "),
    ];
    for (i, (steps, expected)) in cases.iter().enumerate() {
        let runbook = write_runbook(&site.path(&format!("bad-{i}.toml")), &format!("{first}\n{steps}"));
        let run = recover(&site.config_path, &runbook, &["--yes"], &[]);
        let hint = run.hint().unwrap_or_default();
        let error = run.user_error(1);
        assert!(error.contains(&format!("runbook {} is invalid: ", runbook.display())), "{error}");
        assert!(error.contains(expected), "case {i}: expected {expected:?} in:\n{error}");
        assert!(hint.contains("nothing was run"), "{hint}");
        assert!(!marker.exists(), "case {i}: a step ran");
    }

    // A variable the environment sets is defined.
    let runbook = write_runbook(
        &site.path("env.toml"),
        &format!("{first}\n[[step]]\nname = \"a\"\nrun = \"echo ${{FROM_THE_ENV}}\"\n"),
    );
    let dry = recover(&site.config_path, &runbook, &["--dry-run"], &[("FROM_THE_ENV", "hello")]).ok();
    assert!(dry.stdout.contains("echo hello"), "{}", dry.stdout);

    // A source the snapshot does not have.
    let runbook = write_runbook(
        &site.path("source.toml"),
        &format!("{first}\n[[step]]\nname = \"a\"\nrestore = {{ source = \"nope\" }}\n"),
    );
    let error = recover(&site.config_path, &runbook, &["--yes"], &[]).user_error(1);
    assert!(error.contains("step \"a\": snapshot") && error.contains("has no source \"nope\""), "{error}");

    // No terminal, no --yes: refused.
    let runbook = write_runbook(&site.path("ok.toml"), &first);
    let run = recover(&site.config_path, &runbook, &[], &[]);
    let hint = run.hint().unwrap_or_default();
    let error = run.user_error(2);
    assert!(error.contains("refusing to run runbook \"bad\" unconfirmed"), "{error}");
    assert!(hint.contains("--yes"), "{hint}");
    assert!(!marker.exists(), "an unconfirmed run ran a step");
    recover(&site.config_path, &runbook, &["--yes"], &[]).ok();
    assert!(marker.exists());
}

#[test]
fn sigint_kills_the_running_step_saves_the_state_and_says_how_to_resume() {
    let site = FilesSite::new();
    site.init_and_backup();
    let pid_file = site.path("sleep.pid");
    let runbook = write_runbook(
        &site.path("long.toml"),
        &format!(
            "name = \"long\"\n[[step]]\nname = \"first\"\nwait = \"10ms\"\n\n[[step]]\nname = \"long step\"\n\
             run = \"sleep 30 & echo $! > {}; wait\"\n",
            pid_file.display()
        ),
    );
    let mut command = common::config_command(&site.config_path, &["recover", "--yes", "--runbook"]);
    let started = Instant::now();
    let child =
        command.arg(&runbook).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let sleep_pid = loop {
        if let Some(pid) = fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let (code, stderr) = common::interrupt(child);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "the step was not stopped");
    assert!(stderr.contains("error: stopped by SIGINT during step \"long step\""), "{stderr}");
    assert!(stderr.contains(&format!("dr recover --runbook {} --resume", runbook.display())), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_gone(sleep_pid) {
        assert!(Instant::now() < deadline, "the step's sleep survived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = read_json(&site.path("long.recover-state.json"));
    assert_eq!(state["steps"][0]["outcome"], "succeeded");
    assert_eq!(state["steps"][1]["outcome"], "interrupted");
}
