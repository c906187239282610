//! `keysim mock`: the fake Gemini API, standalone, until Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use mock_server::fake::{chars_per_four, ExtraFaults, Fake, FakeConfig, TokenCounter};
use mock_server::host::{serve_with, start_wiremock, Clock, Timeouts};

use super::CliError;
use crate::report::redact;
use crate::scenario::{self, Scenario};

/// The scenario served when none is given: the quickstart pool.
const DEFAULT_SCENARIO: &str = include_str!("../../scenarios/quickstart.toml");

/// Which host serves the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    /// hyper, no per-request memory: for sustained load.
    Sustained,
    /// wiremock's MockServer (keeps every matched request): for tests.
    Wiremock,
}

impl Host {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sustained => "sustained",
            Self::Wiremock => "wiremock",
        }
    }
}

pub(super) struct MockOptions {
    pub(super) port: u16,
    pub(super) bind: String,
    pub(super) scenario: Option<PathBuf>,
    pub(super) overrides: Vec<String>,
    pub(super) host: Host,
    pub(super) time_scale: f64,
    pub(super) header_timeout: f64,
    pub(super) body_timeout: f64,
}

/// The fake for `sc`: its pool, quotas, latency and faults; true counts from the
/// provider's tokenizer where one is set, else four characters a token.
pub fn fake_for(sc: &Scenario, extra: ExtraFaults) -> Fake {
    let count: TokenCounter = match &sc.provider.tokenizer {
        Some(t) => {
            let t = t.tokenizer.clone();
            Box::new(move |text: &str| t.count(text))
        }
        None => Box::new(chars_per_four),
    };
    let (median, p99) = sc.traffic.first().map_or((200.0, 200.0), |t| t.output_tokens.median_p99());
    Fake::new(FakeConfig {
        judge: crate::scenario::build::judge_config(sc),
        keys: sc.projects.iter().enumerate().flat_map(|(i, p)| p.keys.iter().map(move |k| (k.clone(), i))).collect(),
        extra,
        output_median: median,
        output_p99: p99,
        count,
        seed: sc.seed,
        counts_output: sc.provider.counts_output,
        script: sc.provider.script.clone(),
        thinking: sc.models.iter().map(|m| m.thinking_tokens).collect(),
    })
}

pub(super) fn mock(opts: MockOptions) -> Result<i32, CliError> {
    let sc = match &opts.scenario {
        Some(path) => super::run::load_pool(&super::ScenarioArgs::new(path.clone(), opts.overrides.clone()))?,
        None => scenario::parse(DEFAULT_SCENARIO, "quickstart (built in)", None, &opts.overrides)
            .map_err(|d| CliError::BadInput(d.to_string()))?,
    };
    if !(opts.time_scale.is_finite() && (0.01..=10_000.0).contains(&opts.time_scale)) {
        return Err(CliError::BadInput("--time-scale must be a number from 0.01 to 10000".into()));
    }
    let seconds = |what: &str, s: f64| {
        if s.is_finite() && (0.01..=3_600.0).contains(&s) {
            Ok(std::time::Duration::from_secs_f64(s))
        } else {
            Err(CliError::BadInput(format!("{what} must be a number of seconds from 0.01 to 3600")))
        }
    };
    let timeouts = Timeouts {
        header: seconds("--header-timeout", opts.header_timeout)?,
        body: seconds("--body-timeout", opts.body_timeout)?,
    };
    let fake = Arc::new(fake_for(&sc, sc.provider.extra_faults));
    let clock = Clock::new(opts.time_scale);
    let addr = format!("{}:{}", opts.bind, opts.port);
    let listener =
        std::net::TcpListener::bind(&addr).map_err(|e| CliError::BadInput(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    // Said once the fake answers, so that whoever waits for the first line can call at once.
    let banner = move |models: String| {
        // Written with errors ignored: whoever reads this may stop reading.
        let mut out = std::io::stdout().lock();
        let mut say = |line: String| {
            let _ = writeln!(out, "{line}");
        };
        say(format!("keysim fake Gemini API ({} host) listening on http://{local}", opts.host.name()));
        say(format!("  base URL for SDKs: http://{local}  (API version v1beta; OpenAI-compatible: /v1beta/openai/)"));
        say(format!("  scenario {} · models {models}", sc.name));
        for p in &sc.projects {
            let keys: Vec<String> = p.keys.iter().map(|k| redact(k)).collect();
            say(format!("  project {}: keys {}", p.id, keys.join(", ")));
        }
        if opts.time_scale != 1.0 {
            say(format!("  time runs {}x faster than real time", opts.time_scale));
        }
        say("Ctrl-C stops it.".to_owned());
        let _ = out.flush();
    };
    let models = fake.models().join(", ");
    rt.block_on(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match opts.host {
            Host::Sustained => {
                listener.set_nonblocking(true).context("configuring the listener")?;
                let listener = tokio::net::TcpListener::from_std(listener).context("configuring the listener")?;
                banner(models);
                serve_with(fake, listener, clock, timeouts, ctrl_c).await.context("serving")?;
            }
            Host::Wiremock => {
                let _server = start_wiremock(fake, clock, Some(listener)).await;
                banner(models);
                ctrl_c.await;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
