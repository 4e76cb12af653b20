//! The compose stacks' parts, run for real (no Docker engine runs on the test machines).
//!
//! The dev stack (compose/dev.yml): its Garage configuration on the real Garage binary, its `garage-init.sh` run
//! twice (the second run changes nothing), its `sample.sql` in a scratch PostgreSQL, its `dr-setup.sh` run twice
//! (one dev key, the configuration written, `dr init` once), then `dr backup`, `dr drill` and `dr serve` with the
//! configuration it wrote. The shipped files are used as they are, except for what compose supplies inside the
//! containers and a test must supply on the host: host names, ports and paths, rewritten in copies (see
//! [`DevGarage::start`] and [`dev_template`]); the scripts get them through the same environment variables the
//! compose services set.
//!
//! Production: every variable compose/production.yml reads is set in both env examples and nothing else is,
//! and compose/dr.production.toml.example loads, agrees with the compose file, and `dr serve` starts with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, query_strings, scratch, sql};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn compose_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose").join(relative)
}

fn compose_file(relative: &str) -> String {
    fs::read_to_string(compose_path(relative)).unwrap_or_else(|e| panic!("compose/{relative}: {e}"))
}

/// The value of the first `key: value` line of compose/dev.yml (the dev key and bucket are set there once, for
/// both the service that creates them and the one that uses them).
fn dev_compose_value(key: &str) -> String {
    let text = compose_file("dev.yml");
    let prefix = format!("{key}: ");
    text.lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .map(|value| value.split(" #").next().unwrap().trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no {key} in compose/dev.yml"))
}

fn garage_binary() -> Option<PathBuf> {
    common::require("garage")
}

/// Sets an existing key of a TOML document (a renamed key in a shipped file fails here, instead of the copy
/// quietly gaining a key the original does not have).
fn set(table: &mut toml::Table, path: &[&str], value: impl Into<toml::Value>) {
    let (last, parents) = path.split_last().unwrap();
    let mut current = table;
    for key in parents {
        current = current.get_mut(*key).and_then(toml::Value::as_table_mut).unwrap_or_else(|| panic!("no [{key}]"));
    }
    assert!(current.contains_key(*last), "no key {path:?} to rewrite");
    current.insert((*last).to_string(), value.into());
}

/// The `index`-th table of an array of tables (`[[postgres]]`, `[[files]]`).
fn nth<'t>(table: &'t mut toml::Table, array: &str, index: usize) -> &'t mut toml::Table {
    table[array].as_array_mut().unwrap()[index].as_table_mut().unwrap()
}

/// The dev stack's Garage: compose/dev/garage.toml with its directories and ports moved to the test's.
struct DevGarage {
    dir: tempfile::TempDir,
    config: PathBuf,
    admin_url: String,
    s3_url: String,
    admin_token: String,
    server: Child,
}

impl DevGarage {
    fn start() -> Option<DevGarage> {
        let binary = garage_binary()?;
        let dir = tempfile::Builder::new().prefix("dr-compose-garage-").tempdir().unwrap();
        let mut config: toml::Table = compose_file("dev/garage.toml").parse().unwrap();
        let (s3_port, rpc_port, admin_port) = (common::free_port(), common::free_port(), common::free_port());
        set(&mut config, &["metadata_dir"], dir.path().join("meta").display().to_string());
        set(&mut config, &["data_dir"], dir.path().join("data").display().to_string());
        set(&mut config, &["rpc_bind_addr"], format!("127.0.0.1:{rpc_port}"));
        set(&mut config, &["rpc_public_addr"], format!("127.0.0.1:{rpc_port}"));
        set(&mut config, &["s3_api", "api_bind_addr"], format!("127.0.0.1:{s3_port}"));
        set(&mut config, &["admin", "api_bind_addr"], format!("127.0.0.1:{admin_port}"));
        let admin_token = config["admin"]["admin_token"].as_str().unwrap().to_string();
        let path = dir.path().join("garage.toml");
        fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let server = common::garage::spawn_server(&binary, &path, dir.path());
        Some(DevGarage {
            config: path,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            s3_url: format!("http://127.0.0.1:{s3_port}"),
            admin_token,
            server,
            dir,
        })
    }

    /// compose/dev/garage-init.sh, with the environment the garage-init service gives it.
    fn init(&self) -> Run {
        let mut command = Command::new("sh");
        command
            .arg(compose_path("dev/garage-init.sh"))
            .env("GARAGE_ADMIN_URL", &self.admin_url)
            .env("GARAGE_CONFIG", &self.config)
            .env("GARAGE_BUCKET", dev_compose_value("GARAGE_BUCKET"))
            .envs(dev_key());
        let run = common::run(&mut command);
        assert_eq!(
            run.code,
            0,
            "garage-init.sh failed:\n{}\nserver log:\n{}",
            run.stderr,
            fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        run
    }

    /// A GET on the admin API.
    async fn admin(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap()
    }
}

impl Drop for DevGarage {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The fixed dev S3 key of compose/dev.yml, as both garage-init and dr receive it.
fn dev_key() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", dev_compose_value("AWS_ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", dev_compose_value("AWS_SECRET_ACCESS_KEY")),
    ]
}

/// Where the dev stack's dr keeps its files: the dr-data volume (/var/lib/dr) of the containers.
struct DevDr {
    dir: tempfile::TempDir,
    port: u16,
}

impl DevDr {
    fn volume(&self) -> PathBuf {
        self.dir.path().join("var-lib-dr")
    }

    /// The key and configuration directory, /var/lib/dr/dev in the containers.
    fn dev_dir(&self) -> PathBuf {
        self.volume().join("dev")
    }

    fn config(&self) -> PathBuf {
        self.dev_dir().join("dr.toml")
    }

    /// The environment of the dr-setup and dr services, plus the test's: this build's `dr` first on PATH, and
    /// nothing read from the host's AWS set-up.
    fn env(&self) -> Vec<(&'static str, String)> {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_dr")).parent().unwrap().to_path_buf();
        let path = std::env::join_paths(
            std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        let mut env = dev_key();
        env.extend([
            ("PATH", path.to_string_lossy().into_owned()),
            ("DR_CONFIG", self.config().display().to_string()),
            ("DR_DEV_DIR", self.dev_dir().display().to_string()),
            ("DR_DEV_TEMPLATE", self.dir.path().join("template.toml").display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", "/nonexistent/dr-test".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/dr-test".to_string()),
        ]);
        env
    }

    /// compose/dev/dr-setup.sh, as the dr-setup service runs it.
    fn setup(&self) -> Run {
        let mut command = Command::new("sh");
        command.arg(compose_path("dev/dr-setup.sh"));
        for var in ["DR_REPOSITORY_URL", "DR_RECIPIENTS", "DR_IDENTITY_FILE", "RUST_LOG"] {
            command.env_remove(var);
        }
        command.envs(self.env());
        let run = common::run(&mut command);
        assert_eq!(run.code, 0, "dr-setup.sh failed:\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
        run
    }

    /// A `dr` command as `docker compose exec dr dr ...` runs it: the configuration from $DR_CONFIG.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = common::dr_command();
        command.args(args).envs(self.env());
        command
    }

    fn dr(&self, args: &[&str]) -> Run {
        common::run(&mut self.command(args))
    }
}

/// compose/dev/dr.toml with what the containers' network and volumes provide moved to the test's: Garage's and
/// the cluster's addresses, the volume's paths, the site's files (the committed compose/dev/site, which dev.yml
/// mounts) and a free port. `@DEV_RECIPIENT@` stays for dr-setup.sh to fill in.
fn dev_template(dr: &DevDr, garage: &DevGarage, database_url: &str) -> String {
    let mut config: toml::Table = compose_file("dev/dr.toml").parse().unwrap();
    let volume = dr.volume();
    let under_volume = |path: &str| volume.join(path.strip_prefix("/var/lib/dr/").unwrap()).display().to_string();
    set(&mut config, &["repository", "endpoint"], garage.s3_url.clone());
    for [table, key] in
        [["encryption", "identity_file"], ["service", "state_dir"], ["report", "output_dir"], ["audit", "path"]]
    {
        let original = config[table][key].as_str().unwrap().to_string();
        set(&mut config, &[table, key], under_volume(&original));
    }
    set(&mut config, &["service", "listen"], format!("127.0.0.1:{}", dr.port));
    set(nth(&mut config, "postgres", 0), &["url"], database_url);
    for (index, name) in ["config", "uploads"].into_iter().enumerate() {
        let files = nth(&mut config, "files", index);
        assert_eq!(files["name"].as_str(), Some(name));
        let mounted = compose_path("dev/site").join(name);
        assert!(mounted.is_dir(), "{} is what dev.yml mounts", mounted.display());
        set(files, &["path"], mounted.display().to_string());
    }
    toml::to_string(&config).unwrap()
}

async fn wait_for(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let response = client.get(url).send().await.ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.ok()?))
}

/// SIGTERM, as `docker stop` sends it; returns the exit code.
fn stop(mut child: Child) -> i32 {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dr serve did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_stack_backs_up_and_drills_its_sample_site_on_garage() {
    // garage + garage-init: twice, the second run finding everything in place.
    let Some(garage) = DevGarage::start() else { return };
    let first = garage.init();
    for step in
        ["applied layout version 1", "created bucket dr-dev", "imported key", "may read and write bucket dr-dev"]
    {
        assert!(first.stderr.contains(step), "{step:?} in:\n{}", first.stderr);
    }
    let key_id = dev_compose_value("AWS_ACCESS_KEY_ID");
    let second = garage.init();
    for step in ["already has a role", "bucket dr-dev exists", &format!("key {key_id} exists")] {
        assert!(second.stderr.contains(step), "{step:?} in:\n{}", second.stderr);
    }
    assert!(!second.stderr.contains("created") && !second.stderr.contains("imported"), "{}", second.stderr);
    assert_eq!(garage.admin("/v2/GetClusterLayout").await["version"], 1, "the second run applied no layout");
    let bucket = garage.admin("/v2/GetBucketInfo?globalAlias=dr-dev").await;
    let keys = bucket["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{bucket:#}");
    assert_eq!(keys[0]["accessKeyId"], key_id.as_str());
    assert_eq!(keys[0]["permissions"], serde_json::json!({"read": true, "write": true, "owner": true}));
    let buckets = garage.admin("/v2/ListBuckets").await;
    assert_eq!(buckets.as_array().unwrap().len(), 1, "one bucket, however many runs: {buckets:#}");

    // postgres: the sample site, as the image's initdb step loads it into POSTGRES_DB.
    let database = dev_compose_value("POSTGRES_DB");
    let db = scratch().await;
    sql(&db, "postgres", &format!("CREATE DATABASE {database}")).await;
    sql(&db, &database, &compose_file("dev/sample.sql")).await;
    let counts = query_strings(
        &db,
        &database,
        "SELECT concat_ws(' ', (SELECT count(*) FROM users), (SELECT count(*) FROM posts), \
         (SELECT count(*) FROM comments), (SELECT count(*) FROM likes), (SELECT count(*) FROM follows), \
         (SELECT count(*) FROM albums), (SELECT count(*) FROM album_posts), (SELECT count(*) FROM tags), \
         (SELECT count(*) FROM avatars), (SELECT count(*) FROM analytics.daily_uploads), \
         (SELECT count(*) FROM popular_posts), (SELECT count(*) FROM pg_roles WHERE rolname = 'isntgram_app'))",
    )
    .await;
    assert_eq!(counts, ["300 1200 4000 1200 300 100 800 1200 300 25 1200 1"]);

    // dr-setup: one dev key, the configuration written from the template, the repository created once.
    let dr =
        DevDr { dir: tempfile::Builder::new().prefix("dr-compose-dev-").tempdir().unwrap(), port: common::free_port() };
    fs::write(dr.dir.path().join("template.toml"), dev_template(&dr, &garage, &db.url(&database))).unwrap();
    let first = dr.setup();
    assert!(first.stderr.contains("generated the dev key"), "{}", first.stderr);
    assert!(first.stdout.contains("s3://dr-dev/isntgram"), "dr init ran:\n{}\n{}", first.stdout, first.stderr);
    let identity = fs::read_to_string(dr.dev_dir().join("identity.txt")).unwrap();
    let recipient = identity.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_string();
    let written = fs::read_to_string(dr.config()).unwrap();
    assert!(written.contains(&format!("recipients = [\"{recipient}\"]")), "{written}");
    assert!(!written.contains("@DEV_RECIPIENT@"));
    let second = dr.setup();
    assert!(second.stderr.contains("keeping the dev key"), "{}", second.stderr);
    assert!(second.stderr.contains("the repository exists"), "{}", second.stderr);
    assert_eq!(fs::read_to_string(dr.dev_dir().join("identity.txt")).unwrap(), identity, "the key is kept");

    // dr: a backup of every source, and a drill that passes the dev configuration's checks.
    let snapshot = dr.dr(&["backup"]).ok().stdout.trim().to_string();
    let listed = dr.dr(&["snapshots", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed[0]["id"], snapshot.as_str());
    let record = dr.dr(&["drill", "--json"]).ok().json();
    assert_eq!(record["snapshot"], snapshot.as_str());
    assert_eq!((record["passed"].as_bool(), record["succeeded"].as_bool()), (Some(true), Some(true)), "{record:#}");
    let checks: Vec<(&str, &str)> = record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    for name in ["users exist", "every post has its author", "files config", "files uploads"] {
        assert!(checks.contains(&(name, "pass")), "{name:?} passes: {checks:?}");
    }

    // dr serve, as the dr service runs it: ready (the repository reachable, the snapshot within the RPO).
    let log = fs::File::create(dr.dir.path().join("serve.log")).unwrap();
    let service = dr.command(&["serve"]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let base = format!("http://127.0.0.1:{}", dr.port);
    wait_for("/readyz", async || get(&format!("{base}/readyz")).await.is_some_and(|(code, _)| code == 200)).await;
    let (code, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(code, 200, "no token_file in the dev configuration");
    assert!(metrics.lines().any(|l| l == "dr_repository_snapshots 1"), "{metrics}");
    // The service's healthcheck as compose runs it in the container, and the readiness deploys wait for.
    dr.dr(&["healthcheck"]).ok();
    dr.dr(&["healthcheck", "--ready"]).ok();
    assert_eq!(stop(service), 0, "{}", fs::read_to_string(dr.dir.path().join("serve.log")).unwrap());
}

/// `${NAME}`, `${NAME:-default}` and `${NAME:?error}` in a compose file.
fn compose_variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

/// The `NAME=value` lines of an env file.
fn env_variables(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {line:?}")).0.to_string())
        .collect()
}

#[test]
fn the_env_examples_set_exactly_the_variables_the_production_compose_file_reads() {
    let used = compose_variables(&compose_file("production.yml"));
    assert!(used.contains("SITE_NETWORK") && used.contains("DR_TAG"), "{used:?}");
    for example in ["env/production.env.example", "env/staging.env.example"] {
        let set = env_variables(&compose_file(example));
        let missing: Vec<_> = used.difference(&set).collect();
        let unused: Vec<_> = set.difference(&used).collect();
        assert!(missing.is_empty() && unused.is_empty(), "{example}: missing {missing:?}, not used {unused:?}");
        for name in &set {
            let secret = ["_PASSWORD", "_SECRET", "_TOKEN", "_KEY"].iter().any(|s| name.ends_with(s));
            assert!(!secret, "{example}: {name}: secrets are files under secrets/, never in .env");
        }
    }
}

#[test]
fn the_dev_stack_mounts_files_that_exist() {
    let dev = compose_file("dev.yml");
    let mounted: Vec<&str> = dev.split_whitespace().filter_map(|w| w.strip_prefix("./dev/")).collect();
    assert!(mounted.len() >= 7, "{mounted:?}");
    for path in mounted {
        let source = path.split(':').next().unwrap();
        assert!(compose_path("dev").join(source).exists(), "compose/dev/{source}");
    }
    assert!(dev.contains("GARAGE_BUCKET: dr-dev") && compose_file("dev/dr.toml").contains("url = \"s3://dr-dev/"));
}

/// A duration of the compose file (`90s`, `1m30s`).
fn compose_duration(text: &str, key: &str) -> Duration {
    let value =
        text.lines().find_map(|l| l.trim().strip_prefix(&format!("{key}: "))).unwrap_or_else(|| panic!("no {key}"));
    humantime::parse_duration(value.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_production_configuration_loads_agrees_with_the_compose_file_and_serves() {
    let example = compose_path("dr.production.toml.example");
    let loaded = dr::settings::load(Some(&example), &|_| None).unwrap().config;
    let compose = compose_file("production.yml");

    // What the compose file mounts and publishes is what the configuration reads and listens on.
    assert!(loaded.repository.is_s3());
    assert_eq!(loaded.service.listen.as_deref(), Some("0.0.0.0:9187"));
    assert!(compose.contains("\"127.0.0.1:${DR_METRICS_PORT:-9187}:9187\""));
    for (secret, configured) in [
        ("dr-identity", loaded.encryption.identity_file.as_deref()),
        ("metrics-token", loaded.service.token_file.as_deref()),
    ] {
        assert!(compose.contains(&format!("      - {secret}\n")), "{secret} is mounted");
        assert_eq!(configured, Some(Path::new(&format!("/run/secrets/{secret}"))));
    }
    for secret in ["pgpass", "aws-credentials"] {
        assert!(compose.contains(&format!("      - {secret}\n")), "{secret} is mounted");
        assert!(compose.contains(&format!(": /run/secrets/{secret}\n")), "an environment variable names {secret}");
    }
    for path in [
        loaded.service.state_dir.as_deref(),
        loaded.report.output_dir.as_deref(),
        loaded.audit.path.as_deref(),
        loaded.restore.temp_dir.as_deref(),
    ] {
        assert!(path.unwrap().starts_with("/var/lib/dr"), "{path:?} is on the dr-data volume");
    }
    assert!(compose.contains("target: /var/lib/dr\n") && compose.contains("read_only: true"));
    let files: Vec<&Path> = loaded.files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(files, [Path::new("/srv/site/config"), Path::new("/srv/site/uploads")]);
    for path in &files {
        assert!(compose.contains(&format!("target: {}\n", path.display())), "{} is mounted", path.display());
    }
    let url = &loaded.postgres[0].url;
    let user_info = url.trim_start_matches("postgres://").split_once('@').map_or("", |(user, _)| user);
    assert!(!user_info.contains(':'), "no password in {url}: it comes from PGPASSFILE");
    let grace = loaded.service.grace.unwrap();
    assert!(grace + Duration::from_secs(20) <= compose_duration(&compose, "stop_grace_period"), "grace {grace:?}");
    let kinds: BTreeSet<String> = loaded.jobs.iter().map(|j| j.run.to_string()).collect();
    assert_eq!(kinds, ["backup", "drill", "prune", "report"].map(String::from).into());

    // `dr serve` accepts it (schedules, time zone, token file), with the container's paths moved to a temp dir
    // and the endpoint to a closed port.
    let dir = tempfile::Builder::new().prefix("dr-compose-prod-").tempdir().unwrap();
    let mut config: toml::Table = fs::read_to_string(&example).unwrap().parse().unwrap();
    let port = common::free_port();
    let moved = |path: &str| {
        let relative = path.trim_start_matches('/').replace('/', "-");
        dir.path().join(relative).display().to_string()
    };
    set(&mut config, &["repository", "endpoint"], "http://127.0.0.1:1");
    set(&mut config, &["service", "listen"], format!("127.0.0.1:{port}"));
    for [table, key] in [
        ["encryption", "identity_file"],
        ["service", "token_file"],
        ["service", "state_dir"],
        ["report", "output_dir"],
        ["audit", "path"],
        ["restore", "temp_dir"],
    ] {
        let original = config[table][key].as_str().unwrap().to_string();
        set(&mut config, &[table, key], moved(&original));
    }
    for index in 0..2 {
        let files = nth(&mut config, "files", index);
        let original = files["path"].as_str().unwrap().to_string();
        fs::create_dir_all(moved(&original)).unwrap();
        set(files, &["path"], moved(&original));
    }
    dr::KeyPair::generate().write_identity_file(Path::new(&moved("/run/secrets/dr-identity"))).unwrap();
    fs::write(moved("/run/secrets/metrics-token"), "example-token\n").unwrap();
    let config_path = dir.path().join("dr.toml");
    fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    let log = fs::File::create(dir.path().join("serve.log")).unwrap();
    let service = common::config_command(&config_path, &["serve"]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("/healthz", async || get(&format!("{base}/healthz")).await.is_some_and(|(code, _)| code == 200)).await;
    assert_eq!(get(&format!("{base}/metrics")).await.unwrap().0, 401, "the token guards /metrics");
    common::run(&mut common::config_command(&config_path, &["healthcheck"])).ok();
    let unready = common::run(&mut common::config_command(&config_path, &["healthcheck", "--ready"])).fails(1);
    assert!(unready.stderr.contains("unreachable"), "no repository, not ready: {}", unready.stderr);
    assert_eq!(stop(service), 0, "{}", fs::read_to_string(dir.path().join("serve.log")).unwrap());
}
