//! Running an experiment: the whole data flow of DESIGN.md §4, with every expensive stage
//! cached on disk so that an ablation re-runs in seconds.
//!
//! 1. data, E's features and the index: [`Prepared`] (shared by the runs of a sweep);
//! 2. the retrieval branch's input: the neighbours' texts through T (`texts`);
//! 3. one of two peer runners, which share those pieces and not each other: a head on
//!    cached features (`cached`), or a fine-tuned image encoder as the base branch
//!    (`finetune`, an experiment with `[base_encoder]`); both train in the loop of `train`;
//! 4. the model evaluated on every branch, and a [`RunRecord`] under the runs folder.

use std::path::PathBuf;

use super::cached::run_cached;
use super::config::Experiment;
use super::finetune::run_finetune;
use super::prepared::{Prepared, RunEnv};
use super::record::{self, RunRecord};
use crate::error::Result;

/// Run one experiment on prepared inputs and save its record.
pub fn run_prepared(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RunRecord> {
    checked(exp)?;
    if exp.base_encoder.is_some() { run_finetune(exp, prep, env) } else { run_cached(exp, prep, env) }
}

/// Files and `with` validate what they load; an experiment whose fields were set in code
/// is validated here, before any work, with its name in place of a file.
fn checked(exp: &Experiment) -> Result<()> {
    exp.validate(&PathBuf::from(format!("experiment `{}`", exp.name)))
}

/// Run an experiment, or load its record when a complete, undamaged one exists (unless forced).
pub fn run(exp: &Experiment, env: &RunEnv) -> Result<RunRecord> {
    if !env.force
        && let Some(rec) = record::reuse(&env.runs_dir, exp)?
    {
        return Ok(rec);
    }
    checked(exp)?;
    if let Some(b) = &exp.base_encoder {
        b.check_files()?;
    }
    let mut prep = Prepared::new(exp, env)?;
    run_prepared(exp, &mut prep, env)
}
