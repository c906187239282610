//! The `keysim` command line: subcommands, and the mapping of failures to exit codes
//! (0 ok, 1 expectations failed, 2 bad input, 3 runtime failure).

mod compare;
mod gate;
pub mod mock;
mod plan;
pub mod run;
mod tune;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// keysim — a quota-aware Gemini key pool engine, and the laboratory that proves it.
#[derive(Debug, Parser)]
#[command(name = "keysim", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What every command's exit code means (shown by `keysim --help`).
pub const EXIT_CODES: &str = "Exit codes, every command:
  0  ok
  1  expectations failed: run and load ([expect] of the scenario), gate (expectations or baseline),
     compare, plan and tune-warnings never (they report every variant or point)
  2  bad input: usage, scenario, override, baseline or sweep errors
  3  runtime failure: I/O, a port in use, a target that cannot be reached";

/// Options every scenario-reading command shares.
#[derive(Debug, clap::Args)]
pub struct ScenarioArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Override a setting of the file, e.g. `--set engine.admission=check-then-act`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub overrides: Vec<String>,
    /// A traffic log to replay instead of the scenario's `[[traffic]]`.
    #[command(flatten)]
    pub traffic: TrafficArgs,
}

impl ScenarioArgs {
    /// `scenario` with `overrides`, no log.
    pub fn new(scenario: PathBuf, overrides: Vec<String>) -> Self {
        Self { scenario, overrides, traffic: TrafficArgs::default() }
    }

    /// The same, its log (if any) turned into the override that replaces the traffic.
    fn folded(mut self) -> Result<Self, CliError> {
        if let Some(o) = std::mem::take(&mut self.traffic).override_line()? {
            self.overrides.insert(0, o);
        }
        Ok(self)
    }
}

/// `--traffic FILE` and what selects from it: a traffic log replayed instead of the
/// scenario's `[[traffic]]` (the run then covers the log's window).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TrafficArgs {
    /// Replay this traffic log instead of the scenario's [[traffic]]: the proxy's (or `keysim
    /// load --traffic-log`'s), LiteLLM's payloads or spend logs, OpenTelemetry GenAI spans
    /// (JSON), or a CSV; the run covers the log's window.
    #[arg(long, value_name = "FILE")]
    pub traffic: Option<PathBuf>,
    /// The log's format: auto (told by its first line), keysim, litellm, otel or csv.
    #[arg(long, value_name = "FORMAT", requires = "traffic")]
    pub format: Option<String>,
    /// Only requests from this instant on: RFC 3339, or `2026-12-01 08:00` in Pacific time.
    #[arg(long, value_name = "TIME", requires = "traffic")]
    pub from: Option<String>,
    /// Only requests before this instant (as --from).
    #[arg(long, value_name = "TIME", requires = "traffic")]
    pub to: Option<String>,
    /// Only this client's requests (repeat for more).
    #[arg(long = "client", value_name = "NAME", requires = "traffic")]
    pub clients: Vec<String>,
    /// Demand at this multiple of the log's: 2 lays time-shifted copies over it, 0.5 thins it.
    #[arg(long, value_name = "FACTOR", requires = "traffic")]
    pub scale: Option<f64>,
    /// The model of requests that name none (a CSV without a model column).
    #[arg(long, value_name = "NAME", requires = "traffic")]
    pub model: Option<String>,
    /// A CSV's columns: `time=when,input=in_tok,output=out_tok,model=llm,client=app,
    /// status=code,latency_ms=ms` (only `time` is needed; the default is the Azure trace's).
    #[arg(long, value_name = "FIELD=COLUMN,…", requires = "traffic")]
    pub columns: Option<String>,
}

impl TrafficArgs {
    /// The `--set` line that replaces the scenario's traffic with the log, if one is given.
    pub fn override_line(&self) -> Result<Option<String>, CliError> {
        let Some(file) = &self.traffic else { return Ok(None) };
        let path =
            std::path::absolute(file).map_err(|e| CliError::BadInput(format!("--traffic {}: {e}", file.display())))?;
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut fields = vec![format!("log = {}", q(&path.to_string_lossy()))];
        for (k, v) in [("format", &self.format), ("from", &self.from), ("to", &self.to), ("model", &self.model)] {
            if let Some(v) = v {
                fields.push(format!("{k} = {}", q(v)));
            }
        }
        if !self.clients.is_empty() {
            let names: Vec<String> = self.clients.iter().map(|c| q(c)).collect();
            fields.push(format!("clients = [{}]", names.join(", ")));
        }
        if let Some(c) = &self.columns {
            let mut map = Vec::new();
            for pair in c.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    CliError::BadInput(format!("--columns: '{pair}' is not FIELD=COLUMN (time=when,input=in_tok,…)"))
                })?;
                map.push(format!("{} = {}", q(k.trim()), q(v.trim())));
            }
            fields.push(format!("columns = {{ {} }}", map.join(", ")));
        }
        if let Some(s) = self.scale {
            if !s.is_finite() {
                return Err(CliError::BadInput("--scale must be a number".into()));
            }
            fields.push(format!("scale = {s:?}"));
        }
        Ok(Some(format!("traffic=[{{ {} }}]", fields.join(", "))))
    }
}

/// Options of the commands that simulate a grid of points (`plan`, `tune-warnings`).
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Points simulated at once (default: every core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Output folder (default: reports/<scenario-name>-plan/ or -tune/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print plan.json or tune.json instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a scenario in virtual time and write its report.
    Run {
        /// The scenario.
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Output folder (default: reports/<scenario-name>/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Seed of every random stream (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Print summary.json instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write requests.csv (one row per request).
        #[arg(long)]
        requests_csv: bool,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
        /// Skip the plots and report.html.
        #[arg(long)]
        no_plots: bool,
    },
    /// Check a scenario file and report every problem in it.
    Validate {
        /// The scenario.
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
    /// Run scenarios as a CI gate: their `[expect]` tables and a committed baseline.
    Gate {
        /// The scenarios.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Override a setting of every scenario, e.g. `--set engine.admission=check-then-act`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        overrides: Vec<String>,
        /// The baseline file (JSON) to compare with.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Write the current figures into the baseline instead of comparing.
        #[arg(long)]
        update_baseline: bool,
        /// Also write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
        /// A traffic log every scenario replays instead of its own `[[traffic]]`.
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Run the same traffic through several engine settings and report them side by side.
    Compare {
        /// The scenario.
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// A variant: `NAME=PATH=VALUE` (repeat a name for several settings) or a bare `NAME`
        /// (the scenario as written). Without any, the scenario's `[compare]` table.
        #[arg(long = "variant", value_name = "NAME[=PATH=VALUE]")]
        variants: Vec<String>,
        /// Output folder (default: reports/<scenario-name>-compare/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print compare.json instead of the table.
        #[arg(long)]
        json: bool,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Find the `[warnings]` settings that meet a goal on the scenario's own traffic: sweep
    /// them over a grid (every point simulated, on all cores) and write a page with the
    /// precision–recall–lead picture and the block to paste.
    TuneWarnings {
        /// The scenario.
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// A swept `[warnings]` setting: `horizon=15m,30m,1h`, `risk_at=0.3,0.5`. Without any:
        /// horizon, risk_at, remind_every, group_wait and busy_at.
        #[arg(long = "sweep", value_name = "KEY=VALUES")]
        sweeps: Vec<String>,
        /// The goal, clauses joined by commas: recall, precision, lead_p50, lead_min (`60s`),
        /// per_hour, per_spell, missed, false_positive, notifications with >=, <=, >, <, ==.
        /// Default: `recall >= 0.9, precision >= 0.9, lead_p50 >= 60s, per_spell <= 1,
        /// per_hour <= 12`.
        #[arg(long)]
        goal: Option<String>,
        /// Where it runs and what it prints.
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// Find the smallest pool that meets a service objective, over a grid of pool sizes and
    /// traffic (every point simulated, on all cores).
    Plan {
        /// The scenario.
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// A swept parameter: `projects=1..20`, `rate=2,4,8` or `rate=1..10:0.5` (requests/s
        /// peak), or any setting: `engine.strategy=round-robin,least-used`. `projects` is
        /// required but with a log, where it runs from 1 to well past what the largest growth
        /// needs.
        #[arg(long = "sweep", value_name = "NAME=VALUES")]
        sweeps: Vec<String>,
        /// The objective as clauses: `denied == 0, wait_p99 <= 2s`, `success >= 0.99`,
        /// `breaches <= 0` (breaches stay at 0 unless bounded); replaces the three below.
        #[arg(long, value_name = "CLAUSES", conflicts_with_all = ["min_success", "max_breaches", "max_queue_p99"])]
        goal: Option<String>,
        /// Multiples of the log's demand to plan for: `1,1.5,2` (each a column; see `scale`).
        #[arg(long, value_name = "FACTORS")]
        growth: Option<String>,
        /// Objective: the smallest success rate (succeeded / requests).
        #[arg(long, default_value_t = 0.99)]
        min_success: f64,
        /// Objective: the most breaches (429s).
        #[arg(long, default_value_t = 0)]
        max_breaches: u64,
        /// Objective: the longest p99 queue wait over all requests (`5s`, `500ms`).
        #[arg(long, value_name = "DURATION")]
        max_queue_p99: Option<String>,
        /// Where it runs and what it prints.
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// Send a scenario's traffic in real time through the engine to a Gemini-compatible API.
    Load {
        /// The scenario.
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Base URL of the API (`http://127.0.0.1:8080` for `keysim mock`).
        #[arg(long)]
        target: String,
        /// Run the scenario this many times faster (run the fake with the same scale).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Also send the same schedule without the engine, with one fixed key.
        #[arg(long)]
        baseline: bool,
        /// Key ids in the scenario name environment variables that hold the real keys.
        #[arg(long)]
        keys_from_env: bool,
        /// Per-request timeout, in seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Engine replicas in this process, each with its own store connection; requests go
        /// to them in turn.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// The quota store the replicas share: redis://host:port or
        /// redis+cluster://host:port,host:port (default: one in-memory store per replica).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The first part of the store's key names.
        #[arg(long, default_value = "keysim", value_name = "PREFIX")]
        store_prefix: String,
        /// The target runs its own engine (`keysim proxy`): send every request straight to
        /// it, none through an engine in the runner.
        #[arg(long)]
        no_engine: bool,
        /// With --no-engine: the environment variable holding the token to present.
        #[arg(long, value_name = "VAR", requires = "no_engine")]
        token_env: Option<String>,
        /// Write the proxy's traffic log (one JSON line per request, schema v1) of the
        /// requests through the engine here; with --no-engine the proxy writes its own.
        #[arg(long, value_name = "FILE", conflicts_with = "no_engine")]
        traffic_log: Option<PathBuf>,
        /// Output folder (default: reports/<scenario-name>-load/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print summary.json instead of the table.
        #[arg(long)]
        json: bool,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
        /// Skip the plots and report.html.
        #[arg(long)]
        no_plots: bool,
    },
    /// Serve the engine in front of Gemini for real clients (the Gemini and OpenAI-compatible
    /// surfaces), until SIGINT or SIGTERM; SIGHUP reloads the pool.
    Proxy(keysim_proxy::cli::ProxyArgs),
    /// Serve the fake Gemini API (quotas, latency and faults of a scenario) until Ctrl-C.
    Mock {
        /// Port to listen on (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// The scenario whose pool is served (default: the built-in quickstart).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Override a setting of the scenario.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        overrides: Vec<String>,
        /// The host: sustained (no per-request memory) or wiremock.
        #[arg(long, value_enum, default_value = "sustained")]
        host: mock::Host,
        /// Run the fake's clock this many times faster than real time.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Seconds the sustained host waits for a request's headers (idle or half-sent
        /// connections are closed after it).
        #[arg(long, default_value_t = 10.0)]
        header_timeout: f64,
        /// Seconds the sustained host waits for a request's body once its headers are in (408).
        #[arg(long, default_value_t = 30.0)]
        body_timeout: f64,
    },
}

/// A failure with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit code 2.
    #[error("{0}")]
    BadInput(String),
    /// Runtime failure: exit code 3.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadInput(_) => 2,
            CliError::Runtime(_) => 3,
        }
    }
}

/// Runs a parsed command line; returns the exit code on success (0, or 1 for failed
/// expectations in gating commands).
pub fn execute(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Run { scenario, out, seed, json, requests_csv, quiet, no_plots } => {
            run::run(&scenario.folded()?, run::RunOptions { out, seed, json, requests_csv, quiet, no_plots })
        }
        Command::Validate { scenario } => run::validate(&scenario.folded()?),
        Command::Load {
            scenario,
            target,
            time_scale,
            baseline,
            keys_from_env,
            timeout,
            replicas,
            store,
            store_prefix,
            no_engine,
            token_env,
            traffic_log,
            out,
            json,
            quiet,
            no_plots,
        } => run::load_run(
            &scenario.folded()?,
            crate::load::LoadOptions {
                target,
                time_scale,
                baseline,
                keys_from_env,
                timeout: if timeout.is_finite() && (0.001..=3600.0).contains(&timeout) {
                    std::time::Duration::from_secs_f64(timeout)
                } else {
                    return Err(CliError::BadInput("--timeout must be a number of seconds from 0.001 to 3600".into()));
                },
                progress: !quiet && !json,
                replicas,
                store,
                store_prefix,
                no_engine,
                token: match token_env {
                    Some(var) => Some(
                        std::env::var(&var)
                            .map_err(|_| CliError::BadInput(format!("--token-env: {var} is not set")))?,
                    ),
                    None => None,
                },
                traffic_log,
            },
            run::RunOptions { out, seed: None, json, requests_csv: false, quiet, no_plots },
        ),
        Command::Gate { scenarios, mut overrides, baseline, update_baseline, junit, quiet, traffic } => {
            if let Some(o) = traffic.override_line()? {
                overrides.insert(0, o);
            }
            gate::gate(gate::GateOptions { scenarios, overrides, baseline, update_baseline, junit, quiet })
        }
        Command::Compare { scenario, variants, out, json, quiet } => {
            compare::compare(compare::CompareOptions { scenario: scenario.folded()?, variants, out, json, quiet })
        }
        Command::Plan { scenario, sweeps, min_success, max_breaches, max_queue_p99, goal, growth, sweep } => {
            let SweepArgs { jobs, out, json, quiet } = sweep;
            let logged = scenario.traffic.traffic.is_some();
            let scenario = scenario.folded()?;
            plan::plan(plan::PlanOptions {
                scenario: scenario.scenario,
                overrides: scenario.overrides,
                logged,
                sweeps,
                min_success,
                max_breaches,
                max_queue_p99,
                goal,
                growth,
                jobs,
                out,
                json,
                quiet,
            })
        }
        Command::TuneWarnings { scenario, sweeps, goal, sweep } => {
            let SweepArgs { jobs, out, json, quiet } = sweep;
            tune::tune(tune::TuneOptions { scenario: scenario.folded()?, sweeps, goal, jobs, out, json, quiet })
        }
        Command::Proxy(args) => keysim_proxy::cli::run(args).map(|()| 0).map_err(|e| match e {
            keysim_proxy::cli::CliError::BadInput(m) => CliError::BadInput(m),
            e => CliError::Runtime(anyhow::anyhow!(e.to_string())),
        }),
        Command::Mock { port, bind, scenario, overrides, host, time_scale, header_timeout, body_timeout } => {
            mock::mock(mock::MockOptions {
                port,
                bind,
                scenario,
                overrides,
                host,
                time_scale,
                header_timeout,
                body_timeout,
            })
        }
    }
}
