//! The `keysim` binary: parse the command line, call the library, map failures to exit codes.

use clap::Parser;
use keysim::cli::{execute, Cli};

// Allocation-heavy paths (the proxy's requests, the report's tables) run faster on it than
// on glibc's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A panic's message may quote a key too.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        eprintln!("{}", keysim::engine::redact_text(&text));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout as clap prints them; usage errors quote what was
        // typed, which may be a key: redacted, exit code 2.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprint!("{}", keysim::engine::redact_text(&e.render().to_string()));
            std::process::exit(2);
        }
    };
    match execute(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Whatever the error quotes (a file, a command line, a scenario's line) may hold a
            // key: every key-shaped word is shown redacted.
            let text = keysim::engine::redact_text(&format!("{e:#}"));
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
