//! `PoolAtRisk`: the chance that a model's pool runs dry within a horizon, estimated from the
//! recent distribution of its busiest minutes rather than from a straight line through the
//! last one.
//!
//! Real demand is bursty: a burst of large prompts empties a sliding minute in seconds, so a
//! rule that waits for 80 % of the window fires after the pool ran dry, and a linear trend
//! through the last minute cannot see the next burst coming. What does foretell dry spells is
//! how close the busiest minutes come to the pool's capacity, and how much they swing:
//! bursts that fill a steady 90 % and never more are no risk, peaks that swing between 40 %
//! and 100 % are.
//!
//! Every evaluation takes the pool's sliding-minute load — its admitted requests and tokens, or
//! the requests that arrived where more were asked than admitted ([`crate::Engine::demand`]) —
//! and every minute keeps its busiest moment. The load of a moment is its requests against the pool's
//! *effective* minute capacity at that moment's prompt size: each project carries
//! `min(RPM, TPM ÷ tokens per request)` requests a minute, so a mixed pool (a paid project
//! bound by TPM, free ones bound by RPM) is judged as it really runs dry. Projects whose
//! daily quota runs out within the horizon (at their recent daily rate) are left out of that
//! capacity, while most of the pool stays: the risk is judged on the pool that will be there.
//!
//! Over the last `lookback` minutes of active peaks, the chance that one minute reaches the
//! capacity is the larger of a normal tail fitted to the peaks and the share of minutes that
//! already did; the chance within the horizon follows (`1 − (1 − p)^minutes`). Demand that
//! climbs cleanly (the day's ramp, no burst) is caught by its trend over the last ten
//! minutes, projected ten minutes ahead where it explains most of their spread. The alert
//! fires at [`RiskConfig::fire_at`] while the last minutes are busy (a second, short window
//! in the manner of multi-window burn-rate alerts), and keeps firing until the chance stayed
//! below [`RiskConfig::clear_below`] for [`RiskConfig::keep_firing_ms`]. It carries one series
//! per minute dimension the pool binds on (`rpm`, `tpm` or both), states its horizon, and
//! says what to do: how many projects like the pool's largest would carry its peaks.
//!
//! Memory is bounded by the lookback (one peak a minute per model) and the pool (a short
//! daily history per bucket).

use std::collections::{BTreeMap, VecDeque};

use super::monitor::{human, Change};
use super::pipeline::Labels;
use super::rule::Transition;
use crate::{Ceilings, Dimension, Group, Timestamp, Usage, MINUTE_MS};

/// Settings of the `PoolAtRisk` alert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RiskConfig {
    /// Whether the alert is evaluated.
    pub enabled: bool,
    /// How far ahead it looks, and the horizon it states (at most an hour).
    pub horizon_ms: u64,
    /// How much history of busiest minutes it weighs.
    pub lookback_ms: u64,
    /// The chance of running dry within the horizon at which it fires.
    pub fire_at: f64,
    /// The chance below which it may clear.
    pub clear_below: f64,
    /// How long the chance must stay below `clear_below` before it clears.
    pub keep_firing_ms: u64,
    /// Load (of the effective capacity) that one of the last `recent_ms` minutes must reach
    /// for the alert to fire: the short window that tells a busy period from a quiet one.
    pub busy_at: f64,
    /// The short window.
    pub recent_ms: u64,
    /// History needed before it judges at all.
    pub min_history_ms: u64,
    /// While firing, it says again what it foretells after a dry spell, once the pool has
    /// had room for a minute and the busiest minutes of the last ten give a chance of at
    /// least `fire_at` within the next ten, at most this often
    /// (0: never), so the next burst is foretold in advance rather than under an alert
    /// grown old.
    pub remind_every_ms: u64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            horizon_ms: 60 * MINUTE_MS,
            lookback_ms: 30 * MINUTE_MS,
            fire_at: 0.5,
            clear_below: 0.2,
            keep_firing_ms: 30 * MINUTE_MS,
            busy_at: 0.7,
            recent_ms: 5 * MINUTE_MS,
            min_history_ms: 3 * MINUTE_MS,
            remind_every_ms: 9 * MINUTE_MS,
        }
    }
}

/// A minute's busiest moment: the pool's sliding-minute requests and tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Peak {
    requests: f64,
    tokens: f64,
}

/// The risk state of one model's pool.
#[derive(Debug, Default)]
struct ModelRisk {
    /// Start of the minute being accumulated, and its busiest moment so far (by load).
    minute: Option<(Timestamp, f64, Peak)>,
    /// Busiest moments of closed minutes, oldest first, with each minute's start and its load
    /// against the capacity there was then.
    peaks: VecDeque<(Timestamp, f64, Peak)>,
    /// First evaluation.
    since: Option<Timestamp>,
    /// While firing.
    firing: Option<Firing>,
    /// Tokens per request of the last admitted minute.
    tokens_per_request: f64,
}

/// A firing `PoolAtRisk`.
#[derive(Debug)]
struct Firing {
    since: Timestamp,
    dims: Vec<Dimension>,
    /// The last time the chance was at or above `clear_below`.
    high: Timestamp,
    /// The last time it was told (fired or reminded).
    told: Timestamp,
    /// Since when the pool has had room (below [`QUIET`]), if it has.
    quiet_since: Option<Timestamp>,
}

impl Firing {
    /// Its alerts on `model`, resolved.
    fn resolved(&self, model: &str) -> Vec<Change> {
        self.dims
            .iter()
            .map(|d| Change {
                transition: Transition::Resolved,
                labels: labels(model, *d),
                annotations: Labels::new(),
                since: self.since,
            })
            .collect()
    }
}

/// Per-bucket samples of the daily counters, one a minute, for the daily rate.
#[derive(Debug, Default)]
struct Daily {
    samples: VecDeque<(Timestamp, u64, u64)>,
    day_ends: Timestamp,
}

/// One project's part of a pool, as the risk sees it.
struct Part<'a> {
    project: &'a str,
    rpm: f64,
    tpm: f64,
    /// Whether it has usable keys.
    usable: bool,
    /// Whether it serves now, and whether it still will at the end of the horizon.
    now: bool,
    later: bool,
}

impl Part<'_> {
    /// Requests a minute it carries at `tau` tokens a request.
    fn carries(&self, tau: f64) -> f64 {
        if tau <= 0.0 {
            self.rpm
        } else {
            self.rpm.min(self.tpm / tau)
        }
    }

    /// The dimension it runs out of first at `tau`.
    fn binds_on(&self, tau: f64) -> Dimension {
        if tau > 0.0 && self.tpm / tau < self.rpm {
            Dimension::Tpm
        } else {
            Dimension::Rpm
        }
    }
}

/// The `PoolAtRisk` evaluator of every model.
#[derive(Debug, Default)]
pub(crate) struct Risk {
    models: Vec<ModelRisk>,
    daily: BTreeMap<u32, Daily>,
}

/// The standard normal's upper tail, `P(Z > z)` (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn upper_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        erfc / 2.0
    } else {
        1.0 - erfc / 2.0
    }
}

/// The chance that one minute's load reaches 1, from the loads of recent busy minutes.
fn minute_chance(loads: &[f64]) -> f64 {
    if loads.is_empty() {
        return 0.0;
    }
    let n = loads.len() as f64;
    let mean = loads.iter().sum::<f64>() / n;
    let sd = (loads.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    let normal = if sd > 1e-9 {
        upper_tail((1.0 - mean) / sd)
    } else if mean >= 1.0 {
        1.0
    } else {
        0.0
    };
    let reached = loads.iter().filter(|x| **x >= DRY).count() as f64 / n;
    normal.max(reached)
}

/// The chance that a clean climb of the busiest minutes reaches 1 within `ahead` minutes, if
/// the trend held: least squares over `(minute, load)` points, counted only where it explains
/// most of their spread (R² at least [`RAMP_FIT`]) and climbs.
fn trend_chance(points: &[(f64, f64)], ahead: f64) -> f64 {
    if points.len() < 5 {
        return 0.0;
    }
    let n = points.len() as f64;
    let (mt, mx) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let stt: f64 = points.iter().map(|p| (p.0 - mt) * (p.0 - mt)).sum();
    let stx: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mx)).sum();
    let sxx: f64 = points.iter().map(|p| (p.1 - mx) * (p.1 - mx)).sum();
    if stt <= 0.0 || sxx <= 0.0 {
        return 0.0;
    }
    let slope = stx / stt;
    let explained = stx * stx / (stt * sxx);
    if slope <= 0.0 || explained < RAMP_FIT {
        return 0.0;
    }
    let residual = ((sxx - slope * stx).max(0.0) / (n - 2.0)).sqrt().max(0.02);
    let last = points.iter().map(|p| p.0).fold(f64::MIN, f64::max);
    let at = |t: f64| mx + slope * (t - mt);
    let mut stays = 1.0;
    let mut h = 1.0;
    while h <= ahead {
        stays *= 1.0 - upper_tail((1.0 - at(last + h)) / residual);
        h += 1.0;
    }
    1.0 - stays
}

/// How far ahead a climb is projected, in minutes.
const RAMP_MINUTES: f64 = 10.0;
/// The share of the busiest minutes' spread a climb must explain to count.
const RAMP_FIT: f64 = 0.6;

/// A load at which a minute counts as having run dry (the engine stops a little short of
/// the last request or token).
const DRY: f64 = 0.98;
/// Loads below this are quiet minutes, left out of the fit (gaps between bursts are not
/// the demand's spread).
const ACTIVE: f64 = 0.05;
/// What a reminder looks at: the busiest minutes of this last stretch, and the chance of a
/// dry spell within as long again.
const REMIND_WINDOW_MS: u64 = 10 * MINUTE_MS;
/// The share of its capacity a pool must keep for the projects leaving with their daily quota
/// to count out of the capacity judged.
const STAYS: f64 = 0.5;
/// Below this load the pool has room again: a reminder waits for a minute of it (the spell
/// is over by then).
const QUIET: f64 = 0.9;
/// The share of the peaks the recommendation sizes for.
const TARGET: f64 = 0.9;

impl Risk {
    /// Evaluates `model`'s pool (named `name`) at `now`: `parts` are its buckets with their
    /// project's id and what ordinary traffic may use of each, `usage` their counters, and
    /// `asked` the requests that reached the engine in the last minute.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate(
        &mut self,
        config: &RiskConfig,
        model: usize,
        name: &str,
        parts: &[(&Group, &str, &Ceilings)],
        usage: &[Usage],
        asked: u64,
        now: Timestamp,
    ) -> Vec<Change> {
        if self.models.len() <= model {
            self.models.resize_with(model + 1, ModelRisk::default);
        }
        let view = self.view(parts, usage, now, now.plus(config.horizon_ms));
        let m = &mut self.models[model];
        let since = *m.since.get_or_insert(now);
        let (sample, load_now) = m.sample(&view, asked);
        m.record(sample, load_now, now, config.lookback_ms);
        let minute_capacity = view.minute_capacity(tau(&sample));
        if !config.enabled || (!minute_capacity && m.firing.is_none()) {
            return Vec::new();
        }
        let r = m.read(&view, config, now);
        let judged = now.since(since) >= config.min_history_ms;
        let say = |transition: Transition, dims: &[Dimension], since: Timestamp| -> Vec<Change> {
            let (_, top, peak) = r.top.expect("a busy minute was seen");
            let summary = summary(name, &view, &peak, top, r.chance, config.horizon_ms);
            let annotations: Labels = [
                ("summary".to_owned(), summary),
                ("horizon".to_owned(), format!("{}s", config.horizon_ms / 1000)),
                ("chance".to_owned(), format!("{:.2}", r.chance)),
            ]
            .into_iter()
            .collect();
            dims.iter()
                .map(|d| Change { transition, labels: labels(name, *d), annotations: annotations.clone(), since })
                .collect()
        };
        match &mut m.firing {
            None if judged && r.busy && r.chance >= config.fire_at => {
                let (_, _, peak) = r.top.expect("a busy minute was seen");
                let dims = view.binding_dims(tau(&peak));
                let out = say(Transition::Fired, &dims, now);
                m.firing = Some(Firing { since: now, dims, high: now, told: now, quiet_since: None });
                out
            }
            Some(f) => {
                if r.chance >= config.clear_below {
                    f.high = now;
                }
                f.quiet_since = if load_now < QUIET { f.quiet_since.or(Some(now)) } else { None };
                let quiet = f.quiet_since.is_some_and(|q| now.since(q) >= MINUTE_MS);
                if now.since(f.high) >= config.keep_firing_ms {
                    let out = f.resolved(name);
                    m.firing = None;
                    out
                } else if config.remind_every_ms > 0
                    && minute_capacity
                    && now.since(f.told) >= config.remind_every_ms
                    && quiet
                    && r.dry_recently
                    && r.soon >= config.fire_at
                {
                    f.told = now;
                    say(Transition::Reminded, &f.dims, f.since)
                } else {
                    Vec::new()
                }
            }
            None => Vec::new(),
        }
    }

    /// `model`'s pool has no bucket left: a firing alert resolves (there is nothing to run
    /// dry), and its history is forgotten.
    pub(crate) fn emptied(&mut self, model: usize, name: &str) -> Vec<Change> {
        let Some(m) = self.models.get_mut(model) else { return Vec::new() };
        let out = m.firing.take().map_or_else(Vec::new, |f| f.resolved(name));
        *m = ModelRisk::default();
        out
    }

    /// The pool as the risk sees it at `now`: each project's part, and which run out of daily
    /// quota before `horizon_end`.
    fn view<'a>(
        &mut self,
        parts: &[(&Group, &'a str, &Ceilings)],
        usage: &[Usage],
        now: Timestamp,
        horizon_end: Timestamp,
    ) -> View<'a> {
        let mut view = View { parts: Vec::with_capacity(parts.len()), ending: Vec::new(), requests: 0.0, tokens: 0.0 };
        for ((g, project, c), u) in parts.iter().zip(usage) {
            view.requests += u.minute_requests as f64;
            view.tokens += u.minute_tokens as f64;
            let (now_ok, later_ok) = self.daily_state(g.bucket.0, c, u, now, horizon_end);
            let limit = |d: Dimension| match c.get(d) {
                u64::MAX => f64::INFINITY,
                x => x as f64,
            };
            let usable = !g.keys.is_empty();
            if usable && now_ok && !later_ok {
                view.ending.push(project);
            }
            view.parts.push(Part {
                project,
                rpm: limit(Dimension::Rpm),
                tpm: limit(Dimension::Tpm),
                usable,
                now: usable && now_ok,
                later: usable && later_ok,
            });
        }
        view
    }

    /// Whether bucket `bucket` has daily quota now, and still will at `horizon_end` at its
    /// recent daily rate.
    fn daily_state(
        &mut self,
        bucket: u32,
        c: &Ceilings,
        u: &Usage,
        now: Timestamp,
        horizon_end: Timestamp,
    ) -> (bool, bool) {
        let d = self.daily.entry(bucket).or_default();
        if d.day_ends != u.day_ends {
            d.samples.clear();
            d.day_ends = u.day_ends;
        }
        if d.samples.back().is_none_or(|(t, _, _)| now.since(*t) >= MINUTE_MS) {
            d.samples.push_back((now, u.day_requests, u.day_tokens));
            while d.samples.len() > 31 {
                d.samples.pop_front();
            }
        }
        let mut now_ok = true;
        let mut later_ok = true;
        for (dim, used, i) in [(Dimension::Rpd, u.day_requests, 1usize), (Dimension::Tpd, u.day_tokens, 2)] {
            let limit = c.get(dim);
            if limit == u64::MAX {
                continue;
            }
            // A ceiling of 0 (a reserve that takes the whole daily quota) leaves ordinary
            // traffic nothing, as a quota spent does.
            if used >= limit {
                now_ok = false;
                later_ok = false;
                continue;
            }
            let Some(first) = d.samples.front() else { continue };
            let span = now.since(first.0);
            let was = if i == 1 { first.1 } else { first.2 };
            if span < MINUTE_MS || used <= was {
                continue;
            }
            let rate = (used - was) as f64 / span as f64;
            let runs_out = now.plus(((limit - used) as f64 / rate).ceil() as u64);
            if runs_out <= horizon_end && runs_out < u.day_ends {
                later_ok = false;
            }
        }
        (now_ok, later_ok)
    }

    /// Forgets the state of buckets that left the pool (kept: those in `alive`).
    pub(crate) fn retain_buckets(&mut self, alive: &[u32]) {
        self.daily.retain(|b, _| alive.contains(b));
    }
}

/// The alert's summary: where the pool's peaks stand, the chance, and what to do.
fn summary(name: &str, view: &View<'_>, peak: &Peak, top: f64, chance: f64, horizon_ms: u64) -> String {
    let t = tau(peak);
    let mut s = format!(
        "the {name} pool's busiest minutes reach {:.0}% of its capacity ({}): {:.0}% chance it runs dry within {}; {}",
        top.min(9.99) * 100.0,
        binding(&view.parts, t),
        chance * 100.0,
        human(horizon_ms),
        advice(&view.parts, peak, t, view.capacity(t, false), view.capacity(t, true)),
    );
    if !view.ending.is_empty() {
        s.push_str(&format!("; {} run out of daily quota within the horizon", list(&view.ending)));
    }
    s
}

/// The pool at one evaluation: its projects' parts, those whose daily quota ends within the
/// horizon, and its sliding-minute usage.
struct View<'a> {
    parts: Vec<Part<'a>>,
    ending: Vec<&'a str>,
    requests: f64,
    tokens: f64,
}

impl View<'_> {
    /// Requests a minute the pool carries at `tau` tokens a request: now, or (`later`) once the
    /// projects leaving with their daily quota are gone — counted out only while most of the
    /// pool stays (where most of it goes, the pool runs out of its day, which the daily alerts
    /// tell).
    fn capacity(&self, tau: f64, later: bool) -> f64 {
        let has: f64 = self.parts.iter().filter(|p| p.now).map(|p| p.carries(tau)).sum();
        if !later {
            return has;
        }
        let stays: f64 = self.parts.iter().filter(|p| p.later).map(|p| p.carries(tau)).sum();
        if stays >= STAYS * has {
            stays
        } else {
            has
        }
    }

    /// Whether the pool still has most of its minute capacity (it has not lost most of it
    /// with its daily quota, which the daily alerts tell).
    fn minute_capacity(&self, tau: f64) -> bool {
        let all: f64 = self.parts.iter().filter(|p| p.usable).map(|p| p.carries(tau)).sum();
        self.parts.iter().any(|p| p.now) && self.capacity(tau, false) >= STAYS * all
    }

    /// The minute dimensions its projects run out of first at `tau`.
    fn binding_dims(&self, tau: f64) -> Vec<Dimension> {
        let mut dims: Vec<Dimension> =
            self.parts.iter().filter(|p| p.later || p.now).map(|p| p.binds_on(tau)).collect();
        dims.sort_unstable();
        dims.dedup();
        dims
    }
}

/// Tokens per request of a moment (0 when it had none).
fn tau(p: &Peak) -> f64 {
    if p.requests > 0.0 {
        p.tokens / p.requests
    } else {
        0.0
    }
}

/// Requests against a capacity; `if_none` when there is no capacity but there are requests.
fn load(requests: f64, capacity: f64, if_none: f64) -> f64 {
    if capacity > 0.0 {
        requests / capacity
    } else if requests > 0.0 {
        if_none
    } else {
        0.0
    }
}

/// A `PoolAtRisk` alert's labels.
fn labels(model: &str, d: Dimension) -> Labels {
    [("alertname", "PoolAtRisk"), ("model", model), ("dimension", d.name()), ("severity", "warning")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the busiest minutes say at one evaluation.
struct Reading {
    /// The chance of running dry within the horizon.
    chance: f64,
    /// The chance within the next ten minutes, from the last ten alone.
    soon: f64,
    /// Whether one of the last `recent` minutes reached `busy_at`.
    busy: bool,
    /// Whether the pool really ran dry (against the capacity it had then) lately.
    dry_recently: bool,
    /// The busiest minute against the pool that will be there: (start, load, moment).
    top: Option<(Timestamp, f64, Peak)>,
}

impl ModelRisk {
    /// This moment of the pool: its admitted usage, or its demand where more was asked than
    /// admitted (queued, turned away) — as many requests as arrived, at the prompt size of
    /// those admitted (or the last seen); and its load against the capacity there is now.
    fn sample(&mut self, view: &View<'_>, asked: u64) -> (Peak, f64) {
        if view.requests > 0.0 {
            self.tokens_per_request = view.tokens / view.requests;
        }
        let asked = asked as f64;
        let sample = if asked > view.requests {
            Peak { requests: asked, tokens: asked * self.tokens_per_request }
        } else {
            Peak { requests: view.requests, tokens: view.tokens }
        };
        (sample, load(sample.requests, view.capacity(tau(&sample), false), 1.0))
    }

    /// This moment joins its minute's busiest; minutes older than `lookback_ms` leave.
    fn record(&mut self, sample: Peak, load_now: f64, now: Timestamp, lookback_ms: u64) {
        match &mut self.minute {
            Some((start, _, _)) if now.since(*start) >= MINUTE_MS => {
                let (start, load, peak) = self.minute.take().expect("matched");
                self.peaks.push_back((start, load, peak));
                self.minute = Some((now, load_now, sample));
            }
            Some((_, best, peak)) => {
                if load_now > *best {
                    *best = load_now;
                    *peak = sample;
                }
            }
            None => self.minute = Some((now, load_now, sample)),
        }
        while self.peaks.front().is_some_and(|(t, _, _)| now.since(*t) > lookback_ms) {
            self.peaks.pop_front();
        }
    }

    /// Every busiest minute judged against the pool that will be there, and what they say.
    fn read(&self, view: &View<'_>, config: &RiskConfig, now: Timestamp) -> Reading {
        let minutes_kept = self.peaks.iter().chain(self.minute.iter());
        let dry_recently = minutes_kept.clone().any(|(t, x, _)| now.since(*t) < config.recent_ms && *x >= DRY);
        let loads: Vec<(Timestamp, f64, Peak)> = minutes_kept
            .map(|(t, _, p)| (*t, load(p.requests, view.capacity(tau(p), true), f64::INFINITY), *p))
            .collect();
        let active: Vec<f64> = loads.iter().map(|l| l.1.min(2.0)).filter(|x| *x >= ACTIVE).collect();
        let minutes = (config.horizon_ms as f64 / MINUTE_MS as f64).max(1.0);
        // Only busy minutes can run dry: the horizon holds as many as the lookback's share.
        let busy_share = active.len() as f64 / loads.len().max(1) as f64;
        let last = |window: u64| loads.iter().filter(move |(t, _, _)| now.since(*t) < window);
        // Demand that climbs steadily (the day's ramp) runs the pool dry with no burst: its
        // trend over the last minutes, where it is clean, is projected a little way ahead.
        let climb: Vec<(f64, f64)> =
            last(REMIND_WINDOW_MS).map(|(t, x, _)| (t.0 as f64 / MINUTE_MS as f64, x.min(2.0))).collect();
        let chance = (1.0 - (1.0 - minute_chance(&active)).powf(minutes * busy_share))
            .max(trend_chance(&climb, minutes.min(RAMP_MINUTES)));
        // The short view a reminder needs: the chance within the next minutes, from the last
        // minutes alone (an old burst does not call for a new notice).
        let recent: Vec<f64> = last(REMIND_WINDOW_MS).map(|l| l.1.min(2.0)).filter(|x| *x >= ACTIVE).collect();
        let soon = 1.0 - (1.0 - minute_chance(&recent)).powf((REMIND_WINDOW_MS / MINUTE_MS) as f64);
        let busy = last(config.recent_ms).any(|l| l.1 >= config.busy_at);
        let top = loads.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
        Reading { chance, soon, busy, dry_recently, top }
    }
}

/// Which projects bind on which dimension at `tau`, in words.
fn binding(pool: &[Part<'_>], tau: f64) -> String {
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in pool.iter().filter(|p| p.now || p.later) {
        by.entry(p.binds_on(tau).name()).or_default().push(p.project);
    }
    let parts: Vec<String> = by.iter().map(|(d, ps)| format!("{} on {}", d.to_uppercase(), list(ps))).collect();
    parts.join(", ")
}

/// "a", "a and b", "a, b and 4 more".
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [a] => (*a).to_owned(),
        [a, b] => format!("{a} and {b}"),
        [a, b, rest @ ..] => format!("{a}, {b} and {} more", rest.len()),
    }
}

/// What to do: projects like the pool's largest that would carry the busiest minute seen at
/// [`TARGET`] of the capacity that will be there.
fn advice(pool: &[Part<'_>], peak: &Peak, tau: f64, now: f64, later: f64) -> String {
    let Some(best) = pool.iter().max_by(|a, b| a.carries(tau).total_cmp(&b.carries(tau))) else {
        return "add projects to the pool".to_owned();
    };
    let each = best.carries(tau);
    let need = peak.requests / TARGET - later;
    let n = if each > 0.0 && each.is_finite() { (need / each).ceil().max(1.0) as u64 } else { 1 };
    let lost =
        if later < now { format!(" (it falls from {now:.0} to {later:.0} requests a minute)") } else { String::new() };
    format!(
        "add {n} project{} like {} to carry its busiest minute at 90 %{lost}, or move demand off it",
        if n == 1 { "" } else { "s" },
        best.project
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_tail_is_accurate() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-6);
        assert!((upper_tail(1.0) - 0.158_655).abs() < 1e-5);
        assert!((upper_tail(-2.0) - 0.977_25).abs() < 1e-5);
        assert!(upper_tail(8.0) < 1e-12);
    }

    #[test]
    fn a_clean_climb_is_projected_and_a_swinging_one_is_not() {
        let climb: Vec<(f64, f64)> = (0..8).map(|i| (i as f64, 0.45 + 0.06 * i as f64)).collect();
        assert!(trend_chance(&climb, 10.0) > 0.9, "0.87 and climbing 6 % a minute");
        let flat: Vec<(f64, f64)> = (0..8).map(|i| (i as f64, 0.9)).collect();
        assert_eq!(trend_chance(&flat, 10.0), 0.0);
        let swinging: Vec<(f64, f64)> =
            [0.2, 0.9, 0.1, 0.8, 0.3, 0.95, 0.2, 0.85].iter().enumerate().map(|(i, x)| (i as f64, *x)).collect();
        assert_eq!(trend_chance(&swinging, 10.0), 0.0, "bursts are not a trend");
    }

    #[test]
    fn steady_peaks_below_capacity_are_no_risk_and_swinging_ones_are() {
        assert_eq!(minute_chance(&[0.9; 30]), 0.0, "a steady 90 % never runs dry");
        let swinging = [0.4, 0.7, 1.0, 0.5, 0.95, 0.6, 0.8, 0.45];
        let p = minute_chance(&swinging);
        assert!(p > 0.1, "{p}");
        let quiet = [0.2, 0.3, 0.25, 0.35, 0.3];
        assert!(minute_chance(&quiet) < 1e-6);
    }
}
