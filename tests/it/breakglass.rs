//! Break-glass: a snapshot restored without `dr`, with only the stock tools and exactly the commands of
//! docs/repository-format.md ("Restoring by hand"): age, zstd, jq, sha256sum, psql, createdb, pg_restore and
//! GNU tar. When one of these commands has to change, the document changes with it.
//!
//! And the operator's runbook, runbooks/break-glass.md, run as written: its `## Step N.` blocks, joined into one
//! bash script with the variables its "Before you start" section names, against a real site.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{DATABASE, Site, UPLOAD_EXCLUDES, fingerprint, listing, query_strings, roles, scratch, sql};

const TOOLS: [&str; 9] = ["age", "zstd", "jq", "sha256sum", "psql", "createdb", "pg_restore", "tar", "bash"];

/// Whether every stock tool is on PATH. Missing ones fail the test under CI (tests/run installs them) and skip it
/// elsewhere, with a notice.
fn tools_present() -> bool {
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|tool| {
            !Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    common::skip(&format!("the break-glass test needs {} on PATH; tests/run installs them", missing.join(", ")));
    false
}

/// Runs `script` with `sh -c` in `dir`; returns its stdout, failing the test on a non-zero exit.
fn sh(dir: &Path, env: &[(&str, &str)], script: &str) -> String {
    let output = Command::new("sh").arg("-c").arg(script).current_dir(dir).envs(env.iter().copied()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\nfailed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_restores_with_only_the_stock_tools() {
    if !tools_present() {
        return;
    }
    let site = Site::new().await;
    let snapshot = site.backup();
    let repo = site.repo.as_path();
    let id_file = site.identity.to_str().unwrap();
    let env = [("ID_FILE", id_file)];
    // The newest snapshot (each step re-derives $SNAP and $ID, as a reader pasting the steps would have them).
    let find = r#"SNAP=$(ls snapshots/*.json | sort | tail -n 1); ID=$(basename "$SNAP" .json); "#;

    // 1. Find the snapshot.
    assert_eq!(sh(repo, &env, &format!("{find} echo \"$ID\"")).trim(), snapshot);

    // 2. Check the objects against the manifest's hashes.
    let checked = sh(
        repo,
        &env,
        &format!(r#"{find} jq -r '.sources[].objects[] | "\(.sha256)  \(.key)"' "$SNAP" | sha256sum -c -"#),
    );
    assert_eq!(checked.lines().filter(|l| l.ends_with(": OK")).count(), 6, "{checked}");

    // 3. Decrypt the private part.
    let private = sh(repo, &env, &format!(r#"{find} jq -r .private "$SNAP" | age -d -i "$ID_FILE" | jq ."#));
    let private: serde_json::Value = serde_json::from_str(&private).unwrap();
    assert_eq!(private["sources"][0]["database"], DATABASE);
    // The wrong identity is told by age in the words the document quotes.
    let other = site.path("other.txt");
    dr::KeyPair::generate().write_identity_file(&other).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(r#"{find} jq -r .private "$SNAP" | age -d -i "$ID_FILE""#))
        .current_dir(repo)
        .env("ID_FILE", &other)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("no identity matched any of the recipients"));

    // 4. The roles, into a fresh server.
    let target = scratch().await;
    let (socket, port) = (target.socket_dir().to_str().unwrap().to_string(), target.port().to_string());
    let pg_env = [("ID_FILE", id_file), ("PGHOST", socket.as_str()), ("PGPORT", port.as_str()), ("PGUSER", "postgres")];
    sh(
        repo,
        &pg_env,
        &format!(
            r#"{find} age -d -i "$ID_FILE" "objects/$ID/app/globals.sql.zst.age" | zstd -d | psql -X -d postgres -f -"#
        ),
    );
    assert_eq!(roles(&target).await, roles(&site.db).await, "roles with their password hashes");

    // 5. The database: under its own name; into a database of one's choice in one transaction; in parallel from
    // a file.
    let original = fingerprint(&site.db, DATABASE).await;
    sh(
        repo,
        &pg_env,
        &format!(
            r#"{find} age -d -i "$ID_FILE" "objects/$ID/app/pg_dump.zst.age" | zstd -d | pg_restore --create --exit-on-error --dbname=postgres"#
        ),
    );
    assert_eq!(fingerprint(&target, DATABASE).await, original, "restored under its original name");
    sh(
        repo,
        &pg_env,
        &format!(
            r#"{find} createdb --template=template0 --encoding=UTF8 --lc-collate=C --lc-ctype=C isntgram_restored
age -d -i "$ID_FILE" "objects/$ID/app/pg_dump.zst.age" | zstd -d | pg_restore --single-transaction --exit-on-error --dbname=isntgram_restored"#
        ),
    );
    assert_eq!(fingerprint(&target, "isntgram_restored").await, original, "restored in one transaction");
    let staged = site.path("app.pgdump");
    let parallel_env = [pg_env.as_slice(), &[("DUMP", staged.to_str().unwrap())]].concat();
    sh(
        repo,
        &parallel_env,
        &format!(
            r#"{find} createdb --template=template0 --encoding=UTF8 --lc-collate=C --lc-ctype=C isntgram_parallel
age -d -i "$ID_FILE" "objects/$ID/app/pg_dump.zst.age" | zstd -d -q -o "$DUMP"
pg_restore --jobs=4 --exit-on-error --dbname=isntgram_parallel "$DUMP"
rm "$DUMP""#
        ),
    );
    assert_eq!(fingerprint(&target, "isntgram_parallel").await, original, "restored in parallel from a file");

    // 6. The files sources, then the check against the index.
    for (source, original, excludes) in
        [("config", site.config_dir(), &[][..]), ("uploads", site.uploads_dir(), &UPLOAD_EXCLUDES[..])]
    {
        let restored = site.path(&format!("restored/{source}"));
        let files_env = [("ID_FILE", id_file), ("DIR", restored.to_str().unwrap()), ("SOURCE", source)];
        sh(
            repo,
            &files_env,
            &format!(
                r#"{find} mkdir -p "$DIR"
age -d -i "$ID_FILE" "objects/$ID/$SOURCE/files.tar.zst.age" | zstd -d | tar -x -p --numeric-owner -f - -C "$DIR""#
            ),
        );
        assert_eq!(listing(&restored, &[]), listing(&original, excludes), "{source}: modes, mtimes, links, empty dirs");
        let check = sh(
            repo,
            &files_env,
            &format!(
                r#"{find} age -d -i "$ID_FILE" "objects/$ID/$SOURCE/index.jsonl.zst.age" | zstd -d \
  | jq -r 'select(.type == "file" and .path_hex == null) | "\(.sha256)  \(.path)"' \
  | (cd "$DIR" && sha256sum -c --quiet -)"#
            ),
        );
        assert_eq!(check, "", "{source}: every file is as archived");
    }
}

/// The operator's break-glass runbook, read at run time so that the test runs what the file says today.
fn runbook_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/break-glass.md")).unwrap()
}

/// What the test takes from runbooks/break-glass.md.
struct Runbook {
    /// The variables the "Before you start" block exports (the operator edits and pastes it; the test sets them).
    variables: BTreeSet<String>,
    /// `(heading, code)` of every ```sh block directly under a `## Step N.` heading, in order. Blocks under a `###`
    /// subheading (variants: the bucket-only fetch, a parallel restore) and under other headings are not steps.
    steps: Vec<(String, String)>,
}

fn parse_runbook(text: &str) -> Runbook {
    let mut variables = BTreeSet::new();
    let mut steps = Vec::new();
    let (mut section, mut subsection) = (String::new(), false);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix("## ") {
            (section, subsection) = (heading.to_string(), false);
            continue;
        }
        if line.starts_with("### ") {
            subsection = true;
            continue;
        }
        let fence = line.trim_start();
        if !fence.starts_with("```") {
            continue;
        }
        let indented = fence.len() != line.len();
        let mut code = String::new();
        for body in lines.by_ref() {
            if body.trim_start() == "```" {
                break;
            }
            code.push_str(body.strip_prefix(&line[..line.len() - fence.len()]).unwrap_or(body));
            code.push('\n');
        }
        let is_step = section.starts_with("Step ") && !subsection;
        if is_step {
            assert_eq!(fence, "```sh", "a block of a step must be ```sh: {section}");
            assert!(
                !indented,
                "an indented block directly under {section:?} is ambiguous: move it under a ### heading"
            );
            steps.push((section.clone(), code));
        } else if section == "Before you start" && !subsection && !indented && variables.is_empty() {
            for line in code.lines().filter_map(|l| l.strip_prefix("export ")) {
                let assignments = line.split('#').next().unwrap();
                variables.extend(assignments.split_whitespace().map(|a| a.split('=').next().unwrap().to_string()));
            }
        }
    }
    Runbook { variables, steps }
}

/// The outcome of a script run.
struct Script {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Script {
    /// The heading of the last step that started (each step announces itself on stderr).
    fn last_step(&self) -> &str {
        self.stderr.lines().filter_map(|l| l.strip_prefix("==> ")).next_back().unwrap_or_default()
    }
}

/// Runs `steps` as one bash script, in one shell as the runbook asks, with `set -e` added so that any failing
/// check (they all end in `false`) stops it; `dir` is where the operator's shell starts.
fn run_steps(steps: &[(String, String)], dir: &Path, env: &[(&str, String)]) -> Script {
    let mut script = String::from("set -e\n");
    for (heading, code) in steps {
        script.push_str(&format!("echo '==> {heading}' >&2\n{code}\n"));
    }
    let output = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .current_dir(dir)
        .env_remove("PGDATABASE")
        .env_remove("PGSERVICE")
        .env_remove("PGPASSWORD")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    Script {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `20261125T154224Z-cb9536` -> `2026-11-25T15:42:24Z`: the snapshot's start, as an RFC 3339 time.
fn id_time(id: &str) -> String {
    let t = chrono::NaiveDateTime::parse_from_str(&id[..16], "%Y%m%dT%H%M%SZ").unwrap();
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[test]
fn the_runbook_has_its_steps_and_variables() {
    let runbook = parse_runbook(&runbook_text());
    let expected: BTreeSet<String> =
        ["REPO", "IDENTITY", "SNAPSHOT", "DB_SOURCE", "TARGET_DB", "FILES_TARGET", "PGHOST", "PGPORT", "PGUSER"]
            .map(String::from)
            .into();
    assert_eq!(runbook.variables, expected, "the variables \"Before you start\" tells the operator to set");
    let mut headings: Vec<&str> = runbook.steps.iter().map(|(h, _)| h.as_str()).collect();
    headings.dedup();
    let numbered = (1..=headings.len()).all(|n| headings[n - 1].starts_with(&format!("Step {n}. ")));
    assert!(numbered && headings.len() == 8, "steps 1 to 8, in order: {headings:?}");
    // The bucket variants are in the runbook, but not among the steps a local copy runs.
    let text = runbook_text();
    assert!(text.contains("aws $EP s3 cp --recursive \"$S3_REPO/objects/$ID/\"") && text.contains("rclone copy"));
    assert!(runbook.steps.iter().all(|(_, code)| !code.contains("aws ") && !code.contains("rclone ")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_break_glass_runbook_restores_the_site() {
    if !tools_present() {
        return;
    }
    let runbook = parse_runbook(&runbook_text());
    let site = Site::new().await;
    let original = fingerprint(&site.db, DATABASE).await;
    let original_roles = roles(&site.db).await;
    let original_config = listing(&site.config_dir(), &[]);
    let original_uploads = listing(&site.uploads_dir(), &UPLOAD_EXCLUDES);
    let before = site.backup();

    // The incident: rows deleted, an upload defaced, and a backup of the damage taken a second later (ids have
    // second precision), so that `latest` is the wrong snapshot and a time must pick the right one.
    sql(&site.db, DATABASE, "DELETE FROM comments").await;
    std::fs::write(site.uploads_dir().join("2026/11/0001.jpg"), b"defaced").unwrap();
    common::next_second();
    let after = site.backup();
    assert_ne!(fingerprint(&site.db, DATABASE).await, original, "the damage must show");
    let cutoff = id_time(&before);
    assert!(cutoff < id_time(&after), "{before} {after}");

    let target = scratch().await;
    let restored = site.path("restored");
    let env = |repo: &Path, identity: &Path, snapshot: &str| -> Vec<(&'static str, String)> {
        vec![
            ("REPO", repo.display().to_string()),
            ("IDENTITY", identity.display().to_string()),
            ("SNAPSHOT", snapshot.to_string()),
            ("DB_SOURCE", "app".to_string()),
            ("TARGET_DB", DATABASE.to_string()),
            ("FILES_TARGET", restored.display().to_string()),
            ("PGHOST", target.socket_dir().display().to_string()),
            ("PGPORT", target.port().to_string()),
            ("PGUSER", "postgres".to_string()),
        ]
    };
    let variables: BTreeSet<String> = env(&site.repo, &site.identity, "").iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(variables, runbook.variables, "the test sets what the runbook tells the operator to set");
    let cwd = site.path("");

    // Step 2 alone picks the snapshot each way the runbook offers, and refuses a time before every snapshot.
    let step2: Vec<_> = runbook.steps.iter().filter(|(h, _)| h.starts_with("Step 2.")).cloned().collect();
    for (snapshot, expected) in [("latest", &after), (&before[..16], &before), (cutoff.as_str(), &before)] {
        let run = run_steps(&step2, &cwd, &env(&site.repo, &site.identity, snapshot));
        assert!(run.ok, "SNAPSHOT={snapshot}\n{}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(&format!("snapshot: {expected}\n")), "SNAPSHOT={snapshot}:\n{}", run.stdout);
    }
    let too_early = run_steps(&step2, &cwd, &env(&site.repo, &site.identity, "2020-01-01T00:00:00Z"));
    assert!(!too_early.ok && too_early.stdout.contains("no snapshot matches"), "{}", too_early.stdout);

    // The wrong identity stops the runbook at step 4, before anything is written.
    let other = site.path("other.txt");
    dr::KeyPair::generate().write_identity_file(&other).unwrap();
    let wrong_key = run_steps(&runbook.steps, &cwd, &env(&site.repo, &other, &cutoff));
    assert!(!wrong_key.ok, "{}", wrong_key.stdout);
    assert!(wrong_key.last_step().starts_with("Step 4."), "{}", wrong_key.stderr);
    assert!(wrong_key.stderr.contains("no identity matched any of the recipients"), "{}", wrong_key.stderr);

    // A damaged object stops it at step 3.
    let damaged = site.path("damaged-repo");
    assert!(Command::new("cp").arg("-a").arg(&site.repo).arg(&damaged).status().unwrap().success());
    let object = damaged.join(site.object_key(&before, "app/pg_dump.zst.age"));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let damage = run_steps(&runbook.steps, &cwd, &env(&damaged, &site.identity, &cutoff));
    assert!(!damage.ok && damage.last_step().starts_with("Step 3."), "{}\n{}", damage.stdout, damage.stderr);
    assert!(damage.stdout.contains("pg_dump.zst.age: FAILED"), "{}", damage.stdout);
    let databases = query_strings(&target, "postgres", "SELECT datname::text FROM pg_database").await;
    assert!(!databases.iter().any(|d| d == DATABASE), "nothing restored: {databases:?}");
    assert!(!restored.exists(), "no files restored");

    // The whole runbook, to the snapshot before the damage.
    let run = run_steps(&runbook.steps, &cwd, &env(&site.repo, &site.identity, &cutoff));
    assert!(run.ok, "the runbook failed at {}:\nstdout:\n{}\nstderr:\n{}", run.last_step(), run.stdout, run.stderr);
    assert!(run.last_step().starts_with("Step 8."), "{}", run.stderr);
    for line in
        ["tools and variables OK", &format!("snapshot: {before}"), "target OK", "roles OK", "row counts OK", "files OK"]
    {
        assert!(run.stdout.contains(line), "{line:?} missing from:\n{}", run.stdout);
    }
    assert_eq!(fingerprint(&target, DATABASE).await, original, "the database as before the damage");
    assert_eq!(roles(&target).await, original_roles, "roles with their password hashes");
    assert_eq!(listing(&restored.join("config"), &[]), original_config, "config: modes, mtimes, links");
    assert_eq!(listing(&restored.join("uploads"), &[]), original_uploads, "uploads as before the damage");

    // Run again, the restored targets are refused rather than overwritten.
    let again = run_steps(&runbook.steps, &cwd, &env(&site.repo, &site.identity, &cutoff));
    assert!(!again.ok && again.last_step().starts_with("Step 5."), "{}", again.stderr);
    assert!(again.stdout.contains(&format!("database {DATABASE} exists already")), "{}", again.stdout);
}
