//! The `keysim` binary: parse the command line, call the library, map failures to exit codes.

use clap::Parser;
use keysim::cli::{execute, Cli};

fn main() {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let text = format!("{e:#}");
            // Diagnostics render their own `error:` lines; everything else gets one here.
            if text.starts_with("error:") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            std::process::exit(e.exit_code());
        }
    }
}
