//! What users of command-line tools expect of one: shell completions and a man page generated from the command
//! line itself, `dr check` listing every problem at once, `--json` on every command that reports, `dr status`
//! with ages, and a closed pipe on stdout (`dr snapshots | head -1`) ending quietly instead of in a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::process::{Command, Stdio};

use common::{FilesSite, Run, dr_command, run};

const COMMANDS: [&str; 8] = ["backup", "restore", "snapshots", "verify", "drill", "report", "recover", "check"];

#[test]
fn completions_and_the_man_page_are_generated_from_the_command_line() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef dr"), ("fish", "complete -c dr")] {
        let script = run(dr_command().args(["completions", shell])).ok().stdout;
        assert!(script.contains(marker), "{shell}:\n{script}");
        for command in COMMANDS {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
    // Options of a subcommand complete too.
    let bash = run(dr_command().args(["completions", "bash"])).ok().stdout;
    assert!(bash.contains("--into") && bash.contains("--dry-run"), "{bash}");

    let page = run(dr_command().arg("man")).ok().stdout;
    assert!(page.starts_with(".ie") || page.contains(".TH dr 1"), "not roff:\n{page}");
    assert!(page.contains(".SH SUBCOMMANDS") || page.contains(".SH COMMANDS"), "{page}");
    for command in COMMANDS {
        assert!(page.contains(&format!(".SH \"DR {}\"", command.to_uppercase())), "no section for {command}");
    }
    assert!(page.contains("\\-\\-into"), "a subcommand's options are in the page");

    let error = run(dr_command().args(["completions", "tcsh"])).user_error(2);
    assert!(error.contains("tcsh"), "{error}");
}

/// A files-only site with five planted problems: a missing files root, an identity that is not the recipients'
/// key, an invalid cron schedule, an uninitialized repository and a database nobody listens for.
#[test]
fn check_reports_every_planted_problem_at_once() {
    let site = FilesSite::new();
    let port = common::free_port();
    site.write_config(&format!(
        "{}\n[[job]]\nname = \"nightly\"\nschedule = \"every night\"\nrun = \"backup\"\n\n\
         [[postgres]]\nname = \"app\"\nurl = \"postgresql://dr@127.0.0.1:{port}/app?connect_timeout=5\"\n",
        site.encryption()
    ));
    fs::remove_dir_all(site.path("site/uploads")).unwrap();
    fs::remove_file(&site.identity).unwrap();
    dr::KeyPair::generate().write_identity_file(&site.identity).unwrap();

    let run = site.dr(&["check"]);
    let stdout = run.stdout.clone();
    let error = run.user_error(1);
    assert!(error.contains("dr check found 5 problems"), "{error}\n{stdout}");
    let problems: Vec<&str> = stdout.lines().filter(|l| l.starts_with("PROBLEM")).collect();
    assert_eq!(problems.len(), 5, "{stdout}");
    for (area, subject, text) in [
        ("schedules", "[[job]]", "\"every night\""),
        ("paths", "files \"uploads\"", "No such file or directory"),
        ("keys", "[encryption] identity_file", "cannot decrypt"),
        ("repository", "repository file://", "not initialized"),
        ("database", "postgres \"app\"", &port.to_string()),
    ] {
        let line = problems.iter().find(|l| l.contains(subject)).unwrap_or_else(|| panic!("{subject}:\n{stdout}"));
        assert!(line.contains(area) && line.contains(text), "{line}");
    }
    // Each problem comes with its own hint, on the next line.
    assert_eq!(stdout.lines().filter(|l| l.trim_start().starts_with("hint:")).count(), 5, "{stdout}");
    assert!(stdout.contains("hint: create it, or correct the `path` of this [[files]] source"), "{stdout}");
    assert!(stdout.contains("hint: run `dr init` first"), "{stdout}");
    // What is fine is said too.
    assert!(stdout.lines().any(|l| l.starts_with("ok") && l.contains("files \"config\"")), "{stdout}");

    let json = site.dr(&["check", "--json"]).fails(1).json();
    let items = json["items"].as_array().unwrap();
    assert_eq!(items.iter().filter(|i| i["ok"] == false).count(), 5, "{json}");
    assert!(items.iter().all(|i| i["ok"] == true || i["hint"].is_string()), "{json}");
}

#[test]
fn check_passes_on_a_healthy_site_and_a_broken_configuration_is_one_problem() {
    let site = FilesSite::new();
    site.dr(&["init"]).ok();
    let run = site.dr(&["check"]).ok();
    assert!(run.stdout.contains("keys") && run.stdout.contains("decrypts what is sealed"), "{}", run.stdout);
    assert!(run.stdout.lines().last().unwrap().starts_with("all ") && run.stdout.contains("checks passed"));
    assert!(!run.stdout.contains("PROBLEM"), "{}", run.stdout);

    fs::write(&site.config_path, "[repository]\nurl = 42\n").unwrap();
    let run = site.dr(&["check"]);
    let stdout = run.stdout.clone();
    let error = run.user_error(1);
    assert!(error.contains("1 problem"), "{error}");
    assert!(stdout.contains("PROBLEM  configuration dr.toml: configuration file"), "{stdout}");
}

#[test]
fn report_and_recover_print_json() {
    let site = FilesSite::new();
    site.init_and_backup();
    let report = site.dr(&["report", "--json"]).ok().json();
    assert!(report.is_object(), "{report}");
    assert_eq!(
        site.dr(&["report", "--format", "json"]).ok().json().as_object().unwrap().keys().count(),
        report.as_object().unwrap().keys().count()
    );
    site.dr(&["report", "--json", "--format", "md"]).user_error(2);

    let out = site.path("recovered");
    let runbook = site.path("files.toml");
    fs::write(
        &runbook,
        format!(
            "name = \"files\"\n[[step]]\nname = \"restore config\"\nrestore = {{ source = \"config\", into = \"{}\" }}\n",
            out.display()
        ),
    )
    .unwrap();
    let runbook = runbook.to_str().unwrap();
    let plan = site.dr(&["recover", "--runbook", runbook, "--dry-run", "--json"]).ok().json();
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(plan["steps"][0]["name"], "restore config", "{plan}");
    assert!(!out.exists(), "a dry run changes nothing");

    let done = site.dr(&["recover", "--runbook", runbook, "--yes", "--json"]).ok().json();
    assert_eq!(done["report"]["succeeded"], true, "{done}");
    assert_eq!(done["report"]["steps"][0]["outcome"], "succeeded", "{done}");
    assert!(done["state_path"].is_string() && done["report_path"].is_string(), "{done}");
    assert!(out.join("app.env").exists() || fs::read_dir(&out).unwrap().next().is_some());
}

#[test]
fn status_shows_ages_in_aligned_columns() {
    let site = FilesSite::new();
    site.init_and_backup();
    // No service listens at the default address in the tests' configuration: the repository answers.
    site.write_config(&format!("{}\n[service]\nlisten = \"127.0.0.1:{}\"\n", site.encryption(), common::free_port()));
    let run = site.dr(&["status"]).ok();
    let latest = run.stdout.lines().find(|l| l.starts_with("latest data:")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(latest.ends_with(" s ago)"), "{latest}");
    // Every value starts in the same column.
    let value_column = |line: &str| {
        let after_label = line.find(':').unwrap() + 1;
        after_label + line[after_label..].len() - line[after_label..].trim_start().len()
    };
    let columns: Vec<usize> = run.stdout.lines().take_while(|l| !l.is_empty()).map(value_column).collect();
    assert!(columns.len() >= 4 && columns.windows(2).all(|w| w[0] == w[1]), "{}", run.stdout);
}

/// Runs `command` with a stdout whose reader is already gone, as `dr ... | head -c1` ends up once head exits.
fn with_closed_stdout(command: &mut Command) -> Run {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    command.stdout(Stdio::from(writer)).stderr(Stdio::piped());
    run(command)
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let site = FilesSite::new();
    site.init_and_backup();
    for args in [
        &["snapshots"][..],
        &["snapshots", "--json"],
        &["report"],
        &["report", "--json"],
        &["verify"],
        &["completions", "bash"],
        &["man"],
    ] {
        let run = with_closed_stdout(&mut site.command(args));
        assert_eq!(run.code, 0, "dr {args:?}:\n{}", run.stderr);
        assert!(
            !run.stderr.contains("panicked") && !run.stderr.contains("Broken pipe"),
            "dr {args:?}:\n{}",
            run.stderr
        );
    }
    // A command that fails still fails with its own error.
    let run = with_closed_stdout(&mut site.command(&["snapshots", "--no-such-flag"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
}
