//! Child processes (pg_dump, pg_dumpall, pg_restore) as streaming readers and writers.
//!
//! stderr is drained on its own thread while the data flows, so a chatty child can never block on a full
//! stderr pipe; its tail is quoted when the child fails. Exit status is checked at the end of the stream, so
//! a dump that dies half-way is an error, never a short but "successful" object.

use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// How much of a child's stderr is kept (the end, where the cause usually is).
const STDERR_KEEP: usize = 64 << 10;
/// Pipe size asked of the kernel: fewer wake-ups on a fast stream.
const PIPE_SIZE: i32 = 1 << 20;

/// A child that exited unsuccessfully.
#[derive(Debug, Clone)]
pub struct ChildFailure {
    pub program: String,
    pub status: String,
    pub stderr: String,
    /// What to do about it, given by the code that started the child (it knows which tool it ran, and why).
    pub hint: Option<String>,
}

impl fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({})", self.program, self.status)
    }
}

impl std::error::Error for ChildFailure {}

impl From<ChildFailure> for Error {
    fn from(failure: ChildFailure) -> Error {
        Error::child_failed(failure.program, failure.status, failure.stderr, failure.hint)
    }
}

/// The [`ChildFailure`] carried inside an `io::Error`, if that is what it is.
pub fn child_failure(e: &io::Error) -> Option<&ChildFailure> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<ChildFailure>())
}

fn spawn(mut command: Command, program: &str) -> Result<Child> {
    command.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::ToolNotFound { tool: program.to_string(), wanted: None }
        } else {
            Error::io(format!("starting {program}"), e)
        }
    })
}

fn drain_stderr(child: &mut Child) -> Option<JoinHandle<String>> {
    let mut stderr = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        if kept.len() > STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
        String::from_utf8_lossy(&kept).into_owned()
    }))
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

fn set_pipe_size(fd: &impl std::os::fd::AsFd) {
    // Only a hint: the default 64 KiB pipe still works, just with more context switches.
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
}

/// Waits for the child and the stderr thread; `Ok(stderr)` on success.
fn reap(
    program: &str,
    hint: &Option<String>,
    child: &mut Child,
    stderr: &mut Option<JoinHandle<String>>,
) -> io::Result<String> {
    let status = child.wait()?;
    let text = stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(text)
    } else {
        Err(io::Error::other(ChildFailure {
            program: program.to_string(),
            status: describe(status),
            stderr: text,
            hint: hint.clone(),
        }))
    }
}

/// A child's stdout as a `Read`; reading past the end reports the child's failure, if it failed.
pub struct ChildReader {
    program: String,
    hint: Option<String>,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
    /// stderr of a child that exited successfully (warnings), once reaped.
    warnings: Option<String>,
}

impl fmt::Debug for ChildReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildReader({})", self.program)
    }
}

impl ChildReader {
    pub fn spawn(mut command: Command, program: &str) -> Result<ChildReader> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn(command, program)?;
        let stdout = child.stdout.take().ok_or_else(|| Error::io(program, io::Error::other("no stdout")))?;
        set_pipe_size(&stdout);
        let stderr = drain_stderr(&mut child);
        Ok(ChildReader { program: program.to_string(), hint: None, child, stdout, stderr, warnings: None })
    }

    /// The hint of the [`Error::ChildFailed`] this child's failure becomes.
    pub fn with_failure_hint(mut self, hint: impl Into<String>) -> ChildReader {
        self.hint = Some(hint.into());
        self
    }

    /// The child's stderr after a successful exit (warnings worth logging); call after reading to the end.
    pub fn warnings(&self) -> &str {
        self.warnings.as_deref().unwrap_or("")
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.warnings.is_some() {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.warnings = Some(reap(&self.program, &self.hint, &mut self.child, &mut self.stderr)?);
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if self.warnings.is_none() {
            // Abandoned mid-stream (an error elsewhere): don't leave the dump running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child's stdin as a `Write` (pg_restore reading an archive from a pipe).
pub struct ChildWriter {
    program: String,
    hint: Option<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    reaped: bool,
}

impl fmt::Debug for ChildWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildWriter({})", self.program)
    }
}

impl ChildWriter {
    pub fn spawn(mut command: Command, program: &str) -> Result<ChildWriter> {
        command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = spawn(command, program)?;
        let stdin = child.stdin.take();
        if let Some(stdin) = &stdin {
            set_pipe_size(stdin);
        }
        let stderr = drain_stderr(&mut child);
        Ok(ChildWriter { program: program.to_string(), hint: None, child, stdin, stderr, reaped: false })
    }

    /// The hint of the [`Error::ChildFailed`] this child's failure becomes.
    pub fn with_failure_hint(mut self, hint: impl Into<String>) -> ChildWriter {
        self.hint = Some(hint.into());
        self
    }

    /// Closes stdin and waits; `Ok(stderr)` when the child succeeded, [`Error::ChildFailed`] otherwise.
    pub fn finish(mut self) -> Result<String> {
        drop(self.stdin.take());
        self.reaped = true;
        reap(&self.program, &self.hint, &mut self.child, &mut self.stderr).map_err(|e| match child_failure(&e) {
            Some(failure) => failure.clone().into(),
            None => Error::io(format!("waiting for {}", self.program), e),
        })
    }

    /// Kills the child without letting it see a clean end of input (its work is then rolled back).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        drop(self.stdin.take());
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Write for ChildWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write(buf),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_child_reports_its_stderr_at_the_end_of_the_stream() {
        let mut command = Command::new("sh");
        command.args(["-c", "printf data; echo 'pg_dump: error: connection refused' >&2; exit 3"]);
        let mut reader = ChildReader::spawn(command, "sh").unwrap();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"data");
        let failure = child_failure(&err).expect("a ChildFailure");
        assert_eq!(failure.status, "exit code 3");
        assert!(failure.stderr.contains("connection refused"));
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = ChildReader::spawn(Command::new("dr-no-such-tool"), "dr-no-such-tool").unwrap_err();
        assert!(matches!(err, Error::ToolNotFound { .. }), "{err}");
    }

    #[test]
    fn a_writer_child_succeeds_or_fails_by_exit_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "cat >/dev/null; echo done >&2"]);
        let mut writer = ChildWriter::spawn(command, "sh").unwrap();
        writer.write_all(&vec![0u8; 3 << 20]).unwrap();
        assert_eq!(writer.finish().unwrap().trim(), "done");

        let mut command = Command::new("sh");
        command.args(["-c", "exit 1"]);
        let writer = ChildWriter::spawn(command, "sh").unwrap().with_failure_hint("look above");
        let err = writer.finish().unwrap_err();
        assert!(matches!(err, Error::ChildFailed { .. }), "{err}");
        assert_eq!(err.hint().as_deref(), Some("look above"), "the hint given where the child was started");
    }
}
