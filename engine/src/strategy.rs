//! Selection strategies: which quota bucket a request should try first.
//!
//! A strategy only proposes; the store's atomic reserve decides, and the engine falls back
//! to the other buckets in rotation when a proposal is full. Strategies look at buckets (the
//! unit quota lives in), never at individual keys of one project.

/// The strategies the engine ships.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// Each bucket in turn. O(1).
    RoundRobin,
    /// The bucket with the most normalised headroom. O(buckets).
    LeastUsed,
    /// The better of two random buckets by normalised headroom. O(1), and random choice
    /// keeps several replicas with stale views from herding onto the same bucket.
    #[default]
    PowerOfTwo,
    /// A random bucket, weighted by normalised headroom. O(buckets).
    Headroom,
}

crate::setting!(StrategyKind {
    RoundRobin => "round-robin",
    LeastUsed => "least-used",
    PowerOfTwo => "p2c",
    Headroom => "headroom",
});

impl StrategyKind {
    /// The built-in strategy of this kind, as a trait object.
    pub fn build(self) -> Box<dyn Strategy> {
        Box::new(Builtin(self))
    }
}

/// What a strategy sees when it proposes. `H` is the headroom function: a trait object for
/// strategies behind [`Strategy`], a concrete closure when the engine calls a built-in
/// strategy directly (no dynamic call per candidate).
pub struct Choice<'a, H: Fn(usize) -> f64 + ?Sized + 'a = dyn Fn(usize) -> f64 + 'a> {
    /// Number of candidate buckets (at least one).
    pub n: usize,
    /// Normalised headroom of candidate `i`, in `[0, 1]`.
    pub headroom: &'a H,
    /// A fresh random word.
    pub random: u64,
    /// A counter that advances at every admission.
    pub turn: usize,
}

/// Proposes up to two candidates, best first. The built-in strategies implement it; the
/// engine calls them through [`StrategyKind::propose`], and any other implementation through
/// the trait.
pub trait Strategy: Send + Sync {
    /// The strategy's name.
    fn name(&self) -> &'static str;

    /// Candidates to try before the engine falls back to rotation.
    fn propose(&self, c: &Choice<'_>) -> [Option<usize>; 2];
}

impl StrategyKind {
    /// This built-in strategy's proposal.
    #[inline]
    pub fn propose<H: Fn(usize) -> f64 + ?Sized>(self, c: &Choice<'_, H>) -> [Option<usize>; 2] {
        match self {
            Self::RoundRobin => [Some(c.turn % c.n), None],
            Self::LeastUsed => least_used(c),
            Self::PowerOfTwo => power_of_two(c),
            Self::Headroom => headroom_weighted(c),
        }
    }
}

fn least_used<H: Fn(usize) -> f64 + ?Sized>(c: &Choice<'_, H>) -> [Option<usize>; 2] {
    // Start the scan at the turn so that ties rotate instead of piling onto bucket 0.
    let mut best = (c.turn % c.n, f64::NEG_INFINITY);
    for j in 0..c.n {
        let i = (c.turn + j) % c.n;
        let h = (c.headroom)(i);
        if h > best.1 {
            best = (i, h);
        }
    }
    [Some(best.0), None]
}

fn power_of_two<H: Fn(usize) -> f64 + ?Sized>(c: &Choice<'_, H>) -> [Option<usize>; 2] {
    if c.n == 1 {
        return [Some(0), None];
    }
    let a = (c.random % c.n as u64) as usize;
    let b = (a + 1 + ((c.random >> 32) % (c.n as u64 - 1)) as usize) % c.n;
    if (c.headroom)(b) > (c.headroom)(a) {
        [Some(b), Some(a)]
    } else {
        [Some(a), Some(b)]
    }
}

fn headroom_weighted<H: Fn(usize) -> f64 + ?Sized>(c: &Choice<'_, H>) -> [Option<usize>; 2] {
    let weights: Vec<f64> = (0..c.n).map(|i| (c.headroom)(i)).collect();
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return [Some(c.turn % c.n), None];
    }
    let mut x = (c.random >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return [Some(i), None];
        }
        x -= w;
    }
    [Some(c.n - 1), None]
}

/// A built-in strategy behind the trait.
struct Builtin(StrategyKind);

impl Strategy for Builtin {
    fn name(&self) -> &'static str {
        crate::Setting::name(self.0)
    }

    fn propose(&self, c: &Choice<'_>) -> [Option<usize>; 2] {
        self.0.propose(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(kind: StrategyKind, heads: &[f64], random: u64, turn: usize) -> [Option<usize>; 2] {
        let h = |i: usize| heads[i];
        kind.build().propose(&Choice { n: heads.len(), headroom: &h, random, turn })
    }

    #[test]
    fn least_used_takes_the_most_headroom() {
        assert_eq!(choose(StrategyKind::LeastUsed, &[0.1, 0.9, 0.5], 0, 7)[0], Some(1));
    }

    #[test]
    fn p2c_orders_its_two_by_headroom() {
        for r in 0..50u64 {
            let random = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let [a, b] = choose(StrategyKind::PowerOfTwo, &[0.1, 0.9, 0.5, 0.3], random, 0);
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_ne!(a, b);
            assert!([0.1, 0.9, 0.5, 0.3][a] >= [0.1, 0.9, 0.5, 0.3][b]);
        }
    }

    #[test]
    fn headroom_weighted_never_picks_a_full_bucket() {
        for r in 0..200u64 {
            let random = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_ne!(choose(StrategyKind::Headroom, &[0.0, 0.5, 0.0, 1.0], random, 0)[0], Some(0));
        }
    }

    #[test]
    fn round_robin_rotates() {
        let picks: Vec<_> = (0..4).map(|t| choose(StrategyKind::RoundRobin, &[1.0; 3], 0, t)[0]).collect();
        assert_eq!(picks, vec![Some(0), Some(1), Some(2), Some(0)]);
    }
}
