//! The `bootvault` command line: a thin layer over the library (one file per subcommand).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
