//! The runbook file: TOML with unknown keys refused, `${VAR}` variables, and every problem reported before the
//! first step runs (docs/runbooks.md describes the format).
//!
//! Parsing keeps the raw strings, then expands variables, then checks each step: a runbook that loads is one
//! whose every step can at least be attempted. What needs the repository (a restore's source being in the
//! snapshot) is checked by [`super::prepare`], still before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::drill::expect::{BadExpectation, Expectation};
use crate::error::{Error, Result};
use crate::pg::{ConnInfo, looks_like_conninfo, redact_target};

/// Words that make a variable's value a secret, masked wherever dr shows it.
const SECRET_WORDS: [&str; 4] = ["PASSWORD", "SECRET", "TOKEN", "KEY"];
/// An `http` step polls for this long when it sets no `within`.
const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
const MASK: &str = "***";

#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    /// Absolute path of the file.
    pub path: PathBuf,
    pub steps: Vec<Step>,
    /// Values never shown: secret variables, passwords inside connection strings. Longest first.
    secrets: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// Where the step starts in the file (its `[[step]]` table).
    pub line: Option<usize>,
    pub kind: StepKind,
    /// Per attempt; none: no limit (a `wait` or `http` step has its own).
    pub timeout: Option<Duration>,
    /// Attempts after the first failed one.
    pub retries: u32,
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// As `dr restore --only SOURCE [--into SOURCE=INTO]`.
    Restore {
        source: String,
        into: Option<String>,
    },
    /// `sh -c COMMAND` in its own process group.
    Run {
        command: String,
        env: BTreeMap<String, String>,
        dir: PathBuf,
    },
    /// GET `url` until it answers `expect_status`, for at most `within`.
    Http {
        url: String,
        expect_status: u16,
        within: Duration,
    },
    /// A query in a read-only session, its first value compared with `expect`.
    Sql {
        database: String,
        query: String,
        expect: Expectation,
    },
    Wait(Duration),
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Restore { .. } => "restore",
            StepKind::Run { .. } => "run",
            StepKind::Http { .. } => "http",
            StepKind::Sql { .. } => "sql",
            StepKind::Wait(_) => "wait",
        }
    }

    /// Whether the step changes something (a confirmation is asked for before such a run).
    pub fn is_destructive(&self) -> bool {
        matches!(self, StepKind::Restore { .. } | StepKind::Run { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Stop,
    Continue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: String,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    restore: Option<RawRestore>,
    run: Option<String>,
    http: Option<RawHttp>,
    sql: Option<RawSql>,
    wait: Option<String>,
    env: Option<BTreeMap<String, String>>,
    dir: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    on_failure: OnFailure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    source: String,
    into: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    expect_status: Option<u16>,
    within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    database: String,
    query: String,
    expect: String,
}

impl Runbook {
    /// Reads and validates `path`; `env` fills and overrides `[vars]`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Runbook> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading runbook {}", path.display()), e))?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Runbook::parse(&text, &path, env).map_err(|problems| Error::RunbookInvalid { path, problems })
    }

    /// Parses runbook text; `path` places relative directories. Every problem found is returned.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Runbook, Vec<String>> {
        let raw: RawRunbook = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| format!("line {}: ", line_of(text, s.start))).unwrap_or_default();
            vec![format!("{at}{}", e.message().trim())]
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let lookup = |name: &str| env(name).or_else(|| raw.vars.get(name).cloned());
        let mut problems = Vec::new();
        let mut steps = Vec::new();
        let mut names = BTreeSet::new();
        let mut used = BTreeSet::new();
        if raw.name.trim().is_empty() {
            problems.push("`name` is empty".to_string());
        }
        if raw.steps.is_empty() {
            problems.push("the runbook has no [[step]]".to_string());
        }
        for (index, spanned) in raw.steps.iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            let raw_step = spanned.get_ref();
            let label = format!("step {} {:?} (line {line})", index + 1, raw_step.name);
            let mut expander = Expander { lookup: &lookup, undefined: BTreeSet::new(), used: &mut used };
            if !names.insert(raw_step.name.clone()) {
                problems.push(format!("{label}: duplicate step name {:?} (names must be unique)", raw_step.name));
            }
            match build_step(raw_step, line, base, &mut expander) {
                Ok(step) if expander.undefined.is_empty() => steps.push(step),
                result => {
                    for name in &expander.undefined {
                        problems.push(format!(
                            "{label}: undefined variable ${{{name}}} (set it in [vars] or the environment)"
                        ));
                    }
                    if let Err(reasons) = result {
                        problems.extend(reasons.into_iter().map(|r| format!("{label}: {r}")));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let secrets = secrets(&used, &lookup);
        Ok(Runbook { name: raw.name, path: path.to_path_buf(), steps, secrets })
    }

    /// `text` with every secret value replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), MASK);
        }
        out
    }

    /// One line saying what a step does, with its resolved arguments and no secret.
    pub fn describe(&self, step: &Step) -> String {
        let mut text = match &step.kind {
            StepKind::Restore { source, into } => match into {
                Some(into) => format!("restore source {source:?} into {}", redact_target(into)),
                None => format!("restore source {source:?} into its configured place"),
            },
            StepKind::Run { command, env, dir } => {
                let mut text = format!("sh -c {command:?} in {}", dir.display());
                if !env.is_empty() {
                    let shown: Vec<String> = env
                        .iter()
                        .map(|(k, v)| if is_secret_name(k) { format!("{k}={MASK}") } else { format!("{k}={v}") })
                        .collect();
                    text.push_str(&format!(" with {}", shown.join(" ")));
                }
                text
            }
            StepKind::Http { url, expect_status, within } => {
                format!("GET {url} until it answers {expect_status} (within {})", humantime::format_duration(*within))
            }
            StepKind::Sql { database, query, expect } => {
                format!("on {}: {query:?} expecting {expect}", redact_target(database))
            }
            StepKind::Wait(d) => format!("wait {}", humantime::format_duration(*d)),
        };
        if let Some(timeout) = step.timeout {
            text.push_str(&format!("; timeout {}", humantime::format_duration(timeout)));
        }
        if step.retries > 0 {
            text.push_str(&format!("; {} retries", step.retries));
        }
        if step.on_failure == OnFailure::Continue {
            text.push_str("; on failure: continue");
        }
        self.mask(&text)
    }

    pub fn step_index(&self, name: &str) -> Result<usize> {
        self.steps.iter().position(|s| s.name == name).ok_or_else(|| {
            let names: Vec<String> = self.steps.iter().map(|s| format!("{:?}", s.name)).collect();
            Error::Usage(format!("runbook {:?} has no step {name:?} (its steps: {})", self.name, names.join(", ")))
        })
    }
}

fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// The values of secret variables, and passwords inside any variable holding a connection string.
fn secrets(used: &BTreeSet<String>, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut secrets = BTreeSet::new();
    for name in used {
        let Some(value) = lookup(name) else { continue };
        if is_secret_name(name) && !value.is_empty() {
            secrets.insert(value.clone());
        }
        if looks_like_conninfo(&value)
            && let Ok(conninfo) = ConnInfo::parse(&value)
            && let Some(password) = conninfo.get("password").filter(|p| !p.is_empty())
        {
            secrets.insert(password.to_string());
        }
    }
    let mut secrets: Vec<String> = secrets.into_iter().collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// One thing wrong with a step, as [`Error::RunbookInvalid`] lists it after the step's label.
#[derive(Debug, thiserror::Error)]
enum StepProblem {
    #[error("unclosed ${{ in {0:?}")]
    UnclosedVariable(String),
    #[error("bad variable name ${{{name}}} in {text:?}")]
    BadVariableName { name: String, text: String },
    #[error("{what} {text:?} is not a duration (e.g. \"30s\", \"5m\"): {source}")]
    NotADuration { what: &'static str, text: String, source: humantime::DurationError },
    #[error("`name` is empty")]
    EmptyName,
    #[error("no step kind: set exactly one of restore, run, http, sql, wait")]
    NoKind,
    #[error("{} step kinds ({}): a step has exactly one", .0.len(), .0.join(", "))]
    SeveralKinds(Vec<&'static str>),
    #[error("`env` and `dir` belong to a `run` step")]
    EnvOutsideRun,
    #[error("restore: `source` is empty")]
    EmptySource,
    #[error("http: bad url {url:?}: {source}")]
    BadUrl { url: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("sql: bad `database` connection string: {0}")]
    BadDatabase(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("sql: {0}")]
    BadExpect(#[source] BadExpectation),
}

/// Expands `${VAR}`; `$${` is a literal `${`. Undefined names are collected, not failed on at once.
struct Expander<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    undefined: BTreeSet<String>,
    used: &'a mut BTreeSet<String>,
}

impl Expander<'_> {
    fn expand(&mut self, text: &str) -> Result<String, StepProblem> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at - 1]);
                out.push_str("${");
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after.find('}').ok_or_else(|| StepProblem::UnclosedVariable(text.to_string()))?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(StepProblem::BadVariableName { name: name.to_string(), text: text.to_string() });
            }
            self.used.insert(name.to_string());
            match (self.lookup)(name) {
                Some(value) => out.push_str(&value),
                None => {
                    self.undefined.insert(name.to_string());
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_opt(&mut self, text: Option<&String>) -> Result<Option<String>, StepProblem> {
        text.map(|t| self.expand(t)).transpose()
    }
}

fn parse_duration(what: &'static str, text: &str) -> Result<Duration, StepProblem> {
    humantime::parse_duration(text.trim()).map_err(|source| StepProblem::NotADuration {
        what,
        text: text.to_string(),
        source,
    })
}

fn build_step(raw: &RawStep, line: usize, base: &Path, x: &mut Expander<'_>) -> Result<Step, Vec<StepProblem>> {
    let mut problems = Vec::new();
    let name = x.expand(&raw.name).unwrap_or_else(|e| {
        problems.push(e);
        raw.name.clone()
    });
    if name.trim().is_empty() {
        problems.push(StepProblem::EmptyName);
    }
    let kinds: Vec<&'static str> = [
        raw.restore.as_ref().map(|_| "restore"),
        raw.run.as_ref().map(|_| "run"),
        raw.http.as_ref().map(|_| "http"),
        raw.sql.as_ref().map(|_| "sql"),
        raw.wait.as_ref().map(|_| "wait"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if kinds.len() != 1 {
        problems.push(if kinds.is_empty() { StepProblem::NoKind } else { StepProblem::SeveralKinds(kinds) });
        return Err(problems);
    }
    if raw.run.is_none() && (raw.env.is_some() || raw.dir.is_some()) {
        problems.push(StepProblem::EnvOutsideRun);
    }
    let timeout = match x.expand_opt(raw.timeout.as_ref()) {
        Ok(Some(t)) => match parse_duration("timeout", &t) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(e);
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let kind = kind(raw, base, x);
    match kind {
        Ok(kind) if problems.is_empty() => {
            Ok(Step { name, line: Some(line), kind, timeout, retries: raw.retries, on_failure: raw.on_failure })
        }
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(e);
            Err(problems)
        }
    }
}

fn kind(raw: &RawStep, base: &Path, x: &mut Expander<'_>) -> Result<StepKind, StepProblem> {
    if let Some(r) = &raw.restore {
        let source = x.expand(&r.source)?;
        if source.is_empty() {
            return Err(StepProblem::EmptySource);
        }
        // A relative directory is the runbook's, like every path in it.
        let into = x.expand_opt(r.into.as_ref())?.map(|into| {
            if looks_like_conninfo(&into) || Path::new(&into).is_absolute() {
                into
            } else {
                base.join(into).display().to_string()
            }
        });
        return Ok(StepKind::Restore { source, into });
    }
    if let Some(command) = &raw.run {
        let command = x.expand(command)?;
        let mut env = BTreeMap::new();
        for (key, value) in raw.env.iter().flatten() {
            env.insert(key.clone(), x.expand(value)?);
        }
        let dir = match x.expand_opt(raw.dir.as_ref())? {
            Some(dir) => base.join(dir),
            None => base.to_path_buf(),
        };
        return Ok(StepKind::Run { command, env, dir });
    }
    if let Some(h) = &raw.http {
        let url = x.expand(&h.url)?;
        if x.undefined.is_empty() {
            reqwest::Url::parse(&url).map_err(|e| StepProblem::BadUrl { url: url.clone(), source: e.into() })?;
        }
        let within = match x.expand_opt(h.within.as_ref())? {
            Some(w) => parse_duration("within", &w)?,
            None => DEFAULT_WITHIN,
        };
        return Ok(StepKind::Http { url, expect_status: h.expect_status.unwrap_or(200), within });
    }
    if let Some(s) = &raw.sql {
        let database = x.expand(&s.database)?;
        if x.undefined.is_empty() {
            ConnInfo::parse(&database).map_err(|e| StepProblem::BadDatabase(e.into()))?;
        }
        let expect = Expectation::parse(&x.expand(&s.expect)?).map_err(StepProblem::BadExpect)?;
        return Ok(StepKind::Sql { database, query: x.expand(&s.query)?, expect });
    }
    if let Some(w) = &raw.wait {
        return Ok(StepKind::Wait(parse_duration("wait", &x.expand(w)?)?));
    }
    Err(StepProblem::NoKind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Runbook, Vec<String>> {
        let env = |name: &str| (name == "FROM_ENV").then(|| "env-value".to_string());
        Runbook::parse(text, Path::new("/srv/runbooks/site.toml"), &env)
    }

    #[test]
    fn a_runbook_with_every_kind_loads() {
        let book = parse(
            r#"
name = "site"
[vars]
DIR = "/srv/site"
DB_PASSWORD = "hunter2"
URL = "host=/tmp dbname=app password=pw1"

[[step]]
name = "db"
restore = { source = "app", into = "${URL}" }

[[step]]
name = "start"
run = "echo ${FROM_ENV} $${LITERAL} ${DB_PASSWORD}"
env = { API_TOKEN = "tok", PLAIN = "${DIR}" }
dir = "work"
timeout = "5m"
retries = 2
on_failure = "continue"

[[step]]
name = "up"
http = { url = "http://127.0.0.1:8080/health", within = "2m" }

[[step]]
name = "fresh"
sql = { database = "${URL}", query = "select 1", expect = "= 1" }

[[step]]
name = "pause"
wait = "30s"
"#,
        )
        .unwrap();
        assert_eq!(book.steps.len(), 5);
        assert_eq!(book.steps[1].line, Some(12), "the line of its [[step]] header");
        let StepKind::Run { command, env, dir } = &book.steps[1].kind else { panic!() };
        assert_eq!(command, "echo env-value ${LITERAL} hunter2");
        assert_eq!(env["PLAIN"], "/srv/site");
        assert_eq!(dir, Path::new("/srv/runbooks/work"));
        assert_eq!(book.steps[1].on_failure, OnFailure::Continue);
        let shown: Vec<String> = book.steps.iter().map(|s| book.describe(s)).collect();
        assert!(!shown.join("\n").contains("hunter2"), "{shown:?}");
        assert!(!shown.join("\n").contains("pw1"), "{shown:?}");
        assert!(!shown.join("\n").contains("tok\""), "{shown:?}");
        assert!(shown[0].contains("/app"), "{shown:?}");
        assert!(shown[1].contains("API_TOKEN=***"), "{shown:?}");
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let problems = parse(
            r#"
name = "bad"
[[step]]
name = "a"
run = "${NOPE}"

[[step]]
name = "a"
wait = "1s"

[[step]]
name = "two"
wait = "1s"
run = "true"

[[step]]
name = "check"
sql = { database = "dbname=x", query = "select 1", expect = "> lots" }
"#,
        )
        .unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("step 1 \"a\" (line 3): undefined variable ${NOPE}"), "{all}");
        assert!(all.contains("line 7): duplicate step name \"a\""), "{all}");
        assert!(all.contains("line 11): 2 step kinds (run, wait)"), "{all}");
        assert!(all.contains("line 16): sql: expect"), "{all}");
    }

    #[test]
    fn the_shipped_runbook_validates() {
        let text = include_str!("../../runbooks/full-site.toml");
        let path = Path::new("/srv/runbooks/full-site.toml");
        let env = |name: &str| (name == "TARGET_DATABASE_URL").then(|| "postgresql://app:pw@db/isntgram".to_string());
        let book = Runbook::parse(text, path, &env).unwrap();
        assert_eq!(book.steps.len(), 6);
        let problems = Runbook::parse(text, path, &|_| None).unwrap_err();
        assert!(problems.iter().all(|p| p.contains("undefined variable ${TARGET_DATABASE_URL}")), "{problems:?}");
    }

    #[test]
    fn unknown_keys_and_kinds_name_the_line() {
        let problems = parse("name = \"x\"\n[[step]]\nname = \"a\"\nshell = \"true\"\n").unwrap_err();
        assert!(problems[0].starts_with("line 4: unknown field `shell`"), "{problems:?}");
        let problems = parse("name = \"x\"\nmystery = 1\n").unwrap_err();
        assert!(problems[0].starts_with("line 2: unknown field `mystery`"), "{problems:?}");
        let problems = parse("name = \"x\"\n[[step]]\nname = \"a\"\n").unwrap_err();
        assert!(problems[0].contains("no step kind"), "{problems:?}");
        let problems = parse("name = \"x\n").unwrap_err();
        assert!(problems[0].starts_with("line 1: "), "{problems:?}");
    }
}
