//! Progress bars for long calls (encoding, index builds, training).
//!
//! On a terminal they are indicatif bars redrawn in place. Anywhere else (a notebook
//! kernel, a log file, CI) a bar becomes a plain line printed at most once every
//! [`LINE_INTERVAL`], plus one line when it finishes, so the output never floods.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// How often a bar that is not on a terminal prints its line.
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// A bar of `total` steps drawn with `style`, on stderr: in place on a terminal, as
/// throttled lines elsewhere.
pub fn bar(total: u64, style: ProgressStyle) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(LineLog::default()), 1)
    };
    let bar = ProgressBar::with_draw_target(Some(total), target).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// Finish a bar from [`bar`]: cleared on a terminal; off it, one last line with the
/// totals is printed, so a notebook shows that the step ended.
pub fn finish(bar: &ProgressBar, what: &str, unit: &str) {
    let (done, secs) = (bar.position(), bar.elapsed().as_secs_f64());
    bar.finish_and_clear();
    if !std::io::stderr().is_terminal() {
        eprintln!("{what}: {done} {unit} in {secs:.1} s ({:.1} {unit}/s)", done as f64 / secs.max(1e-9));
    }
}

/// A `TermLike` that prints the newest line of the bar at most once per interval.
#[derive(Debug)]
struct LineLog {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Default for LineLog {
    fn default() -> Self {
        LineLog { every: LINE_INTERVAL, last: Mutex::new(None) }
    }
}

impl TermLike for LineLog {
    fn width(&self) -> u16 {
        110
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= self.every) {
            *last = Some(Instant::now());
            eprintln!("{s}");
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
