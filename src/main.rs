//! The `keysim` binary: parse the command line, call the library, map failures to exit codes.

use clap::Parser;
use keysim::cli::{execute, Cli};

fn main() {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(e.exit_code());
        }
    }
}
