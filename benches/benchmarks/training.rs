//! Training overhead of the retrieval branch (the paper's Table 5): training samples/s of
//! the demo's recipe (`experiments/demo.toml`) with cached features and neighbour lists,
//! for the base branch alone and for RAC with each text encoder T:
//! - a random bag-of-words T, frozen (its outputs cached, as every frozen T's are);
//! - a learned bag-of-words T, trained with the heads (encoded at every step);
//! - MiniLM frozen (cached outputs);
//! - MiniLM fine-tuned (six BERT layers forward and backward at every step).
//!
//! Each configuration trains for a few epochs over a fixed subset of the training split
//! (the whole split for the cheap ones), configurations interleaved round by round so that
//! load from other processes hits them alike; the median epoch's samples/s is reported, with
//! its ratio to base only (the paper: 23.6 / 28.3 s per epoch, a 0.83x ratio, for a random
//! bag-of-words T).
//!
//! Run with `cargo bench -p rac-benches --bench training`. It reads the demo's caches
//! (features, index, neighbour lists, text features) and builds the missing ones, so run
//! `rac demo` first to time only the training.

use std::path::Path;

use rac_core::experiment::{Experiment, Prepared, RunEnv, assemble};
use rac_core::train::{TrainConfig, TrainHooks, train};

struct Case {
    name: &'static str,
    sets: &'static [(&'static str, &'static str)],
    /// Training items per epoch (0: the whole split).
    items: usize,
}

const CASES: [Case; 5] = [
    Case { name: "base only", sets: &[("model.mode", "\"base\"")], items: 0 },
    Case { name: "RAC, random bag-of-words T (frozen)", sets: &[("retrieval.text_encoder", "\"bow-random\"")], items: 0 },
    Case {
        name: "RAC, learned bag-of-words T (trained)",
        sets: &[("retrieval.text_encoder", "\"bow-learned\""), ("retrieval.finetune_text", "true")],
        items: 0,
    },
    Case { name: "RAC, MiniLM T frozen", sets: &[("retrieval.text_encoder", "\"minilm\"")], items: 0 },
    Case { name: "RAC, MiniLM T fine-tuned", sets: &[("retrieval.text_encoder", "\"minilm\""), ("retrieval.finetune_text", "true")], items: 400 },
];

const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> rac_core::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut demo = Experiment::load(&root.join("experiments/demo.toml"))?;
    // Benches run in their crate's folder; the recipe's manifest path starts at the workspace.
    demo.data.manifest = root.join(&demo.data.manifest);
    let runs = tempfile::tempdir().expect("a temporary folder");
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), ..RunEnv::from_env() };
    let mut prep = Prepared::new(&demo, &env)?;
    let mut ready = Vec::new();
    for case in &CASES {
        let mut exp = demo.clone();
        for (key, value) in case.sets {
            exp = exp.with(key, value)?;
        }
        let assembled = assemble(&exp, &mut prep, &env)?;
        let n = if case.items == 0 { assembled.train.len() } else { case.items.min(assembled.train.len()) };
        let inputs = assembled.train.subset(&(0..n as u32).collect::<Vec<_>>())?;
        let config = TrainConfig { epochs: 1, ..exp.train.clone() };
        ready.push((case, exp, assembled, inputs, config));
    }
    // Fine-tuning MiniLM costs minutes per full epoch on 2 cores: one round of it is enough.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for round in 0..ROUNDS {
        for (i, (case, exp, a, inputs, config)) in ready.iter().enumerate() {
            if case.items > 0 && round > 0 {
                continue;
            }
            let log = train(&a.model, &a.loss, &exp.optim, config, inputs, None, &TrainHooks::default())?;
            rates[i].push(log[0].samples_per_s);
        }
    }
    let base = median(rates[0].clone());
    println!("training throughput, demo recipe (batch {}), cached features and neighbour lists", demo.train.batch_size);
    println!("{:<40} {:>8} {:>12} {:>10}", "configuration", "items", "samples/s", "x base");
    for ((case, _, _, inputs, _), r) in ready.iter().zip(rates) {
        let rate = median(r);
        println!("{:<40} {:>8} {:>12.1} {:>10.3}", case.name, inputs.len(), rate, rate / base);
    }
    Ok(())
}
