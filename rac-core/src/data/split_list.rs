//! Split lists: the `relative/path.jpg label` files of Places365-LT, ImageNet-LT and
//! iNaturalist 2018 (as distributed with OLTR and classifier-balancing).
//!
//! Parsing is strict: every malformed line is an error that names the file and the line.
//! The label is the last field of a line, so a path may hold spaces.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsio;

/// One line of a split list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitEntry {
    /// The image path, relative to the image root.
    pub path: String,
    /// The class id.
    pub label: usize,
    /// The 1-based line number in the split file, for error messages.
    pub line: usize,
}

/// A parsed split file.
#[derive(Debug, Clone)]
pub struct SplitList {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its entries, in file order.
    pub entries: Vec<SplitEntry>,
}

impl SplitList {
    /// Read and parse a split file. Labels must be in `0..num_classes` when that is given.
    pub fn read(file: &Path, num_classes: Option<usize>) -> Result<Self> {
        let text = fsio::read_to_string(file, "split file")?;
        Self::parse(file, &text, num_classes)
    }

    /// Parse split-file text; `file` is only used in error messages.
    pub fn parse(file: &Path, text: &str, num_classes: Option<usize>) -> Result<Self> {
        let mut entries = Vec::new();
        // A byte-order mark (lists saved by some Windows editors) is not part of the first path.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let err = |message: String| Error::Parse { path: file.to_path_buf(), line, message };
            // The label is the last field, so a path may hold spaces (`train/ice cream/1.jpg 3`).
            let Some((path, label)) = trimmed.rsplit_once(char::is_whitespace).map(|(p, l)| (p.trim_end(), l)) else {
                return Err(err(format!("expected `path label`, found `{trimmed}`; write the image path, a space, then its class id")));
            };
            let label: i64 =
                label.parse().map_err(|_| err(format!("label `{label}` is not an integer; the last field of a line is the class id (0, 1, …)")))?;
            if label < 0 {
                return Err(err(format!("label {label} is negative; class ids start at 0")));
            }
            let label = label as usize;
            if let Some(n) = num_classes
                && label >= n
            {
                return Err(err(format!(
                    "label {label} is out of range: the manifest declares {n} classes (0..{n}); fix the label, or `classes.count` in the manifest"
                )));
            }
            entries.push(SplitEntry { path: path.to_string(), label, line });
        }
        if entries.is_empty() {
            return Err(Error::Format { path: file.to_path_buf(), message: "split file has no entries".into() });
        }
        Ok(SplitList { file: file.to_path_buf(), entries })
    }

    /// Where an entry came from, as `file:line`.
    pub fn origin(&self, entry: &SplitEntry) -> String {
        format!("{}:{}", self.file.display(), entry.line)
    }
}
