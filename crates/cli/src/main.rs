//! The `bootvault` command line: a thin layer over the library (one file per subcommand).

// The doc comments of the argument structs are clap's `--help` text, printed verbatim: a
// bracket there (`[host:port]`, `[registry_mirrors]`) is literal text, not an intra-doc link,
// and escaping it would print the backslash.
#![allow(rustdoc::broken_intra_doc_links)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
