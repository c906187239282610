//! `keysim run` and `keysim validate`.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;

use super::{CliError, ScenarioArgs};
use crate::notify::webhook::{Webhook, WebhookStats};
use crate::notify::{Fanout, JsonLines, LogLine, Sink};
use crate::report::plots::{self, RunData};
use crate::report::summary::{RunMode, Summary};
use crate::report::table;
use crate::scenario::{self, LoadError, Scenario};
use crate::sim::{simulate, Outputs};

/// How long a run waits at its end for the webhook to deliver what is queued.
const WEBHOOK_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The notification sinks a scenario asks for.
struct Sinks {
    jsonl: Option<JsonLines<BufWriter<File>>>,
    log: Option<LogLine>,
    webhook: Option<Webhook>,
}

impl Sinks {
    fn new(sc: &Scenario, dir: &std::path::Path, quiet: bool) -> Result<Self, CliError> {
        let Some(w) = &sc.warnings else { return Ok(Self { jsonl: None, log: None, webhook: None }) };
        let receiver = w.webhook.as_ref().map_or("keysim", |h| h.receiver.as_str());
        let jsonl = JsonLines::new(create(&dir.join("notifications.jsonl"))?, receiver);
        if w.log && !quiet {
            // Notifications as log lines on stderr; a second run in one process keeps the first's.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(tracing::Level::INFO)
                .with_target(true)
                .without_time()
                .try_init();
        }
        let webhook = w.webhook.as_ref().map(Webhook::start).transpose().map_err(CliError::BadInput)?;
        Ok(Self { jsonl: Some(jsonl), log: (w.log && !quiet).then_some(LogLine), webhook })
    }

    fn fanout(&mut self) -> Option<Fanout<'_>> {
        self.jsonl.as_ref()?;
        let mut f = Fanout::default();
        if let Some(j) = self.jsonl.as_mut() {
            f.0.push(j);
        }
        if let Some(l) = self.log.as_mut() {
            f.0.push(l);
        }
        if let Some(w) = self.webhook.as_mut() {
            f.0.push(w);
        }
        Some(f)
    }

    fn finish(self) -> Result<Option<WebhookStats>, CliError> {
        if let Some(j) = self.jsonl {
            j.finish().context("writing notifications.jsonl")?;
        }
        Ok(self.webhook.map(|w| w.finish(WEBHOOK_GRACE)))
    }
}

pub(super) struct RunOptions {
    pub(super) out: Option<PathBuf>,
    pub(super) seed: Option<u64>,
    pub(super) json: bool,
    pub(super) requests_csv: bool,
    pub(super) quiet: bool,
    pub(super) no_plots: bool,
}

pub(super) fn load(args: &ScenarioArgs) -> Result<Scenario, CliError> {
    scenario::load(&args.scenario, &args.overrides).map_err(bad_scenario)
}

/// A scenario for the fake alone: `[[traffic]]` optional.
pub(super) fn load_pool(args: &ScenarioArgs) -> Result<Scenario, CliError> {
    scenario::load_pool(&args.scenario, &args.overrides).map_err(bad_scenario)
}

fn bad_scenario(e: LoadError) -> CliError {
    match e {
        LoadError::Invalid(d) => CliError::BadInput(d.to_string()),
        other => CliError::BadInput(other.to_string()),
    }
}

pub(super) fn validate(args: &ScenarioArgs) -> Result<i32, CliError> {
    let sc = load(args)?;
    let keys: usize = sc.projects.iter().map(|p| p.keys.len()).sum();
    println!(
        "ok: {} — {} model(s), {} project(s), {} key(s), {} traffic class(es), {} event(s), {} expectation(s)",
        sc.name,
        sc.models.len(),
        sc.projects.len(),
        keys,
        sc.traffic.len(),
        sc.events.len(),
        sc.expect.len()
    );
    Ok(0)
}

fn create(path: &std::path::Path) -> Result<BufWriter<File>, CliError> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::new(f))
}

pub(super) fn run(args: &ScenarioArgs, opts: RunOptions) -> Result<i32, CliError> {
    let mut sc = load(args)?;
    if let Some(seed) = opts.seed {
        sc.seed = seed;
        sc.engine.config.seed = seed;
    }
    let dir = opts.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(&sc.name));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating output folder {}", dir.display()))?;
    let mut timeline = create(&dir.join("timeline.csv"))?;
    let mut requests =
        if opts.requests_csv || sc.requests_csv { Some(create(&dir.join("requests.csv"))?) } else { None };
    let mut sinks = Sinks::new(&sc, &dir, opts.quiet || opts.json)?;
    let mut fanout = sinks.fanout();
    // Progress on a terminal only (indicatif draws nothing elsewhere), never with --quiet/--json.
    let bar = (!opts.quiet && !opts.json).then(|| crate::report::progress(sc.duration_ms, "simulating"));
    let tick = |ms: u64| {
        if let Some(b) = &bar {
            b.set_position(ms / 1000);
        }
    };
    let outputs = Outputs {
        timeline: Some(&mut timeline),
        requests: requests.as_mut().map(|w| w as &mut (dyn std::io::Write + Send)),
        notifications: fanout.as_mut().map(|f| f as &mut dyn Sink),
        progress: Some(&tick),
        trace: !opts.no_plots,
    };
    let started = std::time::Instant::now();
    let result = simulate(&sc, outputs).with_context(|| format!("simulating {}", sc.name))?;
    let wall = started.elapsed().as_secs_f64();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    drop(fanout);
    drop(timeline);
    drop(requests);
    let webhook = sinks.finish()?;
    let mut summary = Summary::new(&sc, RunMode::Sim, &result.aggregate, &result.engine);
    summary.warnings.webhook = webhook;
    let data = RunData {
        scenario: &sc,
        aggregate: &result.aggregate,
        trace: result.trace.as_ref(),
        outcomes: None,
        end_to_end_us: None,
    };
    pictures(&summary, &dir, &opts, &data)?;
    let n = summary.requests.total;
    let speed = format!(
        "\nsimulated {n} requests ({} events) in {wall:.2} s of wall time: {:.2} million requests/s",
        result.events,
        n as f64 / wall.max(1e-9) / 1e6
    );
    report(&summary, &dir, &opts, Some(&speed))
}

/// Draws the run's plots into `dir/plots/` and writes `report.html` (unless `--no-plots`).
fn pictures(summary: &Summary, dir: &std::path::Path, opts: &RunOptions, data: &RunData<'_>) -> Result<(), CliError> {
    if opts.no_plots {
        return Ok(());
    }
    write_pictures(summary, dir, data)
}

/// Draws a run's plots into `dir/plots/` and writes its `report.html`.
pub(super) fn write_pictures(summary: &Summary, dir: &std::path::Path, data: &RunData<'_>) -> Result<(), CliError> {
    let drawn = plots::write(dir, plots::figures(data))?;
    let path = dir.join("report.html");
    let html = crate::report::html::run_report(summary, data.scenario.description.as_deref(), &drawn);
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `summary.json` into `dir`, then prints it (`--json`), or the table, unless quiet.
fn report(summary: &Summary, dir: &std::path::Path, opts: &RunOptions, footer: Option<&str>) -> Result<i32, CliError> {
    let json = serde_json::to_string_pretty(summary).context("serialising the summary")?;
    let path = dir.join("summary.json");
    std::fs::write(&path, format!("{json}\n")).with_context(|| format!("writing {}", path.display()))?;
    if opts.json {
        println!("{json}");
    } else if !opts.quiet {
        print!("{}", table::render(summary));
        if let Some(f) = footer {
            println!("{f}");
        }
        println!("report: {}", dir.display());
    }
    // The report is written either way; failed expectations are the exit code's to say.
    Ok(if summary.passed() { 0 } else { 1 })
}

/// `keysim load`: the report of a real-time run, as `run` writes one.
pub(super) fn load_run(args: &ScenarioArgs, how: crate::load::LoadOptions, opts: RunOptions) -> Result<i32, CliError> {
    let sc = load(args)?;
    let dir = opts.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-load", sc.name)));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating output folder {}", dir.display()))?;
    let result = crate::load::run_load(&sc, &how).map_err(|e| match e {
        crate::load::LoadError::Bad(m) => CliError::BadInput(m),
        other => CliError::Runtime(anyhow::anyhow!("load run of {}: {other}", sc.name)),
    })?;
    let mut summary = Summary::new(&sc, RunMode::Load, &result.aggregate, &result.engine);
    let f = &result.figures;
    summary.load = Some(f.clone());
    let e2e = f.end_to_end_us.as_ref().map(|h| (h, f.baseline_end_to_end_us.as_ref()));
    let data = RunData {
        scenario: &sc,
        aggregate: &result.aggregate,
        trace: None,
        outcomes: f.outcomes.as_ref(),
        end_to_end_us: e2e,
    };
    pictures(&summary, &dir, &opts, &data)?;
    report(&summary, &dir, &opts, None)
}
