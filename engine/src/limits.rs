//! Limit dimensions, limits, and the ceilings the engine enforces below them.

use std::fmt;

/// A limit dimension of one (project, model) quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute (input tokens for Gemini, or input + output with basis `total`).
    Tpm,
    /// Requests per day; resets at midnight America/Los_Angeles.
    Rpd,
    /// Tokens per day; resets with RPD.
    Tpd,
}

impl Dimension {
    /// Every dimension, in order.
    pub const ALL: [Dimension; 4] = [Self::Rpm, Self::Tpm, Self::Rpd, Self::Tpd];

    /// Lower-case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Rpd => "rpd",
            Self::Tpd => "tpd",
        }
    }

    /// Index into per-dimension arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the dimension counts tokens (and so depends on a request's size).
    pub fn counts_tokens(self) -> bool {
        matches!(self, Self::Tpm | Self::Tpd)
    }

    /// Whether the dimension resets at Pacific midnight rather than over a minute.
    pub fn is_daily(self) -> bool {
        matches!(self, Self::Rpd | Self::Tpd)
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The provider's limits for one model in one project. `tpd: None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: u64,
    /// Tokens per minute.
    pub tpm: u64,
    /// Requests per Pacific day.
    pub rpd: u64,
    /// Tokens per Pacific day, if limited.
    pub tpd: Option<u64>,
}

impl Limits {
    /// Whether the limits allow any request at all.
    pub fn is_usable(&self) -> bool {
        self.rpm > 0 && self.tpm > 0 && self.rpd > 0 && self.tpd != Some(0)
    }

    /// The limit of one dimension (`u64::MAX` for an unlimited TPD).
    pub fn get(&self, d: Dimension) -> u64 {
        match d {
            Dimension::Rpm => self.rpm,
            Dimension::Tpm => self.tpm,
            Dimension::Rpd => self.rpd,
            Dimension::Tpd => self.tpd.unwrap_or(u64::MAX),
        }
    }
}

/// The most the engine lets one priority class use of one bucket, per dimension
/// (indexed by [`Dimension::index`]; `u64::MAX` where unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ceilings(pub [u64; 4]);

impl Ceilings {
    /// Ceilings from limits: a `safety` fraction of each limit is never used, and a `reserve`
    /// fraction of what is left is kept for high priority. Fractions round in favour of the
    /// limit: `floor` of what may be used, so a small limit keeps at least one unit in reserve
    /// whenever `reserve > 0`.
    pub fn from_limits(limits: &Limits, safety: f64, reserve: f64) -> Self {
        let mut c = [0u64; 4];
        for d in Dimension::ALL {
            let limit = limits.get(d);
            c[d.index()] = if limit == u64::MAX {
                u64::MAX
            } else {
                let usable = (limit as f64 * (1.0 - safety) + 1e-9).floor();
                (usable * (1.0 - reserve) + 1e-9).floor() as u64
            };
        }
        Self(c)
    }

    /// The ceiling of one dimension.
    pub fn get(&self, d: Dimension) -> u64 {
        self.0[d.index()]
    }

    /// Reciprocals of the ceilings, for headroom without divisions: `0` for unlimited
    /// dimensions (they never bind) and infinity for zero ceilings (no headroom at all).
    pub fn reciprocals(&self) -> [f64; 4] {
        self.0.map(|c| match c {
            u64::MAX => 0.0,
            0 => f64::INFINITY,
            c => 1.0 / c as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_rounds_in_favour_of_the_reserve() {
        let l = Limits { rpm: 2, tpm: 1000, rpd: 10, tpd: None };
        let normal = Ceilings::from_limits(&l, 0.0, 0.1);
        assert_eq!(normal.get(Dimension::Rpm), 1);
        assert_eq!(normal.get(Dimension::Tpm), 900);
        assert_eq!(normal.get(Dimension::Rpd), 9);
        assert_eq!(normal.get(Dimension::Tpd), u64::MAX);
        let high = Ceilings::from_limits(&l, 0.0, 0.0);
        assert_eq!(high.get(Dimension::Rpm), 2);
        let safe = Ceilings::from_limits(&l, 0.05, 0.0);
        assert_eq!(safe.get(Dimension::Rpd), 9);
    }
}
