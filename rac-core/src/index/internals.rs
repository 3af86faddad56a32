//! What only tests and the crash-safety hooks reach: failpoints, which make a change fail
//! (or hang, to be killed) just before it commits. Not part of the public API.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A deliberate failure, for crash-safety tests: the operation does all its work, then
/// fails (or hangs, so that a test can kill the process) just before it commits.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum Failpoint {
    /// Return an error instead of committing.
    BeforeCommit,
    /// Create the marker file, then sleep until killed, instead of committing.
    HangBeforeCommit(PathBuf),
}

impl Failpoint {
    /// Parse `before-commit` or `hang-before-commit=MARKER` (the `RAC_INDEX_FAILPOINT` value).
    pub fn parse(s: &str) -> Result<Self> {
        if s == "before-commit" {
            Ok(Failpoint::BeforeCommit)
        } else if let Some(marker) = s.strip_prefix("hang-before-commit=") {
            Ok(Failpoint::HangBeforeCommit(PathBuf::from(marker)))
        } else {
            Err(Error::UnknownName {
                what: "RAC_INDEX_FAILPOINT value",
                name: s.to_string(),
                known: "before-commit, hang-before-commit=MARKER".into(),
            })
        }
    }
}
