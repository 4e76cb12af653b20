//! Logging set-up, the rendering of errors, and every write to stdout.
//!
//! Commands print through [`outln!`] and [`out!`] (stdout) and [`errln!`] (stderr), never `println!`: when the
//! reader of a pipe goes away (`dr snapshots | head -1`), `println!` panics, while these note it and let the
//! command finish quietly, as ripgrep does; `main` then exits with the command's own status. Any other write
//! error on stdout (a full disk behind `> file`) is reported as an error at the end.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use dr::Error;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::progress::Display;

/// Logs go to stderr: `default_level` (info, or warn for commands that narrate on their own), `-v` debug, `-vv` trace, `-q` errors only; `RUST_LOG` overrides.
/// While progress bars are on screen, log lines are printed above them instead of through them, and on a terminal
/// without timestamps.
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
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter { display: display.clone() })
        .with_ansi(ansi)
        .with_target(false);
    // Someone watching a terminal sees the lines as they come, above the progress bars: timestamps there are
    // noise. Logs that are kept (a service manager, a file, a pipe) keep them.
    if ansi {
        let _ = subscriber.without_time().try_init();
    } else {
        let _ = subscriber.try_init();
    }
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
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| Error::io("writing JSON", e.into()))?;
    text.push(b'\n');
    write_stdout(&text);
    Ok(())
}

/// Set once the reader of stdout has gone away: later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error on stdout other than a closed pipe, reported when the command ends.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes bytes to stdout (see the module's comment for what happens when that fails).
pub fn write_stdout(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe
            && let Ok(mut first) = STDOUT_ERROR.lock()
        {
            first.get_or_insert(e);
        }
    }
}

/// What [`out!`] and [`outln!`] call.
pub fn write_stdout_fmt(args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(text) => write_stdout(text.as_bytes()),
        None => write_stdout(args.to_string().as_bytes()),
    }
}

/// What [`errln!`] calls: stderr is best effort (a closed stderr has nobody left to tell).
pub fn write_stderr_fmt(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// A write error on stdout that was not a closed pipe, as the command's error.
pub fn stdout_failure() -> Option<Error> {
    let error = STDOUT_ERROR.lock().ok()?.take()?;
    Some(Error::io("writing to standard output", error))
}

/// `println!` on stdout, quiet when the pipe is closed.
macro_rules! outln {
    () => { $crate::cli::output::write_stdout(b"\n") };
    ($($arg:tt)*) => { $crate::cli::output::write_stdout_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` on stdout, quiet when the pipe is closed.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_stdout_fmt(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::write_stderr_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    /// `println!` panics when stdout's reader is gone: commands print through this module's macros instead.
    #[test]
    fn commands_print_through_the_output_layer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for banned in ["println", "print", "eprintln", "eprint"].map(|name| format!("{name}!(")) {
                    assert!(
                        !code.contains(banned.as_str()),
                        "{}:{}: use outln!/out!/errln! instead of {banned}",
                        path.display(),
                        number + 1
                    );
                }
            }
        }
    }
}
