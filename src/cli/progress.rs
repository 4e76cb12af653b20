//! The CLI's [`Progress`]: bars on a terminal, periodic log lines otherwise, nothing with `-q`.
//!
//! On a terminal, a task with a known total is a bar with percentage, rate and ETA (marked `~` when the total is
//! an estimate), a task without one a spinner with bytes and rate, and a phase a spinner with its name and
//! elapsed time. Log lines are printed above the bars (output.rs suspends them), never through them.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dr::progress::{Progress, ProgressTask};
use dr::units;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a task logs its progress when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Display {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Bars(MultiProgress),
    Log,
    Silent,
}

/// What the engine said about a task's size.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Size {
    Exact(u64),
    Estimate(u64),
    Unknown,
    /// Not bytes at all: a named phase.
    Phase,
}

impl Display {
    pub fn new(quiet: bool) -> Display {
        let mode = if quiet {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Log
        };
        Display { mode }
    }

    /// A display that shows nothing (for `--json` output).
    pub fn silent(&self) -> Display {
        Display { mode: Mode::Silent }
    }

    /// Runs `f` with the bars hidden, so a log line is not drawn over them.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bars(bars) => bars.suspend(f),
            _ => f(),
        }
    }

    pub fn clear(&self) {
        if let Mode::Bars(bars) = &self.mode {
            let _ = bars.clear();
        }
    }

    fn start(&self, name: &str, size: Size) -> Arc<dyn ProgressTask> {
        match &self.mode {
            Mode::Silent => Arc::new(dr::NoProgress),
            Mode::Log => Arc::new(LogTask {
                name: name.to_string(),
                state: Mutex::new(LogState { bytes: 0, size, started: Instant::now(), logged: Instant::now() }),
            }),
            Mode::Bars(bars) => {
                let bar = match size {
                    Size::Exact(total) | Size::Estimate(total) => ProgressBar::new(total),
                    Size::Unknown | Size::Phase => ProgressBar::new_spinner(),
                };
                let bar = bars.add(bar.with_style(style(size)).with_prefix(name.to_string()));
                if size == Size::Phase {
                    bar.set_message("running");
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                Arc::new(BarTask { bar, size: Mutex::new(size), started: Instant::now() })
            }
        }
    }
}

fn style(size: Size) -> ProgressStyle {
    let template = match size {
        Size::Exact(_) => {
            "{prefix:>16.bold} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
        }
        Size::Estimate(_) => {
            "{prefix:>16.bold} [{bar:30}] ~{percent:>3}% {bytes}/~{total_bytes} {bytes_per_sec} ETA ~{eta} {msg}"
        }
        Size::Unknown => "{prefix:>16.bold} {spinner} {bytes} {bytes_per_sec} {elapsed} {msg}",
        Size::Phase => "{prefix:>16.bold} {spinner} {msg} {elapsed}",
    };
    let fallback = || {
        if matches!(size, Size::Exact(_) | Size::Estimate(_)) {
            ProgressStyle::default_bar()
        } else {
            ProgressStyle::default_spinner()
        }
    };
    ProgressStyle::with_template(template).map(|s| s.progress_chars("=> ")).unwrap_or_else(|_| fallback())
}

impl Progress for Display {
    fn task(&self, name: &str, total: Option<u64>) -> Arc<dyn ProgressTask> {
        self.start(name, total.map_or(Size::Unknown, Size::Exact))
    }

    fn estimated_task(&self, name: &str, estimate: Option<u64>) -> Arc<dyn ProgressTask> {
        self.start(name, estimate.map_or(Size::Unknown, Size::Estimate))
    }

    fn phase(&self, name: &str) -> Arc<dyn ProgressTask> {
        self.start(name, Size::Phase)
    }
}

struct BarTask {
    bar: ProgressBar,
    size: Mutex<Size>,
    started: Instant,
}

impl ProgressTask for BarTask {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        // An estimate that fell short keeps the bar just short of full rather than past it.
        if let Ok(size) = self.size.lock()
            && matches!(*size, Size::Estimate(_))
            && let Some(length) = self.bar.length()
            && self.bar.position() >= length
        {
            self.bar.set_length(self.bar.position() + self.bar.position() / 100 + 1);
        }
    }

    fn set_estimate(&self, total: u64) {
        let Ok(mut size) = self.size.lock() else { return };
        if self.bar.is_finished() || matches!(*size, Size::Exact(_) | Size::Phase) {
            return;
        }
        *size = Size::Estimate(total);
        self.bar.set_length(total.max(self.bar.position() + 1));
        self.bar.set_style(style(*size));
    }

    fn finish(&self, summary: &str) {
        let phase = self.size.lock().is_ok_and(|size| *size == Size::Phase);
        if phase {
            self.bar.set_style(
                ProgressStyle::with_template("{prefix:>16.bold} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar.finish_with_message(phase_summary(summary, self.started.elapsed()));
        } else {
            // The bar ends at what was actually moved, whatever the estimate said.
            self.bar.set_length(self.bar.position());
            self.bar.finish_with_message(summary.to_string());
        }
    }
}

/// `restored with 4 jobs in 12.3s`: what a phase says when it ends.
fn phase_summary(summary: &str, elapsed: Duration) -> String {
    let what = if summary.is_empty() { "done" } else { summary };
    format!("{what} in {}", units::duration(elapsed))
}

/// Logs "name: N of M (P%), rate, ETA" at most every [`LOG_EVERY`], and a summary at the end.
struct LogTask {
    name: String,
    state: Mutex<LogState>,
}

struct LogState {
    bytes: u64,
    size: Size,
    started: Instant,
    /// When the last progress line was logged.
    logged: Instant,
}

impl LogState {
    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes as f64 / elapsed;
        let done = units::bytes(self.bytes);
        let (total, approx) = match self.size {
            Size::Exact(total) => (total, ""),
            Size::Estimate(total) => (total, "~"),
            Size::Unknown | Size::Phase => return format!("{done} so far ({}/s)", units::bytes(rate as u64)),
        };
        let percent = (self.bytes as f64 * 100.0 / total.max(1) as f64).min(100.0);
        let left = total.saturating_sub(self.bytes) as f64 / rate.max(1.0);
        format!(
            "{done} of {approx}{} ({approx}{percent:.0}%, {}/s, ETA {approx}{})",
            units::bytes(total),
            units::bytes(rate as u64),
            units::duration(Duration::try_from_secs_f64(left).unwrap_or_default())
        )
    }
}

impl ProgressTask for LogTask {
    fn advance(&self, bytes: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.bytes += bytes;
        if state.logged.elapsed() >= LOG_EVERY {
            state.logged = Instant::now();
            tracing::info!(task = %self.name, "{}", state.line());
        }
    }

    fn set_estimate(&self, total: u64) {
        if let Ok(mut state) = self.state.lock()
            && matches!(state.size, Size::Unknown | Size::Estimate(_))
        {
            state.size = Size::Estimate(total);
        }
    }

    fn finish(&self, summary: &str) {
        let Ok(state) = self.state.lock() else { return };
        let elapsed = state.started.elapsed();
        if state.size == Size::Phase {
            tracing::info!(task = %self.name, "{}", phase_summary(summary, elapsed));
            return;
        }
        tracing::info!(
            task = %self.name,
            "{} in {}{}",
            units::bytes(state.bytes),
            units::duration(elapsed),
            if summary.is_empty() { String::new() } else { format!(" ({summary})") }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(bytes: u64, size: Size) -> LogState {
        let started = Instant::now().checked_sub(Duration::from_secs(10)).unwrap_or_else(Instant::now);
        LogState { bytes, size, started, logged: Instant::now() }
    }

    #[test]
    fn log_lines_give_the_percentage_and_mark_estimates() {
        let exact = state(256 << 20, Size::Exact(1 << 30)).line();
        assert!(exact.starts_with("256.0 MiB of 1.0 GiB (25%, "), "{exact}");
        assert!(exact.contains("ETA "), "{exact}");
        let estimated = state(512 << 20, Size::Estimate(1 << 30)).line();
        assert!(estimated.starts_with("512.0 MiB of ~1.0 GiB (~50%, "), "{estimated}");
        // An estimate that fell short never reads as more than 100%.
        assert!(state(2 << 30, Size::Estimate(1 << 30)).line().contains("(~100%"));
        assert!(state(1 << 20, Size::Unknown).line().starts_with("1.0 MiB so far ("));
    }

    #[test]
    fn a_phase_says_what_it_did_and_how_long_it_took() {
        assert_eq!(
            phase_summary("restored by pg_restore --jobs 4", Duration::from_millis(139)),
            "restored by pg_restore --jobs 4 in 139ms"
        );
        assert_eq!(phase_summary("", Duration::from_secs(2)), "done in 2.0s");
    }
}
