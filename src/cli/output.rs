//! Logging set-up and the rendering of errors.

use std::io::{self, IsTerminal, Write};

use dr::Error;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::progress::Display;

/// Logs go to stderr: `default_level` (info, or warn for commands that narrate on their own), `-v` debug, `-vv` trace, `-q` errors only; `RUST_LOG` overrides.
/// While progress bars are on screen, log lines are printed above them instead of through them.
pub fn init_logging(verbose: u8, quiet: bool, default_level: &str, display: &Display, json: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => default_level,
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Other crates (the AWS SDK's credential chain in particular) speak only of errors: dr reports what
    // matters itself, once, as its own error.
    let others = if verbose >= 2 { "debug" } else { "error" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{others},dr={level}")));
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(false)
            .try_init();
        return;
    }
    let ansi = io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter { display: display.clone() })
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

#[derive(Clone)]
struct LogWriter {
    display: Display,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { display: self.display.clone(), buffer: Vec::new() }
    }
}

/// Collects one event and prints it in one go, suspending the progress bars around it.
struct LineWriter {
    display: Display,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.display.suspend(|| {
            let _ = io::stderr().write_all(&buffer);
        });
    }
}

/// Prints an error the way every command ends on failure: the message, then what to do.
pub fn print_error(error: &Error) {
    let mut stderr = io::stderr().lock();
    let label = if error.is_warning() { "warning" } else { "error" };
    let _ = writeln!(stderr, "{label}: {error}");
    if let Some(hint) = error.hint() {
        let _ = writeln!(stderr, "hint: {hint}");
    }
}

/// Prints a command-line error found by clap in the same shape: clap's `error:` message with its usage and tips,
/// then the hint every usage error gets, in place of clap's closing "For more information" line.
pub fn print_usage_error(error: &clap::Error) {
    let rendered =
        if io::stderr().is_terminal() { error.render().ansi().to_string() } else { error.render().to_string() };
    let kept: Vec<&str> = rendered.lines().filter(|l| !l.contains("For more information, try")).collect();
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{}", kept.join("\n").trim_end());
    if let Some(hint) = Error::Usage(String::new()).hint() {
        let _ = writeln!(stderr, "hint: {hint}");
    }
}

/// Writes a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> dr::Result<()> {
    let mut stdout = io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value).map_err(|e| Error::io("writing JSON", e.into()))?;
    writeln!(stdout).map_err(|e| Error::io("writing JSON", e))
}
