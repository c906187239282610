//! The proxy's command line, shared by `keysim proxy` and the `keysim-proxy` binary: serve the
//! engine in front of Gemini until SIGINT or SIGTERM; SIGHUP reloads the config.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::engine::clock::ScaledClock;
use crate::{Overrides, ProxyError, State};

/// The proxy's options.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxyArgs {
    /// The proxy config: a pool (`[[models]]`, `[[projects]]`, `[engine]`, `[warnings]`)
    /// and `[proxy]`. Keys come from the environment or a keys file, never the command line.
    #[arg(long)]
    pub config: PathBuf,
    /// Address to listen on (overrides `[proxy] listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Base URL of the API (overrides `[proxy] upstream`).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// The shared quota store, redis://host:port (overrides `[proxy] store`).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Lab runs only: run the engine's clock this many times faster, in step with
    /// `keysim mock --time-scale` and `keysim load --time-scale`.
    #[arg(long, default_value_t = 1.0, hide = true)]
    pub time_scale: f64,
    /// Lab runs only: the Unix time (ms) the scaled clock counts from, so that replicas
    /// started apart read the same clock.
    #[arg(long, hide = true, value_name = "MS")]
    pub time_origin: Option<u64>,
}

/// Why the proxy stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad input (the config, the keys, an option): exit code 2.
    #[error("{0}")]
    BadInput(String),
    /// Something else stopped it (the address, the store, the runtime): exit code 3.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadInput(_) => 2,
            Self::Runtime(_) => 3,
        }
    }
}

impl From<ProxyError> for CliError {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::Config(m) => Self::BadInput(m),
            ProxyError::Start(m) => Self::Runtime(m),
        }
    }
}

/// Serves until SIGINT or SIGTERM.
pub fn run(opts: ProxyArgs) -> Result<(), CliError> {
    let mut loaded = crate::config::load(&opts.config)?;
    if opts.upstream.as_ref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        return Err(CliError::BadInput("--upstream must be an http:// or https:// URL".into()));
    }
    if !(opts.time_scale.is_finite() && (0.01..=10_000.0).contains(&opts.time_scale)) {
        return Err(CliError::BadInput("--time-scale must be a number from 0.01 to 10000".into()));
    }
    let overrides = Overrides { listen: opts.listen, upstream: opts.upstream, store: opts.store };
    overrides.apply(&mut loaded);
    let addr: SocketAddr = loaded
        .proxy
        .listen
        .parse()
        .map_err(|_| CliError::BadInput(format!("listen address '{}' is not IP:PORT", loaded.proxy.listen)))?;
    crate::config::check_exposure(&addr, loaded.client_tokens.len(), loaded.admin_token.is_some())
        .map_err(CliError::BadInput)?;
    // Log lines on stderr: startup, reloads, warnings, upstream trouble. No key is ever in one.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(true)
        .try_init();
    let runtime = |e: std::io::Error| CliError::Runtime(format!("starting the runtime: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(runtime)?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| CliError::BadInput(format!("cannot listen on {addr}: {e}")))?;
    let setup = |e: std::io::Error| CliError::Runtime(format!("configuring the listener: {e}"));
    listener.set_nonblocking(true).map_err(setup)?;
    let local = listener.local_addr().map_err(setup)?;
    let banner = banner(&loaded, local);
    let clock = match opts.time_origin {
        // Replicas given one origin read one scaled clock, whenever each started.
        Some(origin) => {
            let wall = ScaledClock::new(1.0).now_ms();
            let now = origin as f64 + wall.saturating_sub(origin) as f64 * opts.time_scale;
            ScaledClock::starting_at(now as u64, opts.time_scale)
        }
        None => ScaledClock::new(opts.time_scale),
    };
    let state = State::new(loaded, Some(opts.config.clone()), overrides, clock)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(setup)?;
        tokio::spawn(reload_on_hangup(state.clone()));
        {
            // Written with errors ignored: whoever reads this may stop reading.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes());
            let _ = out.flush();
        }
        crate::serve(state, listener, stop_signal()).await.map_err(|e| CliError::Runtime(format!("serving: {e}")))
    })
}

fn banner(l: &crate::Loaded, local: SocketAddr) -> String {
    let keys: usize = l.pool.projects.iter().map(|p| p.keys.len()).sum();
    let models: Vec<&str> = l.pool.models.iter().map(|m| m.name.as_str()).collect();
    let mut s = format!("keysim proxy listening on http://{local}\n");
    s += &format!(
        "  upstream {} · store {}\n",
        crate::engine::redact::redact_url(&l.proxy.upstream),
        l.proxy.store.as_deref().map_or_else(|| "memory".to_owned(), crate::engine::redact::redact_url)
    );
    s += &format!("  pool: {} projects, {keys} keys · models {}\n", l.pool.projects.len(), models.join(", "));
    s += &format!(
        "  clients: {} · admin API: {}\n",
        if l.client_tokens.is_empty() {
            "open (loopback only)".to_owned()
        } else {
            format!("{} tokens", l.client_tokens.len())
        },
        if l.admin_token.is_some() { "token" } else { "open (loopback only)" }
    );
    s += "  /metrics /healthz /readyz · SIGHUP or POST /admin/reload reloads the pool · Ctrl-C stops it\n";
    s
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Reloads the config on every SIGHUP.
async fn reload_on_hangup(state: std::sync::Arc<State>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload()).await;
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}
