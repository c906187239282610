//! One request's lifecycle, sans-IO: what to do with an admission decision.
//!
//! Given the engine's answer, the queue policy and the request's deadline, [`step`] says
//! send, wait until an instant, or give up — and why, with one [`Reason`]. The simulator
//! turns a wait into an event, the async [`Engine::acquire`](crate::Engine) into a place in
//! the fair queue; neither decides anything else.

use std::fmt;

use crate::admit::{AdmitError, Decision, DenyReason, Ticket};
use crate::time::Timestamp;

/// Whether and how long a denied request may wait for capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QueuePolicy {
    /// Give up at the first denial.
    #[default]
    Reject,
    /// Wait for capacity, at most this many milliseconds after arrival.
    Wait {
        /// The longest wait, in milliseconds.
        max_wait_ms: u64,
    },
}

impl QueuePolicy {
    /// The longest wait, in milliseconds (zero when rejecting).
    pub fn max_wait_ms(self) -> u64 {
        match self {
            Self::Reject => 0,
            Self::Wait { max_wait_ms } => max_wait_ms,
        }
    }

    /// The latest instant a request that arrived at `arrival` may still be sent.
    pub fn deadline(self, arrival: Timestamp) -> Timestamp {
        arrival.plus(self.max_wait_ms())
    }
}

/// Why a request ended without being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The engine denied it, and waiting would not help within its deadline.
    Denied(DenyReason),
    /// Larger than any bucket could ever take.
    TooLarge,
    /// It names a model the pool does not serve.
    UnknownModel,
}

impl Reason {
    /// A short name for reports (`exhausted:rpm`, `store-unavailable`, `too-large` …).
    pub fn name(self) -> String {
        match self {
            Self::Denied(d) => d.name(),
            Self::TooLarge => "too-large".to_owned(),
            Self::UnknownModel => "unknown-model".to_owned(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl From<AdmitError> for Reason {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::TooLarge { .. } | AdmitError::TooManyRequests { .. } => Self::TooLarge,
            AdmitError::UnknownModel(_) => Self::UnknownModel,
        }
    }
}

/// What to do next with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a step to carry out: a ticket to send and settle, a wait, or an end"]
pub enum Step {
    /// Send it with this ticket, then settle the ticket.
    Send(Ticket),
    /// Try again at this instant (capacity frees then, before the deadline); denied now
    /// for this reason.
    WaitUntil(Timestamp, DenyReason),
    /// It ends here, unsent.
    GiveUp(Reason),
}

/// The next step of a request whose admission answered `decision` at `now`, that may be
/// sent until `deadline` at the latest.
pub fn step(decision: Result<Decision, AdmitError>, deadline: Timestamp, now: Timestamp) -> Step {
    match decision {
        Ok(Decision::Admitted(t)) => Step::Send(t),
        Ok(Decision::Denied(d)) => match d.retry_at {
            Some(at) if at <= deadline => Step::WaitUntil(at.max(now), d.reason),
            _ => Step::GiveUp(Reason::Denied(d.reason)),
        },
        Err(e) => Step::GiveUp(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::Denial;
    use crate::limits::Dimension;

    const T0: Timestamp = Timestamp(1_000_000);

    fn denied(retry_at: Option<Timestamp>) -> Result<Decision, AdmitError> {
        Ok(Decision::Denied(Denial { retry_at, reason: DenyReason::Exhausted(Dimension::Rpm), bucket: None }))
    }

    #[test]
    fn waits_only_while_the_deadline_allows() {
        let deadline = QueuePolicy::Wait { max_wait_ms: 30_000 }.deadline(T0);
        assert_eq!(
            step(denied(Some(T0.plus(30_000))), deadline, T0),
            Step::WaitUntil(T0.plus(30_000), DenyReason::Exhausted(Dimension::Rpm))
        );
        let late = step(denied(Some(T0.plus(30_001))), deadline, T0);
        assert_eq!(late, Step::GiveUp(Reason::Denied(DenyReason::Exhausted(Dimension::Rpm))));
        assert!(matches!(step(denied(None), deadline, T0), Step::GiveUp(_)));
        let reject = QueuePolicy::Reject.deadline(T0);
        assert!(matches!(step(denied(Some(T0.plus(1))), reject, T0), Step::GiveUp(_)));
    }

    #[test]
    fn errors_end_the_request_with_their_reason() {
        let e = AdmitError::TooLarge { tokens: 10, dimension: Dimension::Tpm, ceiling: 5 };
        assert_eq!(step(Err(e), T0, T0), Step::GiveUp(Reason::TooLarge));
        assert_eq!(Reason::TooLarge.name(), "too-large");
    }
}
