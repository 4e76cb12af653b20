//! `dr report` against crafted repositories: manifests committed at chosen times (with their private halves
//! sealed to a generated key) and drill records saved through the library, then the real binary in all three
//! formats, whose figures must match the crafted records exactly. No PostgreSQL needed.
//!
//! `the_docs_sample_is_what_the_report_renders` renders docs/report-sample.{md,html} and compares (a snapshot
//! test; `DR_UPDATE_SNAPSHOTS=1` rewrites them, see docs/render-report-sample.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, TimeZone, Utc};
use common::{Run, config_command, free_port, run};
use dr::repo::attempt_record::{ATTEMPT_RECORD_FORMAT, AttemptOutcome, AttemptRecord};
use dr::repo::drill_record::{
    Check, CheckStatus, DRILL_RECORD_FORMAT, DrillRecord, Measure, Phase, ScratchDescription, SourceSize, Tools,
};
use dr::repo::manifest::{
    FilesDetails, Manifest, ObjectEntry, ObjectRole, PostgresDetails, PrivateManifest, SourceDetails, SourceEntry,
    SourceKind, TableRows,
};
use dr::{KeyPair, Recipients, Repository, SnapshotId, units};

const MIB: u64 = 1 << 20;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// A local repository with a key pair and a dr.toml, filled through the library.
struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
    recipients: Recipients,
    recipient: String,
    identity: PathBuf,
    config: PathBuf,
}

/// What varies between crafted snapshots.
#[derive(Clone, Copy)]
struct Shot {
    at: DateTime<Utc>,
    app_stored: u64,
    app_plain: u64,
    uploads_stored: u64,
    uploads_plain: u64,
    posts_rows: i64,
}

impl Shot {
    fn new(at: DateTime<Utc>, stored: u64) -> Shot {
        Shot {
            at,
            app_stored: stored,
            app_plain: 50 * MIB,
            uploads_stored: stored / 2,
            uploads_plain: 10 * MIB,
            posts_rows: 1000,
        }
    }

    fn stored(&self) -> u64 {
        self.app_stored + self.uploads_stored
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::Builder::new().prefix("dr-report-").tempdir().unwrap();
        let key = KeyPair::generate();
        let identity = dir.path().join("identity.txt");
        key.write_identity_file(&identity).unwrap();
        let url = format!("file://{}", dir.path().join("repo").display());
        let repo = Repository::init(Arc::from(dr::store::open_local(&url).unwrap())).await.unwrap();
        let fixture = Fixture {
            recipients: Recipients::parse(&[key.recipient()]).unwrap(),
            recipient: key.recipient(),
            config: dir.path().join("dr.toml"),
            identity,
            repo,
            dir,
        };
        fixture.write_config(&format!("identity_file = \"{}\"", fixture.identity.display()));
        fixture
    }

    /// dr.toml with `identity_line` in `[encryption]` and objectives of 24h RPO and 1h RTO.
    fn write_config(&self, identity_line: &str) {
        self.write_config_with(identity_line, "rpo = \"24h\"\nrto = \"1h\"\n", "");
    }

    /// dr.toml with `identity_line` in `[encryption]`, `objectives` in `[objectives]`, and `extra` appended.
    fn write_config_with(&self, identity_line: &str, objectives: &str, extra: &str) {
        let text = format!(
            "[repository]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\n{identity_line}\n\n\
             [objectives]\n{objectives}\n{extra}",
            self.dir.path().join("repo").display(),
            self.recipient
        );
        fs::write(&self.config, text).unwrap();
    }

    fn identity_line(&self) -> String {
        format!("identity_file = \"{}\"", self.identity.display())
    }

    /// Records a backup attempt that started at `at` and committed `snapshot`.
    async fn committed_attempt(&self, at: DateTime<Utc>, snapshot: &Manifest) {
        let record = AttemptRecord {
            format: ATTEMPT_RECORD_FORMAT,
            id: id_at(at - TimeDelta::seconds(1)),
            started_at: at - TimeDelta::seconds(1),
            finished_at: Some(snapshot.finished_at),
            outcome: AttemptOutcome::Ok,
            snapshot: Some(snapshot.id.clone()),
            recovery_point: snapshot.consistent_at(),
            reason: None,
            only: Vec::new(),
            hostname: "web1".into(),
            dr_version: "0.1.0".into(),
        };
        self.repo.save_attempt(&self.recipients, &record).await.unwrap();
    }

    /// Records a backup attempt that started at `at` and failed with `reason`.
    async fn failed_attempt(&self, at: DateTime<Utc>, reason: &str) {
        let record = AttemptRecord {
            format: ATTEMPT_RECORD_FORMAT,
            id: id_at(at),
            started_at: at,
            finished_at: Some(at + TimeDelta::seconds(3)),
            outcome: AttemptOutcome::Failed,
            snapshot: None,
            recovery_point: None,
            reason: Some(reason.into()),
            only: Vec::new(),
            hostname: "web1".into(),
            dr_version: "0.1.0".into(),
        };
        self.repo.save_attempt(&self.recipients, &record).await.unwrap();
    }

    async fn snapshot(&self, shot: Shot) -> Manifest {
        let id = id_at(shot.at);
        let object = |source: &str, role: ObjectRole, stored_size: u64, plain_size: u64| ObjectEntry {
            key: Repository::object_key(&id, source, role),
            role,
            stored_size,
            sha256: "0".repeat(64),
            plain_size,
        };
        let private = PrivateManifest {
            sources: vec![
                SourceDetails::Postgres(PostgresDetails {
                    name: "app".into(),
                    database: "shop".into(),
                    server_version: "16.4".into(),
                    server_version_num: 160004,
                    encoding: "UTF8".into(),
                    collate: "C.UTF-8".into(),
                    ctype: "C.UTF-8".into(),
                    pg_dump_version: "16.4".into(),
                    tables: vec![
                        TableRows { schema: "public".into(), table: "posts".into(), rows: shot.posts_rows },
                        TableRows { schema: "public".into(), table: "users".into(), rows: 120 },
                    ],
                    globals: None,
                    database_properties: None,
                    stream: None,
                }),
                SourceDetails::Files(FilesDetails {
                    name: "uploads".into(),
                    root: "/srv/uploads".into(),
                    files: 40,
                    directories: 3,
                    symlinks: 0,
                    bytes: shot.uploads_plain,
                    skipped: Vec::new(),
                    incomplete: Vec::new(),
                    replaced: Vec::new(),
                }),
            ],
        };
        let manifest = Manifest {
            format: 1,
            id: id.clone(),
            started_at: shot.at,
            finished_at: shot.at + TimeDelta::minutes(10),
            hostname: "web1".into(),
            dr_version: "0.1.0".into(),
            sources: vec![
                SourceEntry {
                    format: None,
                    chunked: None,
                    name: "app".into(),
                    kind: SourceKind::Postgres,
                    // The recovery point is the oldest source's consistent_at: 5 seconds after the start.
                    consistent_at: shot.at + TimeDelta::seconds(5),
                    objects: vec![object("app", ObjectRole::PgDump, shot.app_stored, shot.app_plain)],
                    incomplete_files: 0,
                },
                SourceEntry {
                    format: None,
                    chunked: None,
                    name: "uploads".into(),
                    kind: SourceKind::Files,
                    consistent_at: shot.at + TimeDelta::seconds(60),
                    objects: vec![object("uploads", ObjectRole::Tar, shot.uploads_stored, shot.uploads_plain)],
                    incomplete_files: 0,
                },
            ],
            private: Repository::seal_private(&self.recipients, &private).unwrap(),
        };
        self.repo.commit(&manifest).await.unwrap();
        manifest
    }

    async fn drill(&self, record: &DrillRecord) {
        self.repo.save_drill(&self.recipients, record).await.unwrap();
    }

    fn report(&self, args: &[&str]) -> Run {
        let mut command = config_command(&self.config, &["report"]);
        command.args(args);
        run(&mut command)
    }
}

/// The id a snapshot or drill started at `at` gets, with a suffix derived from the time instead of random bits,
/// so the docs sample is the same on every run.
fn id_at(at: DateTime<Utc>) -> SnapshotId {
    let suffix = (at.timestamp() as u32).wrapping_mul(2_654_435_761) >> 18;
    format!("{}-{suffix:06x}", at.format("%Y%m%dT%H%M%SZ")).parse().unwrap()
}

fn check(name: &str, status: CheckStatus, detail: &str, problems: &[&str]) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        problems: problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn passing_checks() -> Vec<Check> {
    vec![
        check("objects", CheckStatus::Pass, "4 objects read back whole", &[]),
        check("row counts app", CheckStatus::Pass, "2 tables match the manifest", &[]),
        check("files uploads", CheckStatus::Pass, "40 files match the index", &[]),
    ]
}

/// What one crafted drill did.
struct Outcome {
    rto: Option<f64>,
    rpo: Option<f64>,
    checks: Vec<Check>,
    reason: Option<&'static str>,
    anomalies: Vec<&'static str>,
}

fn drill_record(started_at: DateTime<Utc>, snapshot: Option<&Manifest>, outcome: Outcome) -> DrillRecord {
    let passed = snapshot.is_some() && outcome.checks.iter().all(|c| c.status != CheckStatus::Fail);
    let rto = Measure { seconds: outcome.rto, objective_seconds: Some(3600.0) };
    let rpo = Measure { seconds: outcome.rpo, objective_seconds: Some(86_400.0) };
    DrillRecord {
        format: DRILL_RECORD_FORMAT,
        id: id_at(started_at),
        snapshot: snapshot.map(|m| m.id.clone()),
        started_at,
        finished_at: started_at + TimeDelta::seconds(outcome.rto.unwrap_or(30.0) as i64 + 20),
        hostname: "drill-host".into(),
        dr_version: "0.1.0".into(),
        passed,
        succeeded: passed && rto.met() != Some(false) && rpo.met() != Some(false),
        reason: outcome.reason.map(String::from),
        snapshot_consistent_at: snapshot.map(|m| m.sources[0].consistent_at),
        scratch: ScratchDescription {
            kind: "embedded".into(),
            location: "/tmp/dr-scratch".into(),
            server_version: None,
            start_seconds: 4.0,
        },
        phases: outcome
            .rto
            .map_or(Vec::new(), |rto| vec![Phase { name: "download+decrypt+pg_restore".into(), seconds: rto }]),
        checks: outcome.checks,
        rpo,
        rto,
        sizes: snapshot.map_or(Vec::new(), |m| m.sources.iter().map(SourceSize::from).collect()),
        anomalies: outcome.anomalies.into_iter().map(String::from).collect(),
        tools: Tools::default(),
        stream: None,
    }
}

/// The crafted week, relative to the test's start `t` (the report's window is the last 7 days):
///
/// ```text
/// snapshots  S0 t-9d   Sb t-7d6h | S1 t-6d6h  S2 t-5d6h  S3 t-3d18h  S4 t-3d  S5 t-2d  S6 t-1d  S7 t-2h
///                                  gaps: 24h, 24h, 36h (the worst), 18h, 24h, 24h, 22h, then 2h to now
///                                  S5: uploads shrank 10 MiB -> 4 MiB; S6: posts 1000 -> 400 rows
/// drills     D0 t-10d (failed)    | D1 t-6d ok   D2 t-4d check failed   D3 t-23h RTO missed   D4 t-12h no snapshot
/// ```
struct Week {
    fixture: Fixture,
    t: DateTime<Utc>,
    shots: Vec<Shot>,
    manifests: Vec<Manifest>,
    drills: Vec<DrillRecord>,
}

const FAILED_DETAIL: &str = "2 tables differ: <b>& counts";
const FAILED_PROBLEMS: [&str; 2] =
    ["public.posts: 1000 in the manifest, 998 restored", "public.users: 120 in the manifest, 0 restored"];

async fn week() -> Week {
    let fixture = Fixture::new().await;
    let t = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let ago = |seconds: i64| t - TimeDelta::seconds(seconds);
    let mut shots: Vec<Shot> = [
        (9 * DAY, 3 * MIB),
        (7 * DAY + 6 * HOUR, 3 * MIB + 1),
        (6 * DAY + 6 * HOUR, 3 * MIB + 2),
        (5 * DAY + 6 * HOUR, 3 * MIB + 3),
        (3 * DAY + 18 * HOUR, 3 * MIB + 4),
        (3 * DAY, 3 * MIB + 5),
        (2 * DAY, 3 * MIB + 6),
        (DAY, 3 * MIB + 7),
        (2 * HOUR, 3 * MIB + 8),
    ]
    .into_iter()
    .map(|(seconds, stored)| Shot::new(ago(seconds), stored))
    .collect();
    for shot in &mut shots[6..] {
        shot.uploads_plain = 4 * MIB;
    }
    for shot in &mut shots[7..] {
        shot.posts_rows = 400;
    }
    let mut manifests = Vec::new();
    for shot in &shots {
        manifests.push(fixture.snapshot(*shot).await);
    }

    let drills = vec![
        drill_record(
            ago(10 * DAY),
            Some(&manifests[0]),
            Outcome {
                rto: Some(100.0),
                rpo: Some(60.0),
                checks: vec![check("ancient check", CheckStatus::Fail, "long ago", &[])],
                reason: Some("1 check failed: ancient check"),
                anomalies: vec![],
            },
        ),
        drill_record(
            ago(6 * DAY),
            Some(&manifests[2]),
            Outcome {
                rto: Some(720.0),
                rpo: Some(6.0 * 3600.0),
                checks: passing_checks(),
                reason: None,
                anomalies: vec![],
            },
        ),
        drill_record(
            ago(4 * DAY),
            Some(&manifests[3]),
            Outcome {
                rto: Some(900.0),
                rpo: Some(30.0 * 3600.0),
                checks: vec![
                    check("objects", CheckStatus::Pass, "4 objects read back whole", &[]),
                    check("row counts app", CheckStatus::Fail, FAILED_DETAIL, &FAILED_PROBLEMS),
                ],
                reason: Some(
                    "check \"row counts app\" failed: restored row counts differ from the counts recorded at backup",
                ),
                anomalies: vec![],
            },
        ),
        drill_record(
            ago(23 * HOUR),
            Some(&manifests[7]),
            Outcome {
                rto: Some(5400.0),
                rpo: Some(3600.0),
                checks: passing_checks(),
                reason: Some("RTO 1h 30m exceeds the objective 1h"),
                anomalies: vec!["table app public.posts shrank by 60%: 1000 rows -> 400 rows"],
            },
        ),
        drill_record(
            ago(12 * HOUR),
            None,
            Outcome {
                rto: None,
                rpo: None,
                checks: vec![],
                reason: Some("cannot start the scratch server: initdb not found"),
                anomalies: vec![],
            },
        ),
    ];
    for drill in &drills {
        fixture.drill(drill).await;
    }
    Week { fixture, t, shots, manifests, drills }
}

/// (day, snapshots, stored bytes) of the crafted snapshots inside the default window.
fn expected_days(week: &Week) -> BTreeMap<NaiveDate, (u64, u64)> {
    let mut days = BTreeMap::new();
    for shot in &week.shots[2..] {
        let day = days.entry(shot.at.date_naive()).or_insert((0, 0));
        day.0 += 1;
        day.1 += shot.stored();
    }
    days
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_report_matches_the_records_exactly() {
    let week = week().await;
    let json = week.fixture.report(&["--format", "json"]).ok().json();
    let ids = |value: &serde_json::Value| -> Vec<String> {
        value.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
    };

    assert_eq!(json["format"], 1);
    let start = DateTime::parse_from_rfc3339(json["window"]["start"].as_str().unwrap()).unwrap();
    let end = DateTime::parse_from_rfc3339(json["window"]["end"].as_str().unwrap()).unwrap();
    assert_eq!(end - start, TimeDelta::days(7));
    assert!((end.with_timezone(&Utc) - week.t).num_seconds().abs() < 120, "the window ends now: {end}");
    assert_eq!(json["objectives"]["rpo_seconds"], 86_400.0);
    assert_eq!(json["objectives"]["rto_seconds"], 3600.0);

    // Drills: the one from ten days ago is outside the window and never mentioned.
    let drill_ids: Vec<String> = week.drills[1..].iter().map(|d| d.id.to_string()).collect();
    assert_eq!(ids(&json["drills"]), drill_ids);
    let drills = json["drills"].as_array().unwrap();
    let verdicts: Vec<&str> = drills.iter().map(|d| d["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["succeeded", "failed", "objective_missed", "failed"]);
    let rto: Vec<serde_json::Value> = drills.iter().map(|d| d["rto"]["seconds"].clone()).collect();
    assert_eq!(rto, [720.0.into(), 900.0.into(), 5400.0.into(), serde_json::Value::Null]);
    let rpo: Vec<serde_json::Value> = drills.iter().map(|d| d["rpo"]["seconds"].clone()).collect();
    assert_eq!(rpo, [21_600.0.into(), 108_000.0.into(), 3600.0.into(), serde_json::Value::Null]);
    assert_eq!(drills[0]["rto"], serde_json::json!({"seconds": 720.0, "objective_seconds": 3600.0, "met": true}));
    assert_eq!(drills[2]["rto"]["met"], false);
    assert_eq!(drills[1]["rpo"]["met"], false, "30h of data lost against a 24h RPO");
    assert_eq!(drills[3]["snapshot"], serde_json::Value::Null);
    assert_eq!(drills[1]["snapshot"], week.manifests[3].id.to_string());
    assert_eq!(
        drills[1]["reason"],
        "check \"row counts app\" failed: restored row counts differ from the counts recorded at backup"
    );
    assert_eq!((drills[1]["checks_passed"].as_u64(), drills[1]["checks_failed"].as_u64()), (Some(1), Some(1)));
    assert_eq!(drills[0]["stored_bytes"], week.manifests[2].stored_size());
    assert_eq!(
        drills[2]["anomalies"],
        serde_json::json!(["table app public.posts shrank by 60%: 1000 rows -> 400 rows"])
    );

    assert_eq!(
        json["failed_checks"],
        serde_json::json!([{
            "drill": week.drills[2].id.to_string(),
            "drill_started_at": week.drills[2].started_at,
            "name": "row counts app",
            "detail": FAILED_DETAIL,
            "problems": FAILED_PROBLEMS,
        }])
    );

    // The worst gap: 36h between S2 and S3, over the 24h objective.
    let gap = &json["worst_rpo_gap"];
    assert_eq!(gap["seconds"], 36.0 * 3600.0);
    assert_eq!(gap["from_snapshot"], week.manifests[3].id.to_string());
    assert_eq!(gap["to_snapshot"], week.manifests[4].id.to_string());
    assert_eq!(gap["from"], serde_json::json!(week.shots[3].at + TimeDelta::seconds(5)));
    assert_eq!((gap["objective_seconds"].as_f64(), gap["met"].as_bool()), (Some(86_400.0), Some(false)));
    assert_eq!(gap["basis"], "snapshots", "no attempt record in this repository");
    assert_eq!(json["failed_backups"], serde_json::json!([]));

    // Snapshots S1..S7, per day with their stored bytes; days without one are listed with zeros.
    let inside: Vec<String> = week.manifests[2..].iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids(&json["snapshots"]), inside);
    assert_eq!(json["snapshots"][0]["stored_bytes"], week.shots[2].stored());
    assert_eq!(json["snapshots"][0]["plain_bytes"], 60 * MIB);
    let expected = expected_days(&week);
    let days = json["days"].as_array().unwrap();
    assert!(days.len() == 8 || days.len() == 9, "every day the window touches: {days:?}");
    for day in days {
        let date: NaiveDate = day["date"].as_str().unwrap().parse().unwrap();
        let (count, bytes) = expected.get(&date).copied().unwrap_or((0, 0));
        assert_eq!((day["snapshots"].as_u64(), day["stored_bytes"].as_u64()), (Some(count), Some(bytes)), "{date}");
    }
    assert_eq!(days.iter().map(|d| d["snapshots"].as_u64().unwrap()).sum::<u64>(), 7);

    // Anomalies: each snapshot against the one before (S1 against Sb, outside the window, too).
    let anomalies = json["anomalies"].as_array().unwrap();
    assert_eq!(anomalies.len(), 2, "{anomalies:?}");
    assert_eq!(anomalies[0]["snapshot"], week.manifests[6].id.to_string());
    assert_eq!(anomalies[0]["previous_snapshot"], week.manifests[5].id.to_string());
    assert_eq!(
        (&anomalies[0]["subject"], &anomalies[0]["before"], &anomalies[0]["after"], &anomalies[0]["unit"]),
        (&"source uploads".into(), &(10 * MIB).into(), &(4 * MIB).into(), &"bytes".into())
    );
    assert_eq!(anomalies[0]["description"], "source uploads shrank by 60%: 10.0 MiB -> 4.0 MiB");
    assert_eq!(anomalies[1]["snapshot"], week.manifests[7].id.to_string());
    assert_eq!(anomalies[1]["subject"], "table app public.posts");
    assert_eq!((anomalies[1]["before"].as_u64(), anomalies[1]["after"].as_u64()), (Some(1000), Some(400)));
    assert_eq!(anomalies[1]["unit"], "rows");

    let summary = &json["summary"];
    assert_eq!(summary["status"], "attention");
    assert_eq!(
        summary["findings"],
        serde_json::json!([
            "2 of 4 drills failed",
            "1 drill missed the RTO objective",
            "1 drill missed the RPO objective",
            "worst RPO gap 1d 12h exceeds the objective 1d 00h",
            "2 anomalies between snapshots (a source or table shrank)",
            "1 anomaly recorded by drills",
        ])
    );
    let counts: Vec<u64> = ["drills", "drills_succeeded", "drills_objective_missed", "drills_failed", "failed_checks"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [4, 1, 1, 2, 1]);
    assert_eq!(summary["snapshots"], 7);
    assert_eq!(summary["stored_bytes"], week.shots[2..].iter().map(Shot::stored).sum::<u64>());
    assert_eq!((summary["anomalies"].as_u64(), summary["drill_anomalies"].as_u64()), (Some(2), Some(1)));
    assert_eq!(json["unreadable"], serde_json::json!([]));
    assert!(!json.to_string().contains("ancient check"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_markdown_report_states_the_same_figures() {
    let week = week().await;
    let run = week.fixture.report(&[]).ok();
    let md = &run.stdout;
    let has = |needle: &str| assert!(md.contains(needle), "missing {needle:?} in:\n{md}");

    has("# Backup report: 6 findings");
    has("- **Warning:** 2 of 4 drills failed");
    has("- **Warning:** worst RPO gap 1d 12h exceeds the objective 1d 00h");
    has("| Drills | 4: 1 succeeded, 1 missed an objective, 2 failed |");
    has("| Snapshots | 7, ");
    let row = |drill: &DrillRecord| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {} |", drill.started_at.format("%Y-%m-%d %H:%M UTC"))))
            .unwrap_or_else(|| panic!("no row for drill {} in:\n{md}", drill.id))
            .to_string()
    };
    let ok = row(&week.drills[1]);
    assert!(ok.contains("| succeeded | 12m 00s / 1h 00m | 6h 00m / 1d 00h | 3 passed |"), "{ok}");
    assert!(ok.contains(&format!("`{}`", week.manifests[2].id)), "{ok}");
    let failed = row(&week.drills[2]);
    assert!(failed.contains("| **failed** | 15m 00s / 1h 00m | 1d 06h / 1d 00h **missed** | 1 passed, **1 failed** |"));
    let slow = row(&week.drills[3]);
    assert!(slow.contains("| **objective missed** | 1h 30m / 1h 00m **missed** |"), "{slow}");
    let never = row(&week.drills[4]);
    assert!(never.contains("| none | **failed** | n/a | n/a | 0 passed |"), "{never}");
    has(&format!("- Drill `{}` (failed): cannot start the scratch server: initdb not found", week.drills[4].id));

    // Failed checks with every problem; the detail's markup is inert.
    has(&format!(
        "- **row counts app** (drill `{}`, {}): 2 tables differ: \\<b>\\& counts",
        week.drills[2].id,
        week.drills[2].started_at.format("%Y-%m-%d %H:%M UTC")
    ));
    has("  - public.posts: 1000 in the manifest, 998 restored\n  - public.users: 120 in the manifest, 0 restored");

    has(&format!(
        "**1d 12h** from snapshot `{}` (data of {}) to snapshot `{}`",
        week.manifests[3].id,
        (week.shots[3].at + TimeDelta::seconds(5)).format("%Y-%m-%d %H:%M UTC"),
        week.manifests[4].id
    ));
    has("**over the RPO objective of 1d 00h**");

    for (date, (count, bytes)) in expected_days(&week) {
        has(&format!("| {} | {count} | {} |", date.format("%a %Y-%m-%d"), units::bytes(bytes)));
    }
    has(&format!("| **Total** | **7** | **{}** |", units::bytes(week.shots[2..].iter().map(Shot::stored).sum())));
    has(&format!("- `{}` (", week.manifests[6].id));
    has("source uploads shrank by 60%: 10.0 MiB -> 4.0 MiB");
    has("table app public.posts shrank by 60%: 1000 rows -> 400 rows");
    has(&format!("- Drill `{}` (", week.drills[3].id));

    assert!(!md.contains("ancient check") && !md.contains(week.drills[0].id.as_str()), "{md}");
    assert!(!md.contains("no drill in this window"));
    assert!(!run.stderr.contains("WARN") && !run.stderr.contains("ERROR"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_html_report_is_self_contained_and_escapes_what_records_say() {
    let week = week().await;
    let out_dir = week.fixture.dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let path = out_dir.join("weekly.html");
    let run = week.fixture.report(&["--format", "html", "--output", path.to_str().unwrap()]).ok();
    assert_eq!(run.stdout, "", "with --output nothing goes to stdout");
    let names: Vec<_> = fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["weekly.html"], "written through a temporary file that was renamed");
    let html = fs::read_to_string(&path).unwrap();
    let has = |needle: &str| assert!(html.contains(needle), "missing {needle:?} in the HTML");

    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let lower = html.to_lowercase();
    for forbidden in ["<script", "<link", "<img", "<iframe", "@import", "url(", "src=", "href=", "http://", "https://"]
    {
        assert!(!lower.contains(forbidden), "the page must fetch nothing and run nothing: found {forbidden:?}");
    }
    assert_eq!(html.matches("<svg").count(), 2, "the RTO chart and the size chart");
    has("<title>Backup report: 6 findings</title>");

    has("2 tables differ: &lt;b&gt;&amp; counts");
    assert!(!html.contains("<b>&"), "a detail's markup never reaches the page");
    has("<div class=\"check-name\">row counts app</div>");
    has("<li>public.users: 120 in the manifest, 0 restored</li>");

    for drill in &week.drills[1..] {
        has(&format!("drill {} (", drill.id));
    }
    assert!(!html.contains(week.drills[0].id.as_str()) && !html.contains("ancient check"));
    has("<span class=\"badge good\">succeeded</span>");
    has("<span class=\"badge warn\">objective missed</span>");
    assert_eq!(html.matches("<span class=\"badge bad\">failed</span>").count(), 2);
    has(">objective 1h 00m</text>");
    has("<div class=\"label\">Worst RPO gap</div><div class=\"value\">1d 12h</div>");
    for (date, (count, bytes)) in expected_days(&week) {
        has(&format!(
            "<td>{}</td><td class=\"num\">{count}</td><td class=\"num\">{}</td>",
            date.format("%a %Y-%m-%d"),
            units::bytes(bytes)
        ));
    }
    has("source uploads shrank by 60%: 10.0 MiB -&gt; 4.0 MiB");

    // Run again over an existing file: replaced whole.
    fs::write(&path, "old").unwrap();
    week.fixture.report(&["--format", "html", "-o", path.to_str().unwrap()]).ok();
    assert!(fs::read_to_string(&path).unwrap().starts_with("<!DOCTYPE html>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_that_opens_mid_gap_counts_the_gap_into_it() {
    let week = week().await;
    // From t-5d: S3 is the first snapshot inside, S2 (t-5d6h) the last before.
    let since = (week.t - TimeDelta::days(5)).to_rfc3339();
    let json = week.fixture.report(&["--since", &since, "--format", "json"]).ok().json();
    assert_eq!(json["snapshots"][0]["id"], week.manifests[4].id.to_string());
    let gap = &json["worst_rpo_gap"];
    assert_eq!(gap["from_snapshot"], week.manifests[3].id.to_string(), "the last snapshot before the window");
    assert_eq!(gap["seconds"], 36.0 * 3600.0);
    // The anomaly of S5 against S4 is inside; S1..S3 are not compared any more.
    assert_eq!(json["anomalies"].as_array().unwrap().len(), 2);
    let md = week.fixture.report(&["--since", &since]).ok().stdout;
    assert!(md.contains(", taken before the window) to snapshot"), "{md}");

    // --since 36h: only S6, S7 and the last two drills.
    let json = week.fixture.report(&["--since", "36h", "--format", "json"]).ok().json();
    assert_eq!(json["summary"]["snapshots"], 2);
    assert_eq!(json["summary"]["drills"], 2);
    assert_eq!(json["worst_rpo_gap"]["seconds"], 24.0 * 3600.0, "S5 (before) to S6");
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_records_are_listed_and_the_rest_is_reported() {
    let week = week().await;
    let repo = week.fixture.dir.path().join("repo");
    fs::write(repo.join(format!("drills/{}.json.age", week.drills[1].id)), "not age").unwrap();
    fs::write(repo.join(format!("snapshots/{}.json", week.manifests[5].id)), "{").unwrap();

    let run = week.fixture.report(&["--format", "json"]).ok();
    let json = run.json();
    let unreadable = json["unreadable"].as_array().unwrap();
    let listed: Vec<(&str, &str)> =
        unreadable.iter().map(|u| (u["kind"].as_str().unwrap(), u["id"].as_str().unwrap())).collect();
    assert_eq!(listed, [("drill", week.drills[1].id.as_str()), ("snapshot", week.manifests[5].id.as_str())]);
    assert!(unreadable[1]["error"].as_str().unwrap().contains("not a valid manifest"), "{unreadable:?}");
    assert_eq!(json["summary"]["drills"], 3);
    assert_eq!(json["summary"]["snapshots"], 6);
    // S4 is no recovery point any more: the gap runs from S3 to S5.
    assert_eq!(json["worst_rpo_gap"]["seconds"], 42.0 * 3600.0);
    assert_eq!(json["worst_rpo_gap"]["to_snapshot"], week.manifests[6].id.to_string());
    let findings = json["summary"]["findings"].as_array().unwrap();
    assert!(findings.contains(&"2 records in the window cannot be read".into()), "{findings:?}");

    let md = week.fixture.report(&[]).ok().stdout;
    assert!(md.contains(&format!("- Snapshot `{}`: object snapshots/", week.manifests[5].id)), "{md}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_week_is_a_finding_not_an_error() {
    let fixture = Fixture::new().await;
    let t = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let old = fixture.snapshot(Shot::new(t - TimeDelta::days(30), MIB)).await;

    let run = fixture.report(&[]).ok();
    let md = &run.stdout;
    assert!(md.contains("- **Warning:** no drill in this window\n"), "{md}");
    assert!(md.contains("- **Warning:** no snapshot in this window\n"), "{md}");
    assert!(md.contains(&format!("from snapshot `{}`", old.id)), "the open gap since the old snapshot: {md}");
    assert!(md.contains("the end of the window"), "{md}");
    let json = fixture.report(&["--format", "json"]).ok().json();
    assert_eq!(json["drills"], serde_json::json!([]));
    assert_eq!(json["snapshots"], serde_json::json!([]));
    assert!(json["worst_rpo_gap"]["seconds"].as_f64().unwrap() >= 30.0 * 86_400.0 - 5.0);
    assert_eq!(json["worst_rpo_gap"]["to_snapshot"], serde_json::Value::Null);
    assert!(json["days"].as_array().unwrap().iter().all(|d| d["snapshots"] == 0));
    let html = fixture.report(&["--format", "html"]).ok().stdout;
    assert!(html.contains("No drill in this window"), "{html}");

    // An empty repository: nothing to measure, still a report.
    let empty = Fixture::new().await;
    let json = empty.report(&["--format", "json"]).ok().json();
    assert_eq!(json["worst_rpo_gap"], serde_json::Value::Null);
    assert!(empty.report(&[]).ok().stdout.contains("no snapshot to measure the RPO gap from"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mistakes_get_one_error_and_a_hint() {
    let fixture = Fixture::new().await;
    fixture.snapshot(Shot::new(Utc::now() - TimeDelta::hours(1), MIB)).await;

    let error = fixture.report(&["--since", "yesterday"]).user_error(2);
    assert!(error.contains("--since") && error.contains("yesterday"), "{error}");
    let error = fixture.report(&["--since", "2099-01-01T00:00:00Z"]).user_error(2);
    assert!(error.contains("not in the past"), "{error}");
    let error = fixture.report(&["--format", "pdf"]).user_error(2);
    assert!(error.contains("pdf"), "{error}");

    fixture.write_config("");
    let run = fixture.report(&[]);
    assert!(run.hint().unwrap().contains("identity_file"), "{run:?}");
    let error = run.user_error(1);
    assert!(error.contains("no identity configured") && error.contains("report"), "{error}");

    let other = fixture.dir.path().join("other-identity.txt");
    KeyPair::generate().write_identity_file(&other).unwrap();
    fixture.write_config(&format!("identity_file = \"{}\"", other.display()));
    let run = fixture.report(&[]);
    assert!(run.hint().unwrap().contains("recipients"), "{run:?}");
    let error = run.user_error(1);
    assert!(error.contains(&other.display().to_string()) && error.contains("cannot decrypt"), "{error}");

    fixture.write_config(&format!("identity_file = \"{}\"", fixture.identity.display()));
    let output = fixture.dir.path().join("no-such-dir/report.md");
    let error = fixture.report(&["--output", output.to_str().unwrap()]).fails(1).error();
    assert!(error.contains(&output.display().to_string()), "{error}");

    fs::remove_dir_all(fixture.dir.path().join("repo")).unwrap();
    let run = fixture.report(&[]);
    assert!(run.hint().unwrap().contains("dr init"), "{run:?}");
    let error = run.user_error(1);
    assert!(error.contains("not initialized"), "{error}");
}

/// A backup that cannot reach its database commits nothing, so before attempt records only the RPO gap hinted
/// at it. Now the real `dr backup` records the attempt, and the report names it with the backup's own error.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_backup_appears_in_the_report_with_its_reason() {
    let fixture = Fixture::new().await;
    let port = free_port();
    let postgres = format!("[[postgres]]\nname = \"app\"\nurl = \"postgresql://app@127.0.0.1:{port}/shop\"\n");
    fixture.write_config_with(&fixture.identity_line(), "rpo = \"24h\"\n", &postgres);

    let backup = run(&mut config_command(&fixture.config, &["backup"])).fails(1);
    let error = backup.error();
    let reason = error.strip_prefix("error: ").unwrap();
    assert!(reason.contains(&port.to_string()), "{error}");

    let json = fixture.report(&["--format", "json"]).ok().json();
    let failed = json["failed_backups"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["outcome"], "failed");
    assert_eq!(failed[0]["reason"], reason, "the backup's own error line");
    assert!(failed[0]["finished_at"].is_string());
    assert_eq!(
        (json["summary"]["backup_attempts"].as_u64(), json["summary"]["backups_failed"].as_u64()),
        (Some(1), Some(1))
    );
    let findings = json["summary"]["findings"].as_array().unwrap();
    assert_eq!(findings[0], format!("1 of 1 backup attempt did not commit (last reason: {reason})"), "{findings:?}");
    let today = json["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(today["backups_failed"], 1, "{today}");

    let md = fixture.report(&[]).ok().stdout;
    assert!(md.contains("## Failed backups"), "{md}");
    let row = md.lines().find(|l| l.contains("| **failed** |")).unwrap_or_else(|| panic!("no failed row:\n{md}"));
    assert!(row.contains(&port.to_string()), "{row}");
    let html = fixture.report(&["--format", "html"]).ok().stdout;
    assert!(html.contains("<h2>Failed backups</h2>") && html.contains(&port.to_string()), "{html}");
    assert!(html.contains("<span class=\"badge bad\">failed</span>"));

    // The attempt record is encrypted like a drill record: the reason is not readable in the repository.
    let attempts = fixture.dir.path().join("repo/attempts");
    let names: Vec<_> = fs::read_dir(&attempts).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names.len(), 1);
    let stored = fs::read_to_string(&names[0]).unwrap();
    assert!(stored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") && !stored.contains(&port.to_string()));
}

/// Hourly backups thinned by `keep_hourly` by the real `dr prune`: the snapshots left are a day apart, but the
/// attempt records remember every hour, so the worst gap stays one hour and the objective is met.
#[tokio::test(flavor = "multi_thread")]
async fn a_pruned_hourly_series_does_not_read_as_an_rpo_breach() {
    let fixture = Fixture::new().await;
    let retention = "[retention]\nkeep_hourly = 6\nkeep_daily = 7\n";
    fixture.write_config_with(&fixture.identity_line(), "rpo = \"2h\"\n", retention);
    let t = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    for hour in (1..=72).rev() {
        let at = t - TimeDelta::hours(hour);
        let manifest = fixture.snapshot(Shot::new(at, MIB)).await;
        fixture.committed_attempt(at, &manifest).await;
    }
    // A record past the 90 days of attempt history: prune expires it, and only it.
    fixture.failed_attempt(t - TimeDelta::days(100), "long ago").await;
    let prune = run(&mut config_command(&fixture.config, &["prune"])).ok();
    assert!(prune.stdout.contains("1 backup attempt record older than 90 days expired"), "{}", prune.stdout);
    assert_eq!(fs::read_dir(fixture.dir.path().join("repo/attempts")).unwrap().count(), 72);
    let left = fs::read_dir(fixture.dir.path().join("repo/snapshots")).unwrap().count();
    assert!(left < 12, "prune thinned the hourly series: {left} snapshots left");

    let json = fixture.report(&["--format", "json"]).ok().json();
    let gap = &json["worst_rpo_gap"];
    assert_eq!(gap["seconds"], 3600.0, "{gap}");
    assert_eq!(gap["met"], true, "{gap}");
    assert_eq!(gap["basis"], "attempts");
    assert_eq!(gap["removed_snapshots"].as_u64(), Some(72 - left as u64), "{gap}");
    let findings = json["summary"]["findings"].as_array().unwrap();
    assert!(!findings.iter().any(|f| f.as_str().unwrap().contains("RPO gap")), "{findings:?}");
    let md = fixture.report(&[]).ok().stdout;
    assert!(md.contains("within the RPO objective of 2h 00m"), "{md}");
    assert!(
        md.contains(&format!("including {} snapshots that retention (dr prune) has removed since", 72 - left)),
        "{md}"
    );

    // Without attempt records, the report says that it counts snapshots only (and the thinned series then
    // does read as a gap: that is what the sentence warns about).
    fs::remove_dir_all(fixture.dir.path().join("repo/attempts")).unwrap();
    let json = fixture.report(&["--format", "json"]).ok().json();
    assert_eq!(json["worst_rpo_gap"]["basis"], "snapshots");
    assert!(json["worst_rpo_gap"]["seconds"].as_f64().unwrap() > 3600.0);
    let md = fixture.report(&[]).ok().stdout;
    assert!(md.contains("only the snapshots in the repository are counted"), "{md}");
}

/// A repository whose history began two days ago: the five days of the window before that are not days without
/// backups, and no format shows them as such.
#[tokio::test(flavor = "multi_thread")]
async fn days_before_the_first_snapshot_are_not_applicable() {
    let fixture = Fixture::new().await;
    let t = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let first = t - TimeDelta::days(2);
    for at in [first, t - TimeDelta::days(1), t - TimeDelta::seconds(1)] {
        fixture.snapshot(Shot::new(at, MIB)).await;
    }
    let json = fixture.report(&["--format", "json"]).ok().json();
    let days = json["days"].as_array().unwrap();
    let mut before = 0;
    for day in days {
        let date: NaiveDate = day["date"].as_str().unwrap().parse().unwrap();
        assert_eq!(day["applicable"], date >= first.date_naive(), "{day}");
        before += usize::from(date < first.date_naive());
    }
    assert!(before >= 4, "{days:?}");
    assert!(days.iter().filter(|d| d["applicable"] == true).all(|d| d["snapshots"].as_u64() > Some(0)));

    let md = fixture.report(&[]).ok().stdout;
    assert_eq!(md.matches(" | n/a | n/a | n/a |").count(), before, "{md}");
    let empty_day = md.lines().filter(|l| !l.starts_with("| **Total**")).any(|l| l.contains("| **0** |"));
    assert!(!empty_day, "no day reads as a day without backups:\n{md}");
    let html = fixture.report(&["--format", "html"]).ok().stdout;
    assert!(!html.contains("<tr class=\"empty\">"), "no red rows");
    assert!(!html.contains(">none</text>"), "no red \"none\" under the size chart's bars");
    assert_eq!(html.matches("<tr class=\"na\"").count(), before);
}

/// A 200 ms drill against a 10-minute objective: the RTO chart scales to the bar and names the objective above
/// the scale, instead of drawing a line at the top and a bar too thin to see.
#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_rto_against_a_large_objective_has_a_visible_bar() {
    let fixture = Fixture::new().await;
    fixture.write_config_with(&fixture.identity_line(), "rpo = \"24h\"\nrto = \"10m\"\n", "");
    let t = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let manifest = fixture.snapshot(Shot::new(t - TimeDelta::hours(2), MIB)).await;
    let mut record = drill_record(
        t - TimeDelta::hours(1),
        Some(&manifest),
        Outcome { rto: Some(0.2), rpo: Some(3600.0), checks: passing_checks(), reason: None, anomalies: vec![] },
    );
    record.rto.objective_seconds = Some(600.0);
    fixture.drill(&record).await;

    let html = fixture.report(&["--format", "html"]).ok().stdout;
    let chart = html.split("<svg").nth(1).unwrap().split("</svg>").next().unwrap();
    assert!(chart.contains("aria-label=\"RTO per drill\""), "{chart}");
    let heights: Vec<f64> = chart
        .split("<rect ")
        .skip(1)
        .map(|rect| rect.split("height=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(heights.len(), 1, "{chart}");
    assert!(heights[0] >= 100.0, "the bar must be plainly visible, not a sliver: {heights:?}");
    assert!(chart.contains("200ms"), "the value is written on the bar");
    assert!(chart.contains("objective 10m 00s, above the scale"), "{chart}");
}

/// The sample in docs/: a realistic week (a snapshot every 6 hours, a drill every morning) with one failed
/// check, one RTO breach, a database that could not be reached for a day (four failed backups), an uploads
/// mount that came up empty once, and a repository that began on the 19th (so the 18th is not applicable),
/// rendered at a fixed time so the sample only changes when the report does. A snapshot test: the rendering must
/// equal docs/report-sample.{md,html} byte for byte, so the sample cannot drift from the report;
/// `DR_UPDATE_SNAPSHOTS=1` rewrites the files instead (docs/render-report-sample.sh does, and redraws the PNG).
#[tokio::test(flavor = "multi_thread")]
async fn the_docs_sample_is_what_the_report_renders() {
    let fixture = Fixture::new().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap();
    let first = Utc.with_ymd_and_hms(2026, 11, 19, 0, 15, 0).unwrap();
    let mut manifests = Vec::new();
    for n in 0..25 {
        let at = first + TimeDelta::hours(6 * n);
        // The database server could not be reached from the 21st at 06:00 to the 22nd at 06:00.
        let down =
            Utc.with_ymd_and_hms(2026, 11, 21, 6, 0, 0).unwrap()..Utc.with_ymd_and_hms(2026, 11, 22, 6, 0, 0).unwrap();
        if down.contains(&at) {
            fixture
                .failed_attempt(
                    at,
                    "database app: cannot connect to postgresql://dr@db.internal:5432/shop: Connection refused \
                     (os error 111)",
                )
                .await;
            continue;
        }
        let growth = n as u64;
        let mut shot = Shot {
            at,
            app_stored: 412 * MIB + growth * 3 * MIB,
            app_plain: 2950 * MIB + growth * 21 * MIB,
            uploads_stored: 1630 * MIB + growth * 11 * MIB,
            uploads_plain: 1652 * MIB + growth * 11 * MIB,
            posts_rows: 48_213 + growth as i64 * 97,
        };
        // The 22nd at 12:15: the uploads mount came up empty; the next backup had it back.
        if at == Utc.with_ymd_and_hms(2026, 11, 22, 12, 15, 0).unwrap() {
            shot.uploads_stored = 38 * MIB;
            shot.uploads_plain = 41 * MIB;
        }
        let manifest = fixture.snapshot(shot).await;
        fixture.committed_attempt(at, &manifest).await;
        manifests.push((at, manifest));
    }
    let latest_before = |t: DateTime<Utc>| manifests.iter().rev().find(|(at, _)| *at < t).map(|(_, m)| m).unwrap();
    for day in 19..=25 {
        let started_at = Utc.with_ymd_and_hms(2026, 11, day, 4, 0, 0).unwrap();
        let snapshot = latest_before(started_at);
        let rpo = (started_at - snapshot.sources[0].consistent_at).num_seconds() as f64;
        let rto = [2410.0, 2530.0, 2380.0, 2655.0, 2490.0, 4320.0, 2575.0][(day - 19) as usize];
        let mut checks = vec![
            check("objects", CheckStatus::Pass, "3 objects read back whole", &[]),
            check("pg_restore app", CheckStatus::Pass, "restored into dr_drill_app", &[]),
            check("row counts app", CheckStatus::Pass, "2 tables match the manifest", &[]),
            check("files uploads", CheckStatus::Pass, "40 files match the index", &[]),
            check("orders today", CheckStatus::Pass, "412 (expected > 100)", &[]),
        ];
        let mut reason = None;
        if day == 23 {
            checks[2] = check(
                "row counts app",
                CheckStatus::Fail,
                "restored row counts differ from the counts recorded at backup",
                &["public.posts: 47900 rows restored, 48892 recorded at backup"],
            );
            reason =
                Some("check \"row counts app\" failed: restored row counts differ from the counts recorded at backup");
        }
        if day == 24 {
            checks[1] = check(
                "pg_restore app",
                CheckStatus::Warn,
                "restored with 1 warning",
                &["pg_restore: warning: could not set owner of extension pg_trgm"],
            );
            reason = Some("RTO 1h 12m 00s exceeds the objective 1h 00m");
        }
        let record = drill_record(
            started_at,
            Some(snapshot),
            Outcome { rto: Some(rto), rpo: Some(rpo), checks, reason, anomalies: vec![] },
        );
        fixture.drill(&record).await;
    }

    let config = dr::Config {
        objectives: dr::config::Objectives {
            rpo: Some(std::time::Duration::from_secs(24 * 3600)),
            rto: Some(std::time::Duration::from_secs(3600)),
        },
        ..dr::Config::default()
    };
    let identities = dr::Identities::load(&fixture.identity).unwrap();
    let mut report =
        dr::report::gather(&fixture.repo, &identities, now - TimeDelta::days(7), now, &config).await.unwrap();
    // The fixture lives in a temporary directory; show the kind of location a real site has.
    report.repository = "s3://acme-backups/shop at https://s3.eu-central-1.amazonaws.com".to_string();
    for (format, name) in
        [(dr::report::Format::Markdown, "docs/report-sample.md"), (dr::report::Format::Html, "docs/report-sample.html")]
    {
        common::assert_snapshot(name, &report.render(format).unwrap());
    }
}
