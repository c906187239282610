//! The run's story over time, kept for the plots: usage against limits per (project, model),
//! the pool's capacity per model, exhaustion spells and notifications.
//!
//! Memory is bounded whatever the run's length: when the points outgrow their budget,
//! neighbours merge (peaks keep their maximum, counts add up) and each point spans twice the
//! ticks.

use crate::engine::Timestamp;

/// Usage of one (project, model) over one point: peaks as fractions of the limits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cell {
    /// Peak requests in a minute window / RPM.
    pub rpm: f32,
    /// Peak tokens in a minute window / TPM.
    pub tpm: f32,
    /// Requests of the day / RPD, at the point's end.
    pub rpd: f32,
    /// Input tokens of the day / TPD (0 where the day's tokens are not limited).
    pub tpd: f32,
    /// Requests the provider accepted.
    pub requests: u32,
    /// Requests the provider refused with 429.
    pub breaches: u32,
}

impl Cell {
    fn merge(&mut self, o: &Cell) {
        self.rpm = self.rpm.max(o.rpm);
        self.tpm = self.tpm.max(o.tpm);
        self.rpd = o.rpd;
        self.tpd = o.tpd;
        self.requests += o.requests;
        self.breaches += o.breaches;
    }

    /// The usage fraction of dimension `d` (0 RPM, 1 TPM, 2 RPD, 3 TPD).
    pub fn get(&self, d: usize) -> f32 {
        [self.rpm, self.tpm, self.rpd, self.tpd][d]
    }
}

/// What one model's pool could still serve, at the point's lowest.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Room {
    /// Remaining / usable, per RPM, TPM, RPD, TPD.
    pub remaining: [f32; 4],
    /// Projects with a usable key.
    pub projects: u32,
    /// Usable keys.
    pub keys: u32,
}

impl Room {
    fn merge(&mut self, o: &Room) {
        for d in 0..4 {
            self.remaining[d] = self.remaining[d].min(o.remaining[d]);
        }
        self.projects = o.projects;
        self.keys = o.keys;
    }
}

/// A spell in which a model's pool had nothing left on a dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spell {
    /// Its start, ms from the run's start.
    pub at_ms: u64,
    /// Model index.
    pub model: usize,
    /// Dimension index (RPM, TPM, RPD, TPD).
    pub dimension: usize,
    /// Lead of the warning that came before it, if one did.
    pub warned_ms: Option<u64>,
}

/// A key-health event as the capacity plot marks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthMark {
    /// A key disabled after the provider rejected it.
    KeyDisabled,
    /// A disabled key revived by its probe.
    KeyRevived,
    /// A model backing off pool-wide for want of provider capacity.
    ModelBackoff,
    /// A limit learned from a 429.
    LimitLearned,
}

impl Trace {
    /// Records the engine's health events (those of the run, from `start`).
    pub fn health_events(&mut self, events: &[crate::engine::health::HealthEvent], start: Timestamp) {
        use crate::engine::health::HealthEvent as E;
        self.health = events
            .iter()
            .filter_map(|e| {
                let (at, mark) = match e {
                    E::KeyDisabled { at, .. } => (at, HealthMark::KeyDisabled),
                    E::KeyRevived { at, .. } => (at, HealthMark::KeyRevived),
                    E::ModelBackoff { at, .. } => (at, HealthMark::ModelBackoff),
                    E::LimitLearned { at, .. } => (at, HealthMark::LimitLearned),
                    E::KeyProbed { .. } | E::ModelRecovered { .. } => return None,
                };
                Some((at.since(start), mark))
            })
            .collect();
    }
}

/// A notification as the plots show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// When it went out, ms from the run's start.
    pub at_ms: u64,
    /// Firing (or resolved).
    pub firing: bool,
    /// The (model, dimension index) pairs its alerts name.
    pub about: Vec<(usize, usize)>,
}

/// Requests by terminal state, per interval of their end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Interval width, ms.
    pub interval_ms: u64,
    /// `[succeeded, breaches, denied, failed]` per interval; requests that end after the
    /// last interval allowed count in it.
    pub counts: Vec<[u64; 4]>,
}

/// Most intervals an [`Outcomes`] keeps.
const MAX_INTERVALS: usize = 100_000;

impl Outcomes {
    /// Intervals of `interval_ms` (at least 1 ms).
    pub fn new(interval_ms: u64) -> Self {
        Self { interval_ms: interval_ms.max(1), counts: Vec::new() }
    }

    /// A request ended at `end_ms` (from the run's start) in `state`.
    pub fn record(&mut self, end_ms: u64, state: super::Terminal) {
        let i = ((end_ms / self.interval_ms) as usize).min(MAX_INTERVALS - 1);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, [0; 4]);
        }
        let s = match state {
            super::Terminal::Succeeded => 0,
            super::Terminal::Breach => 1,
            super::Terminal::Denied => 2,
            super::Terminal::Failed => 3,
        };
        self.counts[i][s] += 1;
    }
}

/// Most spells and notices kept (the rest are counted in the summary only).
const MAX_EVENTS: usize = 20_000;

/// The recorder.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Projects (ids).
    pub projects: Vec<String>,
    /// Models (names).
    pub models: Vec<String>,
    /// Ticks merged into one point.
    pub stride: u32,
    filled: u32,
    max_points: usize,
    /// Start of each point, ms from the run's start.
    pub t_ms: Vec<u64>,
    /// `usage[point * projects * models + project * models + model]`.
    pub usage: Vec<Cell>,
    /// `room[point * models + model]`.
    pub room: Vec<Room>,
    /// Exhaustion spells, by time.
    pub spells: Vec<Spell>,
    /// Notifications, by time.
    pub notices: Vec<Notice>,
    /// What the engine did about the pool's health, by time (ms from the run's start).
    pub health: Vec<(u64, HealthMark)>,
    /// Requests by terminal state over time.
    pub outcomes: Outcomes,
}

impl Trace {
    /// A recorder for a pool of `projects` × `models`, within about `budget` cells.
    pub fn new(projects: Vec<String>, models: Vec<String>, budget: usize, interval_ms: u64) -> Self {
        let per_point = (projects.len() * models.len()).max(1);
        // Even, so that halving merges every point with a neighbour.
        let max_points = (budget / per_point).clamp(32, 720) & !1;
        Self {
            projects,
            models,
            stride: 1,
            filled: 0,
            max_points,
            t_ms: Vec::new(),
            usage: Vec::new(),
            room: Vec::new(),
            spells: Vec::new(),
            notices: Vec::new(),
            health: Vec::new(),
            outcomes: Outcomes::new(interval_ms),
        }
    }

    fn width(&self) -> usize {
        self.projects.len() * self.models.len()
    }

    /// Points recorded.
    pub fn points(&self) -> usize {
        self.t_ms.len()
    }

    /// Usage of `(project, model)` at `point`.
    pub fn cell(&self, point: usize, project: usize, model: usize) -> &Cell {
        &self.usage[point * self.width() + project * self.models.len() + model]
    }

    /// Capacity of `model` at `point`.
    pub fn room(&self, point: usize, model: usize) -> &Room {
        &self.room[point * self.models.len() + model]
    }

    /// One tick at `t_ms`: `cells` in (project, model) order, `rooms` per model.
    pub fn tick(&mut self, t_ms: u64, cells: &[Cell], rooms: &[Room]) {
        debug_assert_eq!(cells.len(), self.width());
        if self.filled == 0 {
            if self.t_ms.len() == self.max_points {
                self.halve();
            }
            self.t_ms.push(t_ms);
            self.usage.extend_from_slice(cells);
            self.room.extend_from_slice(rooms);
        } else {
            let (w, m) = (self.width(), self.models.len());
            let base = self.usage.len() - w;
            for (c, n) in self.usage[base..].iter_mut().zip(cells) {
                c.merge(n);
            }
            let base = self.room.len() - m;
            for (r, n) in self.room[base..].iter_mut().zip(rooms) {
                r.merge(n);
            }
        }
        self.filled = (self.filled + 1) % self.stride;
    }

    /// Merges neighbouring points: half the points, each twice as wide.
    fn halve(&mut self) {
        let (w, m) = (self.width(), self.models.len());
        let n = self.t_ms.len() / 2;
        for i in 0..n {
            self.t_ms[i] = self.t_ms[2 * i];
            for j in 0..w {
                let mut c = self.usage[2 * i * w + j];
                c.merge(&self.usage[(2 * i + 1) * w + j]);
                self.usage[i * w + j] = c;
            }
            for j in 0..m {
                let mut r = self.room[2 * i * m + j];
                r.merge(&self.room[(2 * i + 1) * m + j]);
                self.room[i * m + j] = r;
            }
        }
        self.t_ms.truncate(n);
        self.usage.truncate(n * w);
        self.room.truncate(n * m);
        self.stride *= 2;
    }

    /// A spell began at `at`, `start` being the run's start.
    pub fn spell(&mut self, start: Timestamp, at: Timestamp, model: usize, dimension: usize, warned_ms: Option<u64>) {
        if self.spells.len() < MAX_EVENTS {
            self.spells.push(Spell { at_ms: at.since(start), model, dimension, warned_ms });
        }
    }

    /// A notification went out.
    pub fn notice(&mut self, n: Notice) {
        if self.notices.len() < MAX_EVENTS {
            self.notices.push(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(rpm: f32, breaches: u32) -> Cell {
        Cell { rpm, tpm: 0.0, rpd: rpm, tpd: 0.0, requests: 1, breaches }
    }

    #[test]
    fn points_stay_within_budget_and_keep_peaks_and_counts() {
        let mut t = Trace::new(vec!["p".into()], vec!["m".into()], 32, 1000);
        let room = [Room { remaining: [1.0; 4], projects: 1, keys: 1 }];
        for i in 0..1000u64 {
            let peak = if i == 777 { 2.0 } else { 0.5 };
            t.tick(i * 1000, &[cell(peak, u32::from(i % 10 == 0))], &room);
        }
        assert!(t.points() <= 32, "{} points", t.points());
        assert_eq!(t.stride, 32);
        let cells: Vec<Cell> = (0..t.points()).map(|p| *t.cell(p, 0, 0)).collect();
        assert_eq!(cells.iter().map(|c| c.requests).sum::<u32>(), 1000, "every tick counted once");
        assert_eq!(cells.iter().map(|c| c.breaches).sum::<u32>(), 100);
        assert_eq!(cells.iter().filter(|c| c.rpm == 2.0).count(), 1, "the peak survives merging");
        assert_eq!(t.t_ms[0], 0);
        assert_eq!(t.t_ms[1], 32_000);
    }
}
