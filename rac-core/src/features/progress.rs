//! A terminal progress bar for encodings: items done (images, or a text encoder's token
//! sequences), items/s, elapsed time and ETA. The CLI and the experiment runner show the
//! same bar; a notebook draws it as one line on stdout (see [`crate::progress`]).

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::store::EncodeProgress;
use crate::progress::Progress;

/// An [`EncodeProgress`] that draws an indicatif bar on stderr (or nothing when hidden).
#[derive(Debug)]
pub struct BarProgress {
    bar: Option<ProgressBar>,
    mode: Progress,
    unit: &'static str,
    what: String,
}

impl BarProgress {
    /// A bar over images, drawn as `mode` says.
    pub fn new(mode: Progress) -> Self {
        BarProgress { bar: None, mode, unit: "images", what: String::new() }
    }

    /// The same bar counting other items (`sequences`).
    pub fn with_unit(self, unit: &'static str) -> Self {
        BarProgress { unit, ..self }
    }
}

impl EncodeProgress for BarProgress {
    fn start(&mut self, total: usize, what: &str) {
        let unit = self.unit;
        let Some(bar) = crate::progress::bar(
            total as u64,
            ProgressStyle::with_template(&format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{rate}}, {{elapsed}} elapsed, ETA {{eta}}"))
                .expect("valid template")
                .with_key("rate", move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1} {unit}/s", s.per_sec());
                })
                .progress_chars("=> "),
            self.mode,
        ) else {
            return;
        };
        bar.set_message(what.to_string());
        self.what = what.to_string();
        self.bar = Some(bar);
    }
    fn advance(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            crate::progress::finish(&b, &self.what, self.unit, self.mode);
        }
    }
    fn warn(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}
