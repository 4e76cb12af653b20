//! A real S3-compatible server for the tests: a single-node Garage on free loopback ports, with one bucket and
//! one key, torn down on drop. `tests/run` installs Garage (`cargo install garage --locked`); here a missing
//! binary fails the test under CI and skips it elsewhere, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dr::store::s3::{S3Options, StaticCredentials};

pub struct Garage {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    binary: PathBuf,
    config: PathBuf,
    server: Child,
}

/// The garage binary: on PATH or in cargo's bin directory.
pub fn find_binary() -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(cargo_bin).map(|dir| dir.join("garage")).find(|p| p.is_file())
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

impl Garage {
    /// Starts a server, or returns `None` (outside CI only) when Garage is not installed.
    pub fn start() -> Option<Garage> {
        let Some(binary) = find_binary() else {
            assert!(
                std::env::var("CI").is_err(),
                "garage is not installed; tests/run installs it (cargo install garage --locked)"
            );
            eprintln!("SKIPPED: garage is not installed (tests/run installs it)");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("dr-garage-").tempdir().unwrap();
        let (s3_port, rpc_port, admin_port) = (super::free_port(), super::free_port(), super::free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let server = spawn_server(&binary, &config, dir.path());
        let mut garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            bucket: "dr-test".to_string(),
            key_id: String::new(),
            secret: String::new(),
            binary,
            config,
            server,
            dir,
        };
        garage.set_up();
        Some(garage)
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
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn set_up(&mut self) {
        let node = self.admin(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        // Capacity is only a layout weight here; large enough for the benchmark's objects.
        self.admin(&["layout", "assign", "-z", "dc1", "-c", "100G", &node]);
        self.admin(&["layout", "apply", "--version", "1"]);
        self.admin(&["bucket", "create", &self.bucket]);
        let key = self.admin(&["key", "create", "dr-test-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in:\n{key}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");
        self.admin(&["bucket", "allow", "--read", "--write", "--owner", &self.bucket, "--key", "dr-test-key"]);
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

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
