//! The server scripts under deploy/, run for real. `remote-deploy.sh` is fed to `bash -s` on stdin as
//! deploy.yml does over SSH, with fake `docker` and `curl` first on PATH: they log every call and answer from a
//! small state (which container runs, which tags or images come ready). A good deploy updates .env and the
//! history; a tag that never gets ready (or whose container is unhealthy) is rolled back to the previous one,
//! exit 1; a failed rollback exits 2; a bad tag changes nothing; two deploys at once take turns; `--rollback`
//! walks the history back. `bootstrap.sh --dry-run` runs on this very machine (as root in CI) with every
//! command that could change it replaced by a tripwire, and must plan the whole set-up while changing nothing;
//! its /srv/dr layout step runs for real into a temporary directory, twice, the second run changing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const REMOTE_DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/remote-deploy.sh");
const BOOTSTRAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bootstrap.sh");
const IMAGE: &str = "ghcr.io/example/dr";
const PORT: &str = "19187";

/// docker compose as the script uses it, faked: `pull` gives the tag a new image id (`img-<tag>-<n>`), `up`
/// makes the tag's image the running container, `tag` points a tag at an image, `inspect` reports the running
/// container's image, reference and health (healthy once ready, unless listed in `unhealthy`).
const FAKE_DOCKER: &str = r#"#!/usr/bin/env bash
set -u
S=$FAKE_STATE
env_tag=$(sed -n 's/^DR_TAG=//p' .env 2>/dev/null | tail -n 1)
printf '[%s] docker %s [DR_TAG=%s .env=%s]\n' "${DEPLOY_ID:-}" "$*" "${DR_TAG-unset}" "$env_tag" >>"$S/calls.log"
listed() { [[ -n $2 ]] && grep -qxF -- "$2" "$S/$1" 2>/dev/null; }
running() { cat "$S/running" 2>/dev/null; }
running_image() { cat "$S/running-image" 2>/dev/null; }
ready_now() { listed ready "$(running)" || listed ready "$(running_image)"; }
case $1 in
compose)
    shift
    while [[ $# -gt 0 && $1 == -* ]]; do shift 2; done
    case $1 in
    version) echo "Docker Compose version v2.99.0-fake" ;;
    pull)
        if listed fail-pull "$DR_TAG"; then echo "pull access denied for $DR_TAG" >&2; exit 1; fi
        old=$(cat "$S/image-$DR_TAG" 2>/dev/null || echo "img-$DR_TAG-0")
        echo "img-$DR_TAG-$((${old##*-} + 1))" >"$S/image-$DR_TAG"
        ;;
    up)
        cat >/dev/null # a child that reads stdin must not eat the rest of a script fed to `bash -s`
        if [[ -f $S/slow ]]; then sleep "$(cat "$S/slow")"; fi
        if listed fail-up "$DR_TAG"; then echo "cannot start $DR_TAG" >&2; exit 1; fi
        echo "$DR_TAG" >"$S/running"
        cat "$S/image-$DR_TAG" 2>/dev/null >"$S/running-image" || echo "img-$DR_TAG-0" >"$S/running-image"
        ;;
    ps) if [[ -s $S/running ]]; then echo "cid-$(running)"; fi ;;
    logs) echo "fake log of $(running)" ;;
    *) echo "fake docker: unexpected compose $*" >&2; exit 99 ;;
    esac
    ;;
inspect)
    if listed unhealthy "$(running)"; then health=unhealthy; elif ready_now; then health=healthy; else health=starting; fi
    echo "$(running_image) ghcr.io/example/dr:$(running) $health"
    ;;
tag)
    echo "$2" >"$S/image-${3##*:}"
    ;;
*) echo "fake docker: unexpected $*" >&2; exit 99 ;;
esac
"#;

/// curl against the ready endpoint, faked: 200 when the running tag or image is listed in `ready`.
const FAKE_CURL: &str = r#"#!/usr/bin/env bash
S=$FAKE_STATE
printf '[%s] curl %s\n' "${DEPLOY_ID:-}" "$*" >>"$S/calls.log"
url=${*: -1}
if [[ $url != "$FAKE_URL" ]]; then echo "fake curl: unexpected url $url" >&2; exit 7; fi
run=$(cat "$S/running" 2>/dev/null); image=$(cat "$S/running-image" 2>/dev/null)
if [[ -n $run ]] && grep -qxF -e "$run" -e "$image" "$S/ready" 2>/dev/null; then
    [[ " $* " == *" -o /dev/null "* ]] || echo ok
    exit 0
fi
echo '{"ready": false, "reasons": ["fake: not ready"]}'
exit 22
"#;

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A server's /srv/dr with a running dr, and the fakes' state.
struct Server {
    _dir: tempfile::TempDir,
    home: PathBuf,
    state: PathBuf,
    bin: PathBuf,
}

impl Server {
    /// `current` runs (image `img-<current>-1`) and is .env's DR_TAG; the history is empty.
    fn new(current: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (home, state, bin) = (dir.path().join("srv-dr"), dir.path().join("state"), dir.path().join("bin"));
        for d in [&home, &state, &bin] {
            fs::create_dir(d).unwrap();
        }
        write_executable(&bin.join("docker"), FAKE_DOCKER);
        write_executable(&bin.join("curl"), FAKE_CURL);
        fs::write(home.join("compose.yml"), format!("services:\n  dr:\n    image: {IMAGE}:${{DR_TAG}}\n")).unwrap();
        let env = format!(
            "# dr on this server\nCOMPOSE_PROJECT_NAME=dr\nDR_TAG={current}\nDR_METRICS_PORT={PORT}\nSITE_NETWORK=site_default\n"
        );
        fs::write(home.join(".env"), env).unwrap();
        fs::set_permissions(home.join(".env"), fs::Permissions::from_mode(0o600)).unwrap();
        let server = Server { _dir: dir, home, state, bin };
        server.set("running", &[current]);
        server.set("running-image", &[&format!("img-{current}-1")]);
        server.set(&format!("image-{current}"), &[&format!("img-{current}-1")]);
        server
    }

    /// One of the fakes' state files: `ready`, `unhealthy`, `fail-pull`, `fail-up`, `slow`, ...
    fn set(&self, name: &str, lines: &[&str]) {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        fs::write(self.state.join(name), body).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-s", "--"])
            .args(args)
            .stdin(fs::File::open(REMOTE_DEPLOY).unwrap())
            .env("PATH", path_with(&self.bin))
            .env("DR_HOME", &self.home)
            .env("FAKE_STATE", &self.state)
            .env("FAKE_URL", format!("http://127.0.0.1:{PORT}/readyz"))
            .env("DR_READY_TIMEOUT", "1")
            .env("DR_READY_INTERVAL", "0.05")
            .env_remove("DR_TAG")
            .env_remove("DR_METRICS_PORT")
            .env_remove("DR_READY_PATH");
        command
    }

    fn deploy(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn env(&self) -> String {
        fs::read_to_string(self.home.join(".env")).unwrap()
    }

    fn env_tag(&self) -> String {
        self.env().lines().filter_map(|l| l.strip_prefix("DR_TAG=")).collect::<Vec<_>>().join(",")
    }

    fn history(&self) -> Vec<String> {
        fs::read_to_string(self.home.join(".deployed-tags")).unwrap_or_default().lines().map(String::from).collect()
    }

    fn running(&self) -> String {
        fs::read_to_string(self.state.join("running")).unwrap().trim().to_string()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.state.join("calls.log")).unwrap_or_default().lines().map(String::from).collect()
    }

    /// The calls that change something (pull, up, tag), without the deploy id: "pull dr [DR_TAG=x .env=y]".
    fn changes(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter_map(|call| {
                let call = call.split_once("] docker ")?.1;
                let call = call.strip_prefix("compose --env-file .env -f compose.yml ").unwrap_or(call);
                ["pull ", "up ", "tag "].iter().any(|verb| call.starts_with(verb)).then(|| call.to_string())
            })
            .collect()
    }

    fn listing(&self) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = fs::read_dir(&self.home)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), fs::read_to_string(e.path()).unwrap_or_default())
            })
            .collect();
        files.sort();
        files
    }
}

#[test]
fn a_good_deploy_sets_the_tag_and_records_the_history() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old", "sha-new"]);
    let out = server.deploy(&["sha-new"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployed sha-new (previous: sha-old)"), "{}", text(&out));

    // Only DR_TAG changed in .env; its other lines, comments and mode are kept.
    assert_eq!(
        server.env(),
        format!(
            "# dr on this server\nCOMPOSE_PROJECT_NAME=dr\nDR_TAG=sha-new\nDR_METRICS_PORT={PORT}\nSITE_NETWORK=site_default\n"
        )
    );
    assert_eq!(fs::metadata(server.home.join(".env")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(server.history(), ["sha-old", "sha-new"]);
    assert_eq!(server.running(), "sha-new");
    // The image is pulled before .env changes (a failed pull changes nothing); compose starts it after.
    assert_eq!(server.changes(), ["pull dr [DR_TAG=sha-new .env=sha-old]", "up -d dr [DR_TAG=sha-new .env=sha-new]"]);
    // Readiness was asked of the port .env names.
    assert!(server.calls().iter().any(|c| c.contains(&format!("http://127.0.0.1:{PORT}/readyz"))));
    // Leftovers: the lock file and the history, no temporary files.
    let names: Vec<String> = server.listing().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, [".deploy.lock", ".deployed-tags", ".env", "compose.yml"]);

    // The next deploy appends; a redeploy of the running tag does not repeat it.
    server.set("ready", &["sha-old", "sha-new", "sha-next"]);
    assert_eq!(server.deploy(&["sha-next"]).status.code(), Some(0));
    assert_eq!(server.deploy(&["sha-next"]).status.code(), Some(0));
    assert_eq!(server.history(), ["sha-old", "sha-new", "sha-next"]);
}

#[test]
fn a_tag_that_never_gets_ready_is_rolled_back_to_the_previous_one() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old"]);
    let out = server.deploy(&["sha-bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED: sha-bad did not come ready; back on sha-old, which is ready"), "{}", text(&out));
    // What a person needs to see: why it was not ready, and the container's last log lines.
    assert!(stdout.contains("fake: not ready") && stdout.contains("fake log of sha-bad"), "{}", text(&out));

    assert_eq!(server.env_tag(), "sha-old");
    assert_eq!(server.running(), "sha-old");
    assert_eq!(server.history(), ["sha-old"], "a tag that never came ready is not history");
    assert_eq!(
        server.changes(),
        [
            "pull dr [DR_TAG=sha-bad .env=sha-old]",
            "up -d dr [DR_TAG=sha-bad .env=sha-bad]",
            // The previous tag is pointed back at the image that ran before, then started again.
            &format!("tag img-sha-old-1 {IMAGE}:sha-old [DR_TAG=unset .env=sha-bad]"),
            "up -d dr [DR_TAG=sha-old .env=sha-old]",
        ]
    );
}

#[test]
fn a_container_that_is_unhealthy_is_rolled_back_even_when_readyz_answers() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old", "sha-sick"]);
    server.set("unhealthy", &["sha-sick"]);
    let out = server.deploy(&["sha-sick"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the container is unhealthy"), "{}", text(&out));
    assert_eq!(server.env_tag(), "sha-old");
    assert_eq!(server.running(), "sha-old");
}

#[test]
fn a_failed_rollback_exits_2() {
    // Neither tag comes ready (say, the newest snapshot is older than the RPO objective).
    let server = Server::new("sha-old");
    let out = server.deploy(&["sha-new"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("going back to sha-old failed too") && stderr.contains("NOT ready"), "{}", text(&out));
    let ups: Vec<String> = server.changes().into_iter().filter(|c| c.starts_with("up ")).collect();
    assert_eq!(ups, ["up -d dr [DR_TAG=sha-new .env=sha-new]", "up -d dr [DR_TAG=sha-old .env=sha-old]"]);
    assert_eq!(server.env_tag(), "sha-old", ".env names the tag it went back to");

    // A container that does not even start, with nothing to go back to: exit 2 as well.
    let server = Server::new("");
    server.set("fail-up", &["sha-new"]);
    let out = server.deploy(&["sha-new"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to go back to"), "{}", text(&out));
}

#[test]
fn a_failed_pull_changes_nothing() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old", "sha-gone"]);
    server.set("fail-pull", &["sha-gone"]);
    let out = server.deploy(&["sha-gone"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing changed, sha-old still runs"), "{}", text(&out));
    assert_eq!(server.env_tag(), "sha-old");
    assert_eq!(server.changes(), ["pull dr [DR_TAG=sha-gone .env=sha-old]"]);
}

#[test]
fn a_mutable_tag_redeployed_goes_back_to_the_image_that_ran() {
    // `production` is retagged in the registry: rolling back by tag name alone would start the new, broken
    // image again. The image that ran before is tagged back first.
    let server = Server::new("production");
    server.set("ready", &["img-production-1"]);
    let out = server.deploy(&["production"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        server.changes(),
        [
            "pull dr [DR_TAG=production .env=production]",
            "up -d dr [DR_TAG=production .env=production]",
            &format!("tag img-production-1 {IMAGE}:production [DR_TAG=unset .env=production]"),
            "up -d dr [DR_TAG=production .env=production]",
        ]
    );
    assert_eq!(fs::read_to_string(server.state.join("running-image")).unwrap().trim(), "img-production-1");
}

#[test]
fn a_bad_tag_is_refused_without_touching_anything() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old"]);
    let before = server.listing();
    let long = "a".repeat(129);
    for tag in
        ["", "bad tag", "x;rm -rf /", "../etc", "-rf", ".hidden", "a/b", "a:b", "sha-1\nDR_TAG=evil", "$(id)", &long]
    {
        let out = server.deploy(&[tag]);
        assert_eq!(out.status.code(), Some(3), "{tag:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid image tag"), "{tag:?}: {}", text(&out));
    }
    for args in [&[][..], &["sha-1", "sha-2"], &["--rollbak"]] {
        assert_eq!(server.deploy(args).status.code(), Some(3), "{args:?}");
    }
    assert_eq!(server.listing(), before, "no file in /srv/dr was created or changed");
    assert!(server.calls().is_empty(), "neither docker nor curl was called: {:?}", server.calls());
}

#[test]
fn two_deploys_at_once_take_turns() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old", "sha-a", "sha-b"]);
    server.set("slow", &["0.4"]);
    let children: Vec<_> = ["sha-a", "sha-b"]
        .iter()
        .map(|tag| {
            let mut command = server.command(&[tag]);
            command.env("DEPLOY_ID", tag).stdout(Stdio::piped()).stderr(Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    // Every call of one deploy comes before every call of the other: never pull A, pull B, up A, up B.
    let ids: Vec<String> = server.calls().iter().map(|c| c[1..c.find(']').unwrap()].to_string()).collect();
    let first = &ids[0];
    let switches = ids.windows(2).filter(|pair| pair[0] != pair[1]).count();
    assert_eq!(switches, 1, "the deploys interleaved: {:#?}", server.calls());
    let second = if first == "sha-a" { "sha-b" } else { "sha-a" };
    assert_eq!(server.history(), ["sha-old", first.as_str(), second]);
    assert_eq!(server.env_tag(), second);
    assert_eq!(server.running(), second);
}

#[test]
fn rollback_walks_the_history_back() {
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old", "sha-a", "sha-b"]);
    assert_eq!(server.deploy(&["sha-a"]).status.code(), Some(0));
    assert_eq!(server.deploy(&["sha-b"]).status.code(), Some(0));
    assert_eq!(server.history(), ["sha-old", "sha-a", "sha-b"]);

    let out = server.deploy(&["--rollback"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolled back to sha-a (was sha-b)"), "{}", text(&out));
    assert_eq!((server.env_tag(), server.running()), ("sha-a".into(), "sha-a".into()));
    assert_eq!(server.history(), ["sha-old", "sha-a"]);

    assert_eq!(server.deploy(&["--rollback"]).status.code(), Some(0));
    assert_eq!((server.env_tag(), server.history()), ("sha-old".into(), vec!["sha-old".to_string()]));

    let out = server.deploy(&["--rollback"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to roll back to"), "{}", text(&out));
    assert_eq!(server.env_tag(), "sha-old");

    // A rollback target that does not come ready: back on the tag that ran, exit 1, history kept.
    let server = Server::new("sha-old");
    server.set("ready", &["sha-old", "sha-a"]);
    assert_eq!(server.deploy(&["sha-a"]).status.code(), Some(0));
    server.set("ready", &["sha-a"]);
    let out = server.deploy(&["--rollback"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!((server.env_tag(), server.running()), ("sha-a".into(), "sha-a".into()));
    assert_eq!(server.history(), ["sha-old", "sha-a"]);
}

#[test]
fn remote_deploy_help() {
    let out = Command::new("bash").args([REMOTE_DEPLOY, "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for word in ["--rollback", "DR_READY_TIMEOUT", "DR_READY_INTERVAL", "DR_HOME", "Exit codes"] {
        assert!(String::from_utf8_lossy(&out.stdout).contains(word), "{word}: {}", text(&out));
    }
}

// ---- bootstrap.sh ------------------------------------------------------------------------------------------------

/// Commands that change a host. In the bootstrap tests each is a tripwire that logs its call and fails, so a
/// dry run that tried to change this machine fails the test instead of changing it. The read-only uses of
/// some of them (READ_ONLY) go through to the real command, when this machine has it.
const MUTATORS: &str = "apt-get apt dpkg useradd usermod groupadd adduser passwd chown chmod chgrp install mkdir cp mv \
    ln rm tee touch mktemp curl gpg ufw systemctl sshd fail2ban-client";

const READ_ONLY: &str = r#""dpkg --print-architecture" | "systemctl is-enabled "* | "systemctl is-active "* | "ufw show added" | "ufw status"* | "sshd -T"* | "dpkg-query "*"#;

const DEPLOY_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDH9xkl0XBjdqdMvQ9UpMHEWQs5I7tRS+DQM5REbW/3c ci@example";

fn is_root() -> bool {
    // The effective uid, from /proc: no libc call needed.
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// The checkout bootstrap copies compose/production.yml, the env example and the dr.toml example from.
const CHECKOUT: &str = env!("CARGO_MANIFEST_DIR");

/// What the dry run could have touched, to compare before and after.
fn host_state() -> Vec<(String, Option<Vec<u8>>)> {
    [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/srv/dr",
        "/home/deploy",
        "/etc/apt/keyrings/docker.asc",
        "/etc/apt/sources.list.d/docker.list",
        "/etc/apt/apt.conf.d/20auto-upgrades",
        "/etc/apt/apt.conf.d/52dr-security-only",
        "/etc/fail2ban/jail.d/dr-sshd.local",
        "/etc/ssh/sshd_config.d/10-dr-hardening.conf",
        "/etc/systemd/system/dr-compose.service",
        "/etc/default/ufw",
    ]
    .iter()
    .map(|path| {
        let content = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Some(b"<dir>".to_vec()),
            Ok(_) => Some(fs::read(path).unwrap_or_default()),
            Err(_) => None,
        };
        (path.to_string(), content)
    })
    .collect()
}

fn bootstrap(args: &[&str], tripwires: &Path, envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new("bash");
    command.arg(BOOTSTRAP).args(args).env("PATH", path_with(tripwires)).env_remove("DR_DEPLOY_KEY");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn tripwires(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("tripwires");
    let log = dir.join("tripwires.log");
    fs::create_dir(&bin).unwrap();
    for name in MUTATORS.split_whitespace() {
        let script = format!(
            "#!/bin/sh\ncase \"{name} $*\" in\n{READ_ONLY})\n    PATH=${{PATH#*:}}\n    command -v {name} >/dev/null 2>&1 || exit 1\n    exec {name} \"$@\" ;;\nesac\necho \"{name} $*\" >>'{}'\nexit 97\n",
            log.display()
        );
        write_executable(&bin.join(name), &script);
    }
    (bin, log)
}

#[test]
fn bootstrap_dry_run_plans_everything_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(CHECKOUT).display();
    let (bin, log) = tripwires(dir.path());
    let key_file = dir.path().join("deploy.pub");
    fs::write(&key_file, format!("{DEPLOY_KEY}\n")).unwrap();
    // This machine's own system when it is Debian (the CI machines are Debian 12), else Debian 12's description.
    let os_release = dir.path().join("os-release");
    let own = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let debian_12 =
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";
    fs::write(&os_release, if own.contains("VERSION_CODENAME=bookworm") { own.as_str() } else { debian_12 }).unwrap();
    let before = host_state();

    let key = key_file.to_str().unwrap();
    let out =
        bootstrap(&["--dry-run", "--deploy-key", key, "--source", CHECKOUT], &bin, &[("DR_OS_RELEASE", &os_release)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!log.exists(), "a dry run ran a command that changes the host:\n{}", fs::read_to_string(&log).unwrap());
    assert_eq!(host_state(), before, "a dry run changed the host");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let position = |needle: &str| stdout.find(needle).unwrap_or_else(|| panic!("no {needle:?} in:\n{}", text(&out)));
    let mut planned: Vec<String> = [
        "Debian GNU/Linux 12",
        "fail2ban",
        "backend = systemd",
        "unattended-upgrades",
        "APT::Periodic::Unattended-Upgrade \"1\";",
        "#clear Unattended-Upgrade::Origins-Pattern;",
        "ufw allow 80/tcp",
        "ufw allow 443/tcp",
        "ExecStart=/usr/bin/docker compose --env-file /srv/dr/.env -f /srv/dr/compose.yml up -d",
        "ExecStop=/usr/bin/docker compose --env-file /srv/dr/.env -f /srv/dr/compose.yml down",
        "sshd hardening skipped",
        "change(s) planned, none made",
    ]
    .map(String::from)
    .into();
    // What this machine already has is not planned again (the CI machines have none of it).
    let docker_works = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if !docker_works {
        planned.extend([
            "https://download.docker.com/linux/debian/gpg /etc/apt/keyrings/docker.asc 9DC858229FC7DD38854AE2D88D81803C0EBFCD88".into(),
            "signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable".into(),
            "docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin".into(),
        ]);
    }
    if fs::metadata("/srv/dr").is_err() {
        planned.extend([
            "install -d -m 0750 -o deploy -g deploy /srv/dr".into(),
            "install -d -m 0711 -o 10001 -g 10001 /srv/dr/secrets".into(),
            format!("install -m 0644 -o deploy -g deploy {source}/compose/production.yml /srv/dr/compose.yml"),
            format!("install -m 0600 -o deploy -g deploy {source}/compose/env/production.env.example /srv/dr/.env"),
            format!("install -m 0640 -o root -g 10001 {source}/compose/dr.production.toml.example /srv/dr/dr.toml"),
            "next: edit /srv/dr/dr.toml and /srv/dr/.env, and put dr-identity pgpass aws-credentials metrics-token"
                .into(),
        ]);
    }
    if fs::metadata("/etc/systemd/system/dr-compose.service").is_err() {
        planned.push("systemctl enable dr-compose.service".into());
    }
    if fs::metadata("/home/deploy").is_err() {
        planned.extend([
            "useradd --create-home --shell /bin/bash --user-group deploy".into(),
            "usermod -aG docker deploy".into(),
            "add_authorized_key /home/deploy/.ssh/authorized_keys deploy:deploy restrict\\ ssh-ed25519\\ AAAAC3".into(),
        ]);
    }
    for needle in &planned {
        position(needle);
    }
    // SSH is allowed before the firewall goes up, never after.
    if stdout.contains("ufw --force enable") {
        assert!(position("ufw allow 22/tcp") < position("ufw --force enable"), "{}", text(&out));
    }
    // Every planned change is one `would` line; nothing claims to have run.
    assert!(!stdout.lines().any(|l| l.starts_with("run ")), "{}", text(&out));
}

#[test]
fn bootstrap_refuses_what_it_must_not_do() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, log) = tripwires(dir.path());
    let before = host_state();

    // Another system.
    let os_release = dir.path().join("os-release");
    for (release, name) in [
        ("ID=fedora\nVERSION_ID=40\nPRETTY_NAME=\"Fedora Linux 40\"\n", "Fedora Linux 40"),
        (
            "ID=debian\nVERSION_ID=\"11\"\nVERSION_CODENAME=bullseye\nPRETTY_NAME=\"Debian GNU/Linux 11 (bullseye)\"\n",
            "Debian GNU/Linux 11",
        ),
        (
            "ID=ubuntu\nVERSION_ID=\"20.04\"\nVERSION_CODENAME=focal\nPRETTY_NAME=\"Ubuntu 20.04.6 LTS\"\n",
            "Ubuntu 20.04",
        ),
    ] {
        fs::write(&os_release, release).unwrap();
        let out = bootstrap(&["--dry-run"], &bin, &[("DR_OS_RELEASE", &os_release)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name) && stderr.contains("supports Debian 12 or later and Ubuntu"), "{}", text(&out));
    }
    // Ubuntu 24.04 is fine.
    fs::write(
        &os_release,
        "ID=ubuntu\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n",
    )
    .unwrap();
    let out = bootstrap(&["--dry-run", "--only", "docker"], &bin, &[("DR_OS_RELEASE", &os_release)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("https://download.docker.com/linux/ubuntu noble stable"));

    // Something that is not a public key, or a private one.
    for key in ["not a key", "ssh-ed25519 AAAAnotbase64!", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n"] {
        let out = bootstrap(&["--dry-run", "--deploy-key", key], &bin, &[]);
        assert_eq!(out.status.code(), Some(1), "{key}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--deploy-key"), "{}", text(&out));
    }
    // Bad options.
    assert_eq!(bootstrap(&["--frobnicate"], &bin, &[]).status.code(), Some(2));
    assert_eq!(bootstrap(&["--dry-run", "--only", "everything"], &bin, &[]).status.code(), Some(1));
    assert_eq!(bootstrap(&["--dry-run", "--environment", "prod"], &bin, &[]).status.code(), Some(1));
    let out = bootstrap(&["--help"], &bin, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--dry-run"));

    // Hardening sshd with no other admin who can log in with a key would lock everyone out: refused, even
    // as a plan. (This machine has no such admin; a machine that has one would plan it instead.)
    let out = bootstrap(&["--dry-run", "--harden-ssh", "--only", "ssh"], &bin, &[]);
    if out.status.code() != Some(0) {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("error:"), "{}", text(&out));
        assert!(!String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("would ")), "{}", text(&out));
    }

    // Not in a dry run, on a machine without systemd (this container): refused before anything.
    if fs::metadata("/run/systemd/system").is_err() {
        let out = bootstrap(&["--only", "docker"], &bin, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("systemd is not running"), "{}", text(&out));
    }

    assert!(!log.exists(), "a refused run changed the host:\n{}", fs::read_to_string(&log).unwrap());
    assert_eq!(host_state(), before);
}

#[test]
fn bootstrap_layout_sets_owners_and_modes_and_a_second_run_changes_nothing() {
    if !is_root() {
        common::skip("the bootstrap layout test needs root to chown to 10001");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("srv-dr");
    fs::create_dir_all(home.join("secrets")).unwrap();
    fs::write(home.join("secrets/pgpass"), "db:5432:*:backup:secret\n").unwrap();
    fs::set_permissions(home.join("secrets/pgpass"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(home.join("dr.toml"), "[repository]\n").unwrap();
    fs::write(home.join(".env"), "DR_TAG=sha-local\n").unwrap();
    let layout = || {
        let mut command = Command::new("bash");
        command.arg(BOOTSTRAP).args(["--only", "layout", "--deploy-user", "nobody", "--source", CHECKOUT]);
        command.env("DR_HOME", &home).output().unwrap()
    };

    let out = layout();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode_owner = |path: &str| {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(home.join(path)).unwrap();
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    };
    let nobody = mode_owner(".").1;
    let nogroup = mode_owner(".").2;
    assert_eq!(mode_owner("."), (0o750, nobody, nogroup));
    assert_eq!(mode_owner("secrets"), (0o711, 10001, 10001));
    assert_eq!(mode_owner("secrets/pgpass"), (0o600, 10001, 10001));
    assert_eq!(mode_owner("dr.toml"), (0o640, 0, 10001));
    assert_eq!(mode_owner("compose.yml"), (0o644, nobody, nogroup));
    assert_eq!(mode_owner(".env"), (0o600, nobody, nogroup));
    assert_ne!(nobody, 0);
    // An existing file is never overwritten by the checkout's.
    assert_eq!(fs::read_to_string(home.join(".env")).unwrap(), "DR_TAG=sha-local\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains(".env exists and differs"), "{}", text(&out));

    let out = layout();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("nothing to change: this host is already set up"), "{}", text(&out));
    assert!(!stdout.lines().any(|l| l.starts_with("run ")), "{}", text(&out));
}
