//! `keysim proxy`: serve the engine in front of Gemini until SIGINT or SIGTERM; SIGHUP
//! reloads the config.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use super::CliError;
use crate::proxy::{Overrides, ProxyError, State};

/// What `keysim proxy` was asked.
pub(super) struct ProxyOptions {
    pub(super) config: PathBuf,
    pub(super) listen: Option<String>,
    pub(super) upstream: Option<String>,
    pub(super) store: Option<String>,
    pub(super) time_scale: f64,
    pub(super) time_origin: Option<u64>,
}

fn bad(e: ProxyError) -> CliError {
    match e {
        ProxyError::Config(m) => CliError::BadInput(m),
        ProxyError::Start(m) => CliError::Runtime(anyhow::anyhow!(m)),
    }
}

pub(super) fn proxy(opts: ProxyOptions) -> Result<i32, CliError> {
    let mut loaded = crate::proxy::config::load(&opts.config).map_err(bad)?;
    if opts.upstream.as_ref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        return Err(CliError::BadInput("--upstream must be an http:// or https:// URL".into()));
    }
    let overrides = Overrides { listen: opts.listen, upstream: opts.upstream, store: opts.store };
    overrides.apply(&mut loaded);
    let addr: SocketAddr = loaded
        .proxy
        .listen
        .parse()
        .map_err(|_| CliError::BadInput(format!("listen address '{}' is not IP:PORT", loaded.proxy.listen)))?;
    crate::proxy::config::check_exposure(&addr, loaded.client_tokens.len(), loaded.admin_token.is_some())
        .map_err(CliError::BadInput)?;
    // Log lines on stderr: startup, reloads, warnings, upstream trouble. No key is ever in one.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(true)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| CliError::BadInput(format!("cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true).context("configuring the listener")?;
    let local = listener.local_addr().context("reading the bound address")?;
    let banner = banner(&loaded, local);
    if !(opts.time_scale.is_finite() && (0.01..=10_000.0).contains(&opts.time_scale)) {
        return Err(CliError::BadInput("--time-scale must be a number from 0.01 to 10000".into()));
    }
    let clock = match opts.time_origin {
        // Replicas given one origin read one scaled clock, whenever each started.
        Some(origin) => {
            let wall = mock_server::host::Clock::new(1.0).now_ms();
            let now = origin as f64 + wall.saturating_sub(origin) as f64 * opts.time_scale;
            mock_server::host::Clock::starting_at(now as u64, opts.time_scale)
        }
        None => mock_server::host::Clock::new(opts.time_scale),
    };
    let state = State::new(loaded, Some(opts.config.clone()), overrides, clock).map_err(bad)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).context("configuring the listener")?;
        tokio::spawn(reload_on_hangup(state.clone()));
        {
            // Written with errors ignored: whoever reads this may stop reading.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes());
            let _ = out.flush();
        }
        crate::proxy::serve(state, listener, stop_signal()).await.context("serving")?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

fn banner(l: &crate::proxy::Loaded, local: SocketAddr) -> String {
    let keys: usize = l.scenario.projects.iter().map(|p| p.keys.len()).sum();
    let models: Vec<&str> = l.scenario.models.iter().map(|m| m.name.as_str()).collect();
    let mut s = format!("keysim proxy listening on http://{local}\n");
    s += &format!(
        "  upstream {} · store {}\n",
        crate::load::redact_target(&l.proxy.upstream),
        l.proxy.store.as_deref().map_or_else(|| "memory".to_owned(), crate::load::redact_target)
    );
    s += &format!("  pool: {} projects, {keys} keys · models {}\n", l.scenario.projects.len(), models.join(", "));
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
