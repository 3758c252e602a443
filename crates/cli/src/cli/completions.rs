//! `bootvault completions SHELL`: a completion script on stdout.

use super::{CmdResult, finish_output};
use clap::Args;
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(a: CompletionsArgs) -> CmdResult {
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut super::command(), "bootvault", &mut buf);
    finish_output(super::out(&String::from_utf8_lossy(&buf)), 0)
}
