//! Settings that own their names: every choice in a configuration lists its values and
//! their names in one place, used by parsers, reports and overrides alike.

/// A configuration choice with a fixed set of named values.
pub trait Setting: Copy + PartialEq + 'static {
    /// Every value, in the order documentation lists them.
    const ALL: &'static [Self];

    /// The value's name in configuration files and reports.
    fn name(self) -> &'static str;

    /// The value named `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// Every name, in order.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.name()).collect()
    }
}

/// Implements [`Setting`] for a unit-only enum from `Variant => "name"` pairs.
#[macro_export]
macro_rules! setting {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::setting::Setting for $ty {
            const ALL: &'static [Self] = &[$(<$ty>::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{Priority, QuotaScope, Setting, StrategyKind, TokenBasis};

    fn round_trips<T: Setting + std::fmt::Debug>() {
        for v in T::ALL {
            assert_eq!(T::from_name(v.name()), Some(*v));
        }
        assert_eq!(T::from_name("no-such-value"), None);
    }

    #[test]
    fn every_setting_round_trips_through_its_name() {
        round_trips::<QuotaScope>();
        round_trips::<TokenBasis>();
        round_trips::<StrategyKind>();
        round_trips::<Priority>();
        assert_eq!(QuotaScope::Key.name(), "key");
    }
}
