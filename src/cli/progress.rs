//! The CLI's [`Progress`]: bars on a terminal, periodic log lines otherwise, nothing with `-q`.

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
}

impl Progress for Display {
    fn task(&self, name: &str, total: Option<u64>) -> Arc<dyn ProgressTask> {
        match &self.mode {
            Mode::Silent => Arc::new(dr::NoProgress),
            Mode::Log => {
                Arc::new(LogTask { name: name.to_string(), state: Mutex::new((0, Instant::now(), Instant::now())) })
            }
            Mode::Bars(bars) => {
                let bar = match total {
                    Some(total) => ProgressBar::new(total).with_style(
                        ProgressStyle::with_template(
                            "{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    ),
                    None => ProgressBar::new_spinner().with_style(
                        ProgressStyle::with_template(
                            "{prefix:>12.bold} {spinner} {bytes} {bytes_per_sec} {elapsed} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    ),
                };
                let bar = bars.add(bar.with_prefix(name.to_string()));
                bar.enable_steady_tick(Duration::from_millis(200));
                Arc::new(BarTask { bar })
            }
        }
    }
}

struct BarTask {
    bar: ProgressBar,
}

impl ProgressTask for BarTask {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn finish(&self, summary: &str) {
        self.bar.finish_with_message(summary.to_string());
    }
}

/// Logs "name: N read (rate)" at most every [`LOG_EVERY`], and a summary at the end.
struct LogTask {
    name: String,
    /// Bytes so far, start time, time of the last log line.
    state: Mutex<(u64, Instant, Instant)>,
}

impl ProgressTask for LogTask {
    fn advance(&self, bytes: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.0 += bytes;
        if state.2.elapsed() >= LOG_EVERY {
            state.2 = Instant::now();
            let rate = state.0 as f64 / state.1.elapsed().as_secs_f64().max(0.001);
            tracing::info!(task = %self.name, "{} so far ({}/s)", units::bytes(state.0), units::bytes(rate as u64));
        }
    }

    fn finish(&self, summary: &str) {
        let Ok(state) = self.state.lock() else { return };
        tracing::info!(
            task = %self.name,
            "{} in {}{}",
            units::bytes(state.0),
            units::duration(state.1.elapsed()),
            if summary.is_empty() { String::new() } else { format!(" ({summary})") }
        );
    }
}
