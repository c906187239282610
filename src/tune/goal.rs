//! The goal a tuning states: clauses such as `recall >= 0.9`, `lead_p50 >= 60s`,
//! `per_hour <= 12`, joined by commas, each read against a point's warning figures.

use super::Figures;

/// What a clause measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Warned ÷ spells (1 when nothing ran dry).
    Recall,
    /// True ÷ decided notifications (1 when none was decided).
    Precision,
    /// Median lead of the spells warned in advance, in seconds.
    LeadP50,
    /// Shortest lead of the spells warned in advance, in seconds.
    LeadMin,
    /// Notifications per hour.
    PerHour,
    /// Notifications per spell.
    PerSpell,
    /// Spells missed.
    Missed,
    /// Notifications no spell followed within their horizon.
    FalsePositive,
    /// Notifications sent.
    Notifications,
}

const MEASURES: [(&str, Measure); 9] = [
    ("recall", Measure::Recall),
    ("precision", Measure::Precision),
    ("lead_p50", Measure::LeadP50),
    ("lead_min", Measure::LeadMin),
    ("per_hour", Measure::PerHour),
    ("per_spell", Measure::PerSpell),
    ("missed", Measure::Missed),
    ("false_positive", Measure::FalsePositive),
    ("notifications", Measure::Notifications),
];

impl Measure {
    fn of(self, f: &Figures) -> f64 {
        match self {
            Self::Recall => f.recall.unwrap_or(1.0),
            Self::Precision => f.precision.unwrap_or(1.0),
            Self::LeadP50 => f.lead_p50_s,
            Self::LeadMin => f.lead_min_s,
            Self::PerHour => f.per_hour,
            Self::PerSpell => f.per_spell,
            Self::Missed => f.missed as f64,
            Self::FalsePositive => f.false_positive as f64,
            Self::Notifications => f.notifications as f64,
        }
    }

    fn is_lead(self) -> bool {
        matches!(self, Self::LeadP50 | Self::LeadMin)
    }
}

/// One clause: `measure op value`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Clause {
    /// What it reads.
    pub(crate) measure: Measure,
    /// `>=`, `<=`, `>`, `<` or `==`.
    pub(crate) op: &'static str,
    /// Against what (seconds for leads).
    pub(crate) value: f64,
    /// As the user wrote it.
    pub(crate) text: String,
}

/// The goal: every clause must hold.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Goal {
    /// Its clauses.
    pub(crate) clauses: Vec<Clause>,
}

/// The goal when none is given: the targets for real traffic.
pub(crate) const DEFAULT: &str = "recall >= 0.9, precision >= 0.9, lead_p50 >= 60s, per_spell <= 1, per_hour <= 12";

impl Goal {
    /// Parses `recall >= 0.9, lead_p50 >= 60s …`; an error names the clause at fault.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut clauses = Vec::new();
        for text in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let op = [">=", "<=", "==", ">", "<"]
                .into_iter()
                .find(|op| text.contains(op))
                .ok_or_else(|| format!("goal clause '{text}': expected `measure >= value` (>=, <=, >, <, ==)"))?;
            let (name, value) = text.split_once(op).expect("found above");
            let (name, value) = (name.trim(), value.trim());
            let measure = MEASURES.iter().find(|(n, _)| *n == name).map(|(_, m)| *m).ok_or_else(|| {
                let known: Vec<&str> = MEASURES.iter().map(|(n, _)| *n).collect();
                format!("goal clause '{text}': unknown measure '{name}' (known: {})", known.join(", "))
            })?;
            let value = if measure.is_lead() {
                match value.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => crate::scenario::units::parse_duration(value)
                        .map(|ms| ms as f64 / 1000.0)
                        .map_err(|e| format!("goal clause '{text}': {e}"))?,
                }
            } else {
                value.parse::<f64>().map_err(|_| format!("goal clause '{text}': '{value}' is not a number"))?
            };
            if !value.is_finite() {
                return Err(format!("goal clause '{text}': '{value}' is not a finite number"));
            }
            clauses.push(Clause { measure, op, value, text: text.to_owned() });
        }
        if clauses.is_empty() {
            return Err("the goal has no clause (e.g. --goal 'recall >= 0.9, precision >= 0.9')".into());
        }
        Ok(Self { clauses })
    }

    /// Clauses in it.
    pub(crate) fn len(&self) -> usize {
        self.clauses.len()
    }

    /// How many clauses `f` meets.
    pub(crate) fn met(&self, f: &Figures) -> usize {
        self.clauses.iter().filter(|c| holds(c.op, c.measure.of(f), c.value)).count()
    }

    /// The goal as written, normalised.
    pub(crate) fn text(&self) -> String {
        self.clauses.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The target of `measure`, if a clause bounds it from below (`>=` or `>`).
    pub(crate) fn floor(&self, measure: Measure) -> Option<f64> {
        self.clauses.iter().find(|c| c.measure == measure && c.op.starts_with('>')).map(|c| c.value)
    }
}

fn holds(op: &str, actual: f64, limit: f64) -> bool {
    match op {
        ">=" => actual >= limit,
        "<=" => actual <= limit,
        ">" => actual > limit,
        "<" => actual < limit,
        _ => (actual - limit).abs() < 1e-9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_goal_parses_and_bad_clauses_say_which() {
        let g = Goal::parse(DEFAULT).unwrap();
        assert_eq!(g.len(), 5);
        assert_eq!(g.clauses[2].value, 60.0, "60s in seconds");
        assert_eq!(Goal::parse("lead_p50 >= 2m").unwrap().clauses[0].value, 120.0);
        let e = Goal::parse("recall >= 0.9, speed > 3").unwrap_err();
        assert!(e.contains("'speed > 3'") && e.contains("unknown measure 'speed'"), "{e}");
        assert!(Goal::parse("recall 0.9").unwrap_err().contains("expected"));
        assert!(Goal::parse(" , ").is_err());
    }
}
