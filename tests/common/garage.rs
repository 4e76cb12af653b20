//! A real S3-compatible server for the tests: ONE single-node Garage per test process, started on free loopback
//! ports by the first test that asks, and a bucket of its own for every test ([`Garage::start`]), so that tests
//! stay apart (listings, open multipart uploads) while the run boots Garage once instead of once per test.
//! `tests/run` installs Garage (`cargo install garage --locked`); a missing binary follows the rule of
//! [`super::require`] (fails under CI, skips elsewhere).
//!
//! The server must not outlive the test process, and Rust runs no destructor for a static: it is started by a
//! small `sh` watchdog whose stdin is a pipe from this process. When the process ends, however it ends (even
//! killed), the pipe closes, and the watchdog stops Garage and removes its directory. A test that needs a server
//! of its own (another configuration, a restart) starts one with [`spawn_server`], as `compose_dev` does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dr::store::s3::{S3Options, StaticCredentials};

/// A bucket of its own on the run's shared server, with the server's key allowed on it.
pub struct Garage {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The run's one server.
struct Server {
    dir: PathBuf,
    endpoint: String,
    key_id: String,
    secret: String,
    binary: PathBuf,
    config: PathBuf,
    /// The watchdog (its stdin is the pipe whose closing stops Garage): kept for the life of the process.
    _watchdog: Child,
}

/// The garage binary: on PATH or in cargo's bin directory.
pub fn find_binary() -> Option<PathBuf> {
    super::find_tool("garage")
}

/// `garage -c CONFIG server`, logging to `log_dir/server.log`.
pub fn spawn_server(binary: &Path, config: &Path, log_dir: &Path) -> Child {
    let log = std::fs::File::create(log_dir.join("server.log")).unwrap();
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting garage")
}

/// Runs Garage in the background and waits for its stdin to close (this process ended): then kills it (its data
/// is thrown away, so there is nothing to shut down gracefully) and removes its directory. SIGINT is ignored so
/// that a Ctrl-C of the test run reaches the cleanup too.
const WATCHDOG: &str = r#"trap '' INT
"$1" -c "$2" server </dev/null &
server=$!
while read -r _; do :; done
kill -KILL "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -rf "$3""#;

impl Garage {
    /// A new, empty bucket on the run's server (started on first use), or `None` (outside CI only) when Garage
    /// is not installed.
    pub fn start() -> Option<Garage> {
        static NEXT_BUCKET: AtomicU32 = AtomicU32::new(0);
        let server = server()?;
        let bucket = format!("dr-test-{}", NEXT_BUCKET.fetch_add(1, Ordering::Relaxed));
        server.admin(&["bucket", "create", &bucket]);
        server.admin(&["bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", "dr-test-key"]);
        Some(Garage {
            endpoint: server.endpoint.clone(),
            bucket,
            key_id: server.key_id.clone(),
            secret: server.secret.clone(),
        })
    }
    /// A new key on the run's server, allowed on this bucket with `permissions` (`--read`, `--write`,
    /// `--owner`; none: a key that may not touch it): another party's credentials. Returns (id, secret).
    pub fn new_key(&self, name: &str, permissions: &[&str]) -> (String, String) {
        let server = server().expect("the server runs: this bucket is on it");
        let name = format!("{name}-{}", self.bucket);
        let key = server.admin(&["key", "create", &name]);
        if !permissions.is_empty() {
            let mut allow = vec!["bucket", "allow"];
            allow.extend_from_slice(permissions);
            allow.extend_from_slice(&[&self.bucket, "--key", &name]);
            server.admin(&allow);
        }
        (field(&key, "Key ID:"), field(&key, "Secret key:"))
    }

    /// Allows an existing key (by id) on this bucket too.
    pub fn allow(&self, key_id: &str, permissions: &[&str]) {
        let server = server().expect("the server runs: this bucket is on it");
        let mut allow = vec!["bucket", "allow"];
        allow.extend_from_slice(permissions);
        allow.extend_from_slice(&[&self.bucket, "--key", key_id]);
        server.admin(&allow);
    }

    /// Store options for an in-process [`dr::store::S3Store`] on this server, under `prefix`.
    pub fn options(&self, prefix: &str) -> S3Options {
        let mut options = S3Options::from_url(&format!("s3://{}/{prefix}", self.bucket)).unwrap();
        options.endpoint = Some(self.endpoint.clone());
        options.region = Some("garage".to_string());
        options.path_style = true;
        options.credentials =
            Some(StaticCredentials { access_key_id: self.key_id.clone(), secret_access_key: self.secret.clone() });
        options
    }

    /// The `[repository]` section of a dr.toml for this server (credentials come from [`Garage::env`]).
    pub fn repository_toml(&self, prefix: &str, endpoint: Option<&str>) -> String {
        format!(
            "[repository]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"garage\"\npart_size = \"5MiB\"\n",
            self.bucket,
            endpoint.unwrap_or(&self.endpoint)
        )
    }

    /// Environment for a `dr` process: this server's key, and nothing read from the host's AWS set-up.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", "garage".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", "/nonexistent/dr-test".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/dr-test".to_string()),
        ]
    }

    /// A plain SDK client for this server, to look at the bucket behind dr's back.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        let credentials = aws_sdk_s3::config::Credentials::new(&self.key_id, &self.secret, None, None, "test");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("garage"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Keys of the multipart uploads still open in the bucket: a failed upload must leave none.
    pub async fn open_multipart_uploads(&self) -> Vec<String> {
        let listed = self.client().await.list_multipart_uploads().bucket(&self.bucket).send().await.unwrap();
        listed.uploads().iter().filter_map(|u| u.key().map(str::to_string)).collect()
    }
}

impl Server {
    fn start(binary: PathBuf) -> Server {
        let dir = tempfile::Builder::new().prefix("dr-garage-").tempdir().unwrap().keep();
        let (s3_port, rpc_port, admin_port) = (super::free_port(), super::free_port(), super::free_port());
        let config = dir.join("garage.toml");
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("garage-watchdog")
            .arg(&binary)
            .arg(&config)
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting garage");
        let mut server = Server {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            key_id: String::new(),
            secret: String::new(),
            binary,
            config,
            dir,
            _watchdog: watchdog,
        };
        server.set_up();
        server
    }

    /// Runs a `garage` admin command, retrying while the node is still starting.
    fn admin(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?} failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node's layout and the key that every test bucket allows.
    fn set_up(&mut self) {
        let node = self.admin(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        // Capacity is only a layout weight here; large enough for the benchmark's objects.
        self.admin(&["layout", "assign", "-z", "dc1", "-c", "100G", &node]);
        self.admin(&["layout", "apply", "--version", "1"]);
        let key = self.admin(&["key", "create", "dr-test-key"]);
        self.key_id = field(&key, "Key ID:");
        self.secret = field(&key, "Secret key:");
    }
}

/// The run's one server, started on first use; `None` (outside CI only) when Garage is not installed.
fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER.get_or_init(|| super::require("garage").map(Server::start)).as_ref()
}

/// A field of `garage key create`'s output.
fn field(output: &str, name: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in:\n{output}"))
}
