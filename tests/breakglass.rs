//! Break-glass: a snapshot restored without `dr`, with only the stock tools and exactly the commands of
//! docs/repository-format.md ("Restoring by hand"): age, zstd, jq, sha256sum, psql, createdb, pg_restore and
//! GNU tar. When one of these commands has to change, the document changes with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{DATABASE, Site, UPLOAD_EXCLUDES, fingerprint, listing, roles, scratch};

const TOOLS: [&str; 8] = ["age", "zstd", "jq", "sha256sum", "psql", "createdb", "pg_restore", "tar"];

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
    let message = format!("the break-glass test needs {} on PATH; tests/run installs them", missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("SKIPPED: {message}");
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
