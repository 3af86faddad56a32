//! Progress bars for long calls (encoding, index builds, training).
//!
//! [`Progress::Shown`]: on a terminal, indicatif bars redrawn in place on stderr; anywhere
//! else (a log file, CI) a bar becomes a plain line printed at most once every
//! [`LINE_INTERVAL`], plus one line when it finishes, so the output never floods.
//! [`Progress::Inline`]: one line on stdout, redrawn with carriage returns and ended by the
//! summary line, as tqdm draws in a notebook; a notebook's output keeps just that line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// How often a bar that is not on a terminal prints its line.
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// How long calls show their progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Not at all.
    #[default]
    Hidden,
    /// On stderr: a bar on a terminal, throttled lines elsewhere (the CLI).
    Shown,
    /// One line on stdout, redrawn in place and ended by a summary line (a notebook).
    Inline,
}

impl Progress {
    /// [`Progress::Shown`] when `shown`, else [`Progress::Hidden`].
    pub fn shown_if(shown: bool) -> Self {
        if shown { Progress::Shown } else { Progress::Hidden }
    }
}

/// A bar of `total` steps drawn with `style` as `mode` says; `None` when hidden.
pub fn bar(total: u64, style: ProgressStyle, mode: Progress) -> Option<ProgressBar> {
    let target = match mode {
        Progress::Hidden => return None,
        Progress::Shown if std::io::stderr().is_terminal() => ProgressDrawTarget::stderr(),
        Progress::Shown => ProgressDrawTarget::term_like_with_hz(Box::new(PlainTerm::log()), 1),
        Progress::Inline => ProgressDrawTarget::term_like_with_hz(Box::new(PlainTerm::Inline), 1),
    };
    let bar = ProgressBar::with_draw_target(Some(total), target).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(1000));
    Some(bar)
}

/// Finish a bar from [`bar`] with one summary line (`what: N unit in S s`): in place of an
/// inline bar, after a throttled one; a terminal's bar is just cleared.
pub fn finish(bar: &ProgressBar, what: &str, unit: &str, mode: Progress) {
    let (done, secs) = (bar.position(), bar.elapsed().as_secs_f64());
    bar.finish_and_clear();
    let summary = format!("{what}: {done} {unit} in {secs:.1} s ({:.1} {unit}/s)", done as f64 / secs.max(1e-9));
    match mode {
        Progress::Hidden => {}
        Progress::Shown if std::io::stderr().is_terminal() => {}
        Progress::Shown => eprintln!("{summary}"),
        // Blanks cover the longer bar the summary overwrites, where carriage returns are
        // drawn literally.
        Progress::Inline => println!("\r{summary:<width$}", width = PlainTerm::WIDTH),
    }
}

/// A `TermLike` without a cursor, for a bar that is not on a terminal.
#[derive(Debug)]
enum PlainTerm {
    /// Redraw one line on stdout with a carriage return.
    Inline,
    /// Print the newest line on stderr at most once per `every`.
    Log { every: Duration, last: Mutex<Option<Instant>> },
}

impl PlainTerm {
    const WIDTH: usize = 110;

    fn log() -> Self {
        PlainTerm::Log { every: LINE_INTERVAL, last: Mutex::new(None) }
    }
}

impl TermLike for PlainTerm {
    fn width(&self) -> u16 {
        Self::WIDTH as u16
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
        let s = s.trim_end();
        if s.trim().is_empty() {
            return Ok(());
        }
        match self {
            PlainTerm::Inline => {
                let mut out = std::io::stdout().lock();
                write!(out, "\r{s:<width$}", width = Self::WIDTH)?;
                out.flush()
            }
            PlainTerm::Log { every, last } => {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|t| t.elapsed() >= *every) {
                    *last = Some(Instant::now());
                    eprintln!("{}", s.trim_start());
                }
                Ok(())
            }
        }
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        match self {
            PlainTerm::Inline => std::io::stdout().flush(),
            PlainTerm::Log { .. } => Ok(()),
        }
    }
}
