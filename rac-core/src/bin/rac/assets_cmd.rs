//! `rac assets fetch|status`.

use anyhow::Result;
use clap::Subcommand;
use rac_core::assets::{self, AssetCache};

/// The `assets` command group.
#[derive(Subcommand)]
pub enum AssetsCmd {
    /// Download, verify and unpack assets into $RAC_HOME (all when none is named).
    Fetch {
        /// Asset names (see `rac assets status`).
        names: Vec<String>,
    },
    /// List the assets, whether each is present, where, and its size.
    Status {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AssetsCmd, cache: &AssetCache) -> Result<()> {
    match cmd {
        AssetsCmd::Fetch { names } => {
            assets::fetch(cache, &names, &mut |line| eprintln!("{line}"))?;
        }
        AssetsCmd::Status { json } => {
            let status = cache.status();
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!("cache: {}", cache.home().display());
            println!("{:<20} {:<8} {:>10}  {:<50} path", "asset", "present", "size", "package");
            for s in status {
                let size = if s.present { format!("{:.1} MB", s.size_bytes as f64 / 1e6) } else { "-".into() };
                let present = if s.present {
                    "yes".to_string()
                } else if s.damaged.is_empty() {
                    "no".to_string()
                } else {
                    format!("DAMAGED ({}; run `rac assets fetch {}`)", s.damaged.join(", "), s.name)
                };
                println!("{:<20} {:<8} {:>10}  {:<50} {}", s.name, present, size, s.package, s.path.display());
            }
        }
    }
    Ok(())
}
