//! Point-in-time restore through logical decoding (docs/pitr.md), against a real PostgreSQL with
//! `wal_level = logical` under a steady write load of the site's own tables: `dr restore --to T` gives exactly
//! the data the database held at T, for several instants, across a capture killed with -9 and a TRUNCATE.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dr::pg::{ScratchOptions, ScratchPostgres};
use tokio::sync::RwLock;

use crate::common;
use common::{DATABASE, Site};

/// A site on a server with `wal_level = logical`, its database source continuous, a 1 s stream interval, and
/// `extra` appended to the configuration.
pub async fn logical_site(extra: &str) -> Site {
    let options = ScratchOptions { settings: vec![("wal_level".into(), "logical".into())], ..Default::default() };
    let db = tokio::task::spawn_blocking(move || ScratchPostgres::start(&options)).await.unwrap().unwrap();
    let site = Site::on(db).await;
    site.write_config(&format!("[stream]\ninterval = \"1s\"\n{extra}"));
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    std::fs::write(&site.config_path, text.replacen("globals = true\n", "globals = true\ncontinuous = true\n", 1))
        .unwrap();
    site
}

/// `dr stream run` in the background, its log in a file the assertions quote.
struct Capture {
    child: Child,
    log: std::path::PathBuf,
}

impl Capture {
    fn start(site: &Site, name: &str) -> Capture {
        let log = site.path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = site.command(&["stream", "run"]).stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Capture { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn generation_exists(site: &Site) -> bool {
    let streams = site.repo.join("streams/app");
    std::fs::read_dir(&streams)
        .is_ok_and(|mut entries| entries.any(|e| e.is_ok_and(|e| e.path().join("generation.json").exists())))
}

/// Waits until the stored stream reaches past `time`.
async fn wait_for_coverage(site: &Site, time: DateTime<Utc>, capture: &Capture) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = site.dr(&["stream", "status", "--json"]).ok().json();
        let covered = status[0]["covered_until"].as_str().map(|t| t.parse::<DateTime<Utc>>().unwrap());
        if covered.is_some_and(|c| c > time + chrono::TimeDelta::milliseconds(1500)) {
            return;
        }
        assert!(Instant::now() < deadline, "the stream never reached {time}: {status}\n{}", capture.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The site's writes: new users with posts and comments (a trigger fills created_at), edits of captions,
/// visibility (an enum) and EXIF (jsonb), likes, deleted posts (cascading to comments and likes), avatar bytes,
/// an upserted counter, and now and then a TRUNCATE. Each worker touches its own posts.
async fn write_load(site: Arc<Site>, worker: i64, gate: Arc<RwLock<()>>, stop: Arc<AtomicBool>) -> u64 {
    let client = dr::pg::connect(&site.db.conninfo(DATABASE)).await.unwrap();
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let _running = gate.read().await;
        let post = 1 + 2 * ((n * 37) % 490) + worker;
        let sql = match n % 7 {
            0 => format!(
                "BEGIN;
                 INSERT INTO users (username, display_name, settings) VALUES ('w{worker}n{n}', 'Zoë ''{n}''', '{{\"k\": {n}}}');
                 INSERT INTO posts (user_id, caption, image_path, created_at)
                   SELECT id, 'new «{n}»', 'uploads/x/{n}.jpg', now() FROM users WHERE username = 'w{worker}n{n}';
                 INSERT INTO comments (post_id, user_id, body) SELECT max(id), 1, 'first! {n}' FROM posts;
                 COMMIT;"
            ),
            1 => format!(
                "UPDATE posts SET caption = caption || ' ✎', exif = jsonb_set(coalesce(exif, '{{}}'), '{{iso}}', '{n}'),
                   visibility = (ARRAY['public', 'followers', 'private'])[1 + {n} % 3]::visibility
                 WHERE id = {post}"
            ),
            2 => format!("INSERT INTO likes (user_id, post_id) VALUES (1 + {n} % 200, {post}) ON CONFLICT DO NOTHING"),
            3 if n % 5 == 3 => format!("DELETE FROM posts WHERE id = {post}"),
            4 => format!(
                "INSERT INTO analytics.daily_uploads (day, uploads) VALUES (date '2026-12-01' + {worker}, {n})
                 ON CONFLICT (day) DO UPDATE SET uploads = excluded.uploads"
            ),
            5 => format!("UPDATE avatars SET thumbnail = decode(md5('{n}'), 'hex') WHERE user_id = 1 + {n} % 200"),
            6 if worker == 0 && n % 60 == 6 => "BEGIN; TRUNCATE analytics.daily_uploads;
                 INSERT INTO analytics.daily_uploads SELECT date '2026-10-01' + i, i FROM generate_series(0, 9) i;
                 COMMIT;"
                .to_string(),
            _ => format!("UPDATE comments SET body = body || '!' WHERE post_id = {post}"),
        };
        client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    n as u64
}

/// Stops the writes, records the server's clock and every table's digest, and lets the writes go on.
async fn instant(site: &Site, gate: &RwLock<()>) -> (DateTime<Utc>, BTreeMap<String, String>) {
    let _paused = gate.write().await;
    let client = dr::pg::connect(&site.db.conninfo(DATABASE)).await.unwrap();
    let time: DateTime<Utc> = client.query_one("SELECT clock_timestamp()", &[]).await.unwrap().get(0);
    (time, common::fingerprint(&site.db, DATABASE).await)
}

fn split_sequences(fingerprint: &BTreeMap<String, String>) -> (BTreeMap<String, String>, BTreeMap<String, i64>) {
    let mut tables = BTreeMap::new();
    let mut sequences = BTreeMap::new();
    for (name, value) in fingerprint {
        match name.strip_prefix("sequence ") {
            Some(sequence) => {
                sequences.insert(sequence.to_string(), value.split('/').next().unwrap().parse().unwrap());
            }
            None => {
                tables.insert(name.clone(), value.clone());
            }
        }
    }
    (tables, sequences)
}

/// Restores `to` into a new database and checks it against `expected`: every table and large object equal;
/// every sequence at least where it was (sequences are recorded after each segment, never behind).
async fn assert_restores(site: &Site, to: &str, database: &str, expected: &BTreeMap<String, String>) {
    let into = format!("app={}", site.db.url(database));
    let run = site.dr(&["restore", "--to", to, "--only", "app", "--into", &into, "--json"]).ok();
    let report = run.json();
    let replay = &report["sources"][0]["point_in_time"];
    assert!(replay["transactions"].as_u64().unwrap() > 0, "the changes after the base are replayed: {report}");
    let restored = common::fingerprint(&site.db, database).await;
    let (tables, sequences) = split_sequences(&restored);
    let (expected_tables, expected_sequences) = split_sequences(expected);
    assert_eq!(tables, expected_tables, "restore --to {to}: {replay}");
    for (name, value) in expected_sequences {
        assert!(sequences[&name] >= value, "sequence {name}: {} < {value} (--to {to})", sequences[&name]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_to_any_instant_under_load_across_a_killed_capture() {
    let site = Arc::new(logical_site("").await);
    let mut capture = Capture::start(&site, "capture-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !generation_exists(&site) {
        assert!(Instant::now() < deadline, "no stream generation: {}", capture.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(capture.log().contains("left out of the change stream"), "tables without identity are named");
    let base = site.backup();

    let gate = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> =
        (0..2).map(|w| tokio::spawn(write_load(site.clone(), w, gate.clone(), stop.clone()))).collect();
    let mut instants = Vec::new();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    instants.push(instant(&site, &gate).await);

    // Killed mid-segment: what it had read but not stored is read again by the next capture.
    tokio::time::sleep(Duration::from_millis(700)).await;
    capture.child.kill().unwrap();
    capture.child.wait().unwrap();
    instants.push(instant(&site, &gate).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    capture = Capture::start(&site, "capture-2");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    instants.push(instant(&site, &gate).await);

    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for worker in workers {
        writes += worker.await.unwrap();
    }
    assert!(writes > 100, "the load wrote {writes} transactions");
    let (last, _) = instants.last().unwrap().clone();
    wait_for_coverage(&site, last, &capture).await;
    assert!(!capture.log().contains("new change stream generation"), "the second capture resumed the stream");

    for (i, (time, fingerprint)) in instants.iter().enumerate() {
        assert_restores(&site, &time.to_rfc3339(), &format!("pitr_{i}"), fingerprint).await;
    }

    // `latest`: everything stored, which is everything once the stream passed the end of the load.
    let final_state = common::fingerprint(&site.db, DATABASE).await;
    wait_for_coverage(&site, Utc::now(), &capture).await;
    assert_restores(&site, "latest", "pitr_latest", &final_state).await;

    // A snapshot named by its id is that snapshot, without the changes after it.
    let into = format!("app={}", site.db.url("by_id"));
    site.dr(&["restore", "--to", &base, "--only", "app", "--into", &into]).ok();

    // A time the stream does not reach yet is refused, naming how far it reaches.
    let future = (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let into = format!("app={}", site.db.url("too_late"));
    let error = site.dr(&["restore", "--to", &future, "--only", "app", "--into", &into]).fails(1).error();
    assert!(error.contains("stored up to"), "{error}");

    // Switching capture off leaves no slot behind: dr check points at the one left, dr stream drop removes it.
    common::interrupt(capture.child);
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    std::fs::write(&site.config_path, text.replace("continuous = true\n", "")).unwrap();
    let checked = site.dr(&["check"]).fails(1);
    assert!(checked.all_output().contains("dr stream drop app"), "{}", checked.all_output());
    let dropped = site.dr(&["stream", "drop", "app"]).ok();
    assert!(dropped.stdout.contains("dropped replication slot"), "{}", dropped.stdout);
    let slots = common::query_strings(&site.db, "postgres", "SELECT slot_name::text FROM pg_replication_slots").await;
    assert!(slots.is_empty(), "{slots:?}");
    site.dr(&["check"]).ok();
}

async fn server_now(site: &Site) -> DateTime<Utc> {
    let client = dr::pg::connect(&site.db.conninfo(DATABASE)).await.unwrap();
    client.query_one("SELECT clock_timestamp()", &[]).await.unwrap().get(0)
}

/// Logical decoding carries no DDL: a schema change is seen, said, and no base taken before it is carried past
/// it; the next base is, and the publication picks up a table created by the change.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_needs_a_base_taken_after_it() {
    let site = logical_site("").await;
    let capture = Capture::start(&site, "capture");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !generation_exists(&site) {
        assert!(Instant::now() < deadline, "no stream generation: {}", capture.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.backup();
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'before the change' WHERE id = 1").await;
    let before = server_now(&site).await;
    let at_before = common::fingerprint(&site.db, DATABASE).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    common::sql(
        &site.db,
        DATABASE,
        "ALTER TABLE posts ADD COLUMN location text;
         CREATE TABLE stories (id bigserial PRIMARY KEY, body text NOT NULL);
         UPDATE posts SET location = 'Paris' WHERE id = 1;",
    )
    .await;
    let after = server_now(&site).await;
    wait_for_coverage(&site, after, &capture).await;
    assert!(capture.log().contains("the schema changed"), "{}", capture.log());

    assert_restores(&site, &before.to_rfc3339(), "before_change", &at_before).await;
    let into = format!("app={}", site.db.url("after_change"));
    let error = site.dr(&["restore", "--to", &after.to_rfc3339(), "--only", "app", "--into", &into]).fails(1).error();
    assert!(error.contains("schema changed"), "{error}");

    site.backup();
    common::sql(&site.db, DATABASE, "INSERT INTO stories (body) VALUES ('after the new base')").await;
    let later = server_now(&site).await;
    let at_later = common::fingerprint(&site.db, DATABASE).await;
    wait_for_coverage(&site, later, &capture).await;
    assert_restores(&site, &later.to_rfc3339(), "after_new_base", &at_later).await;

    common::interrupt(capture.child);
    site.dr(&["stream", "drop", "app"]).ok();
}

/// A capture of a fresh stream, and its first base backup.
async fn stream_with_base(site: &Site, name: &str) -> Capture {
    let capture = Capture::start(site, name);
    wait_for_generations(site, 1, &capture).await;
    site.backup();
    capture
}

async fn wait_for_generations(site: &Site, count: usize, capture: &Capture) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir(site.repo.join("streams/app"))
            .map(|entries| entries.filter(|e| e.as_ref().unwrap().path().join("generation.json").exists()).count())
            .unwrap_or(0);
        if found >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{count} generations never appeared: {}", capture.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prune keeps every segment a kept base needs and nothing else: a generation no kept snapshot is a base of goes
/// whole, the segments before the oldest kept base go, and the kept base still restores to the latest change.
#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_what_the_kept_bases_need_and_nothing_else() {
    let site = logical_site("").await;
    let first = Capture::start(&site, "capture-1");
    wait_for_generations(&site, 1, &first).await;
    site.backup();
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'first stream' WHERE id = 1").await;
    wait_for_coverage(&site, server_now(&site).await, &first).await;
    common::interrupt(first.child);
    site.dr(&["stream", "drop", "app"]).ok();

    let second = Capture::start(&site, "capture-2");
    wait_for_generations(&site, 2, &second).await;
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'before the second base' WHERE id = 2").await;
    wait_for_coverage(&site, server_now(&site).await, &second).await;
    site.backup();
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'after the second base' WHERE id = 3").await;
    let final_state = common::fingerprint(&site.db, DATABASE).await;
    wait_for_coverage(&site, server_now(&site).await, &second).await;

    let mut generations: Vec<_> = std::fs::read_dir(site.repo.join("streams/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    generations.sort();
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    std::fs::write(&site.config_path, format!("{text}\n[retention]\nkeep_last = 1\n")).unwrap();
    let report = site.dr(&["prune", "--json"]).ok().json();
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{report}");
    assert_eq!(
        (streams[0]["generation"].as_str().unwrap(), streams[0]["whole"].as_bool()),
        (&*generations[0], Some(true))
    );
    assert_eq!(
        (streams[1]["generation"].as_str().unwrap(), streams[1]["whole"].as_bool()),
        (&*generations[1], Some(false))
    );
    assert!(!site.repo.join("streams/app").join(&generations[0]).exists(), "the first generation is gone");
    assert!(site.repo.join("streams/app").join(&generations[1]).join("pruned.json").exists());

    assert_restores(&site, "latest", "after_prune", &final_state).await;
    common::interrupt(second.child);
    site.dr(&["stream", "drop", "app"]).ok();
}

/// A drill of a base replays the stream on top of the checked base (every change on exactly one row), inside
/// the RTO, and reports the stream's RPO; `dr verify --all` reads every segment, and a flipped byte in one is
/// named by verify and stops a restore that needs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_drill_replays_the_stream_and_verify_reads_every_segment() {
    let site = logical_site("").await;
    let capture = stream_with_base(&site, "capture").await;
    common::sql(
        &site.db,
        DATABASE,
        "UPDATE users SET bio = 'after the base' WHERE id <= 10;
         INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'new'), (2, 2, 'newer');
         DELETE FROM likes WHERE post_id = 3;",
    )
    .await;
    wait_for_coverage(&site, server_now(&site).await, &capture).await;

    let mut command = site.command(&["drill", "--json"]);
    command.env("TMPDIR", site.path(""));
    let record = common::run(&mut command).ok().json();
    assert_eq!(record["passed"], true, "{record:#}");
    let check = record["checks"].as_array().unwrap().iter().find(|c| c["name"] == "point in time app").unwrap();
    assert_eq!(check["status"], "pass", "{check}");
    assert!(check["detail"].as_str().unwrap().contains("exactly one row"), "{check}");
    assert!(record["stream"]["transactions"].as_u64().unwrap() >= 1, "{record:#}");
    let rpo = record["rpo"]["seconds"].as_f64().unwrap();
    assert!(rpo < 30.0, "the RPO is the stream's, seconds old: {rpo}");
    let phases: Vec<&str> = record["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(phases.contains(&"replay"), "{phases:?}");

    // `dr recover` to latest: its restore step replays the stream too, and the report's RPO is the replay's.
    let runbook = site.path("runbook.toml");
    let into = site.db.url("recovered");
    let text = format!(
        "name = \"database\"\n\n[[step]]\nname = \"restore\"\nrestore = {{ source = \"app\", into = \"{into}\" }}\n"
    );
    std::fs::write(&runbook, text).unwrap();
    let mut command = site.command(&["recover", "--yes", "--json", "--runbook"]);
    command.arg(&runbook).stdin(Stdio::null());
    let recovery = common::run(&mut command).ok().json();
    let report = &recovery["report"];
    assert!(report["recovered_to"].is_string(), "{recovery:#}");
    assert!(report["data_age_seconds"].as_f64().unwrap() < 60.0, "{recovery:#}");
    let changed =
        common::query_strings(&site.db, "recovered", "SELECT count(*)::text FROM users WHERE bio = 'after the base'")
            .await;
    assert_eq!(changed, ["10"]);

    // The weekly report shows what the stream stored and how far it reaches.
    let report = site.dr(&["report", "--json"]).ok().json();
    let stream = &report["streams"][0];
    assert_eq!(stream["source"], "app", "{report:#}");
    assert!(stream["transactions"].as_u64().unwrap() >= 1 && stream["age_seconds"].as_f64().unwrap() < 60.0);
    let markdown = site.dr(&["report"]).ok().stdout;
    assert!(markdown.contains("## Change streams"), "{markdown}");

    let verified = site.dr(&["verify", "--all", "--json"]).ok().json();
    let streams = verified["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1);
    assert!(streams[0]["segments"].as_u64().unwrap() >= 1 && streams[0]["errors"].as_array().unwrap().is_empty());

    common::interrupt(capture.child);
    let data = walkdir::WalkDir::new(site.repo.join("streams"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.to_string_lossy().ends_with(".seg.zst.age") && std::fs::metadata(p).unwrap().len() > 200)
        .expect("a segment with changes");
    common::flip_byte(&data, std::fs::metadata(&data).unwrap().len() as i64 / 2);
    let name = data.file_name().unwrap().to_string_lossy().into_owned();
    let error = site.dr(&["verify", "--all"]).fails(1).error();
    assert!(error.contains("change stream") && error.contains(&name), "{error}");
    let into = format!("app={}", site.db.url("from_damaged"));
    let error = site.dr(&["restore", "--to", "latest", "--only", "app", "--into", &into]).fails(1).error();
    assert!(error.contains(&name), "{error}");
    site.dr(&["stream", "drop", "app"]).ok();
}

/// Faults on the database side: the capture's connection dropped, then the server crashing (a backend killed
/// with -9 makes PostgreSQL restart every process and recover): the capture resumes the same stream, and a
/// restore to an instant after both has exactly that instant's data.
#[tokio::test(flavor = "multi_thread")]
async fn the_stream_survives_a_dropped_connection_and_a_server_crash() {
    let site = logical_site("").await;
    let capture = stream_with_base(&site, "capture").await;
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'before the faults' WHERE id <= 5").await;
    common::sql(
        &site.db,
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dr capture'",
    )
    .await;
    common::sql(&site.db, DATABASE, "UPDATE users SET bio = 'after the dropped connection' WHERE id <= 3").await;

    let victim = dr::pg::connect(&site.db.conninfo(DATABASE)).await.unwrap();
    let canary = dr::pg::connect(&site.db.conninfo(DATABASE)).await.unwrap();
    let pid: i32 = victim.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The crash restart ends every session: once the canary's has ended, a new connection is on the other side.
    let deadline = Instant::now() + Duration::from_secs(30);
    while canary.batch_execute("SELECT 1").await.is_ok() {
        assert!(Instant::now() < deadline, "the server did not restart after a backend was killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = loop {
        // The server refuses connections while it recovers.
        match dr::pg::connect(&site.db.conninfo(DATABASE)).await {
            Ok(client) if client.batch_execute("SELECT 1").await.is_ok() => break client,
            _ => {
                assert!(Instant::now() < deadline, "the server never came back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    client.batch_execute("UPDATE users SET bio = 'after the crash' WHERE id = 1").await.unwrap();
    let time = server_now(&site).await;
    let expected = common::fingerprint(&site.db, DATABASE).await;
    wait_for_coverage(&site, time, &capture).await;
    let log = capture.log();
    assert!(log.contains("change capture failed"), "the faults were seen: {log}");
    assert_eq!(log.matches("new change stream generation").count(), 1, "the same stream resumed: {log}");

    assert_restores(&site, &time.to_rfc3339(), "after_faults", &expected).await;

    // A slot lost for good (dropped here between two polls; invalidated by max_slot_wal_keep_size in life): the
    // gap is detected and said, a new generation starts, and `latest` from the old base says where it ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = client
            .query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active", &[])
            .await
            .unwrap();
        if !dropped.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never idle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_generations(&site, 2, &capture).await;
    assert!(capture.log().contains("is gone"), "{}", capture.log());
    let into = format!("app={}", site.db.url("across_the_gap"));
    let run = site.dr(&["restore", "--to", "latest", "--only", "app", "--into", &into]).ok();
    assert!(run.all_output().contains("needs a base backup taken after it"), "{}", run.all_output());
    common::interrupt(capture.child);
    site.dr(&["stream", "drop", "app"]).ok();
}
