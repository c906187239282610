//! `keysim-proxy`: the proxy alone, for production deployments — the same server as
//! `keysim proxy`, without the lab.

use clap::Parser;
use keysim_proxy::cli::{run, ProxyArgs};

// The proxy's requests are allocation-heavy; they run faster on it than on glibc's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The engine in front of Gemini for real clients (the Gemini and OpenAI-compatible surfaces),
/// until SIGINT or SIGTERM; SIGHUP reloads the pool.
#[derive(Parser)]
#[command(name = "keysim-proxy", version)]
struct Cli {
    #[command(flatten)]
    args: ProxyArgs,
}

fn main() {
    // A panic's message may quote a key.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", keysim_proxy::engine::redact::redact_text(&info.to_string()));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprint!("{}", keysim_proxy::engine::redact::redact_text(&e.render().to_string()));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli.args) {
        let text = keysim_proxy::engine::redact::redact_text(&e.to_string());
        if text.starts_with("error:") {
            eprintln!("{text}");
        } else {
            eprintln!("error: {text}");
        }
        std::process::exit(e.exit_code());
    }
}
