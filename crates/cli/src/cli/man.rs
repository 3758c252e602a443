//! `bootvault man [--out-dir DIR]`: man pages generated from the argument definitions, so
//! they never drift from `--help`.

use super::{CmdResult, Failure, finish_output};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write bootvault.1 and one bootvault-SUBCOMMAND.1 per subcommand into DIR (created if
    /// missing) instead of printing bootvault(1) on stdout.
    #[arg(long, value_name = "DIR", env = "BOOTVAULT_MAN_DIR")]
    out_dir: Option<PathBuf>,
}

pub fn run(a: ManArgs) -> CmdResult {
    let cmd = super::command();
    match a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, &dir)
                .map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))?;
            let mut pages: Vec<String> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("bootvault") && n.ends_with(".1"))
                .collect();
            pages.sort();
            let text = format!("wrote {} man pages to {}", pages.len(), dir.display());
            finish_output(super::out(&text), 0)
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            finish_output(super::out(&String::from_utf8_lossy(&buf)), 0)
        }
    }
}
