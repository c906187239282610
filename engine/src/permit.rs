//! Permits: admitted quota that cannot leak.
//!
//! A [`Permit`] holds what admission reserved. Settle it with what happened. Drop it
//! unsettled before sending (a handler cancelled before its call went out) and it settles as
//! never sent, returning everything it held — like tokio's `SemaphorePermit`. Once the
//! caller has marked it sent ([`Permit::mark_sent`]), a drop (a client hang-up while the
//! answer is on its way) settles it as failed instead: the provider may have counted the
//! request, so the engine keeps counting it too.

use std::fmt;

use crate::admit::{AdmitError, Decision, Denial, Outcome, Request, Ticket};
use crate::lifecycle::Reason;
use crate::pool::KeyId;
use crate::store::{QuotaStore, StoreError};
use crate::Engine;

/// Admitted quota on one key's bucket, settled when dropped.
#[must_use = "a permit holds quota: send the request and settle it; dropping it returns the quota"]
pub struct Permit<'e, S: QuotaStore> {
    engine: &'e Engine<S>,
    ticket: Option<Ticket>,
    sent: bool,
    queued: bool,
}

impl<'e, S: QuotaStore> Permit<'e, S> {
    pub(crate) fn new(engine: &'e Engine<S>, ticket: Ticket, queued: bool) -> Self {
        Self { engine, ticket: Some(ticket), sent: false, queued }
    }

    /// Says the request is on its way: from now on a drop keeps it counted.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Whether the request waited in the fair queue before it was admitted.
    pub fn queued(&self) -> bool {
        self.queued
    }

    /// What admission granted.
    pub fn ticket(&self) -> &Ticket {
        self.ticket.as_ref().expect("a permit holds its ticket until settled")
    }

    /// The key to send with.
    pub fn key(&self) -> KeyId {
        self.ticket().key
    }

    /// The id of the key to send with (a label; the caller maps it to the secret).
    pub fn key_id(&self) -> String {
        self.engine.pool().keys()[self.key().0 as usize].id.clone()
    }

    /// Settles with what really happened, at the engine clock's `now`.
    pub fn settle(mut self, outcome: Outcome) -> Result<(), StoreError> {
        let ticket = self.ticket.take().expect("a permit holds its ticket until settled");
        self.engine.settle(&ticket, outcome, self.engine.clock().now()).map(|_| ())
    }

    /// Gives up the drop guard: the caller now settles the ticket itself with
    /// [`Engine::settle`].
    pub fn into_ticket(mut self) -> Ticket {
        self.ticket.take().expect("a permit holds its ticket until settled")
    }
}

impl<S: QuotaStore> Drop for Permit<'_, S> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let outcome = if self.sent { Outcome::Failed } else { Outcome::NotSent };
            // Nothing to report to from a drop: a store that cannot be reached keeps the
            // reservation, which errs on the safe side and expires with its window.
            let _ = self.engine.settle(&ticket, outcome, self.engine.clock().now());
        }
    }
}

impl<S: QuotaStore> fmt::Debug for Permit<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("ticket", &self.ticket).finish()
    }
}

/// Why [`Engine::try_acquire`] gave no permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Denied now; the denial says when to come back.
    #[error("denied: {}", .0.reason.name())]
    Denied(Denial),
    /// It can never be admitted.
    #[error("{0}")]
    Never(Reason),
}

impl<S: QuotaStore> Engine<S> {
    /// Admits `req` now, on the engine's clock, without waiting: a permit, or why not.
    pub fn try_acquire(&self, req: &Request<'_>) -> Result<Permit<'_, S>, TryAcquireError> {
        match self.admit(req, self.clock().now()) {
            Ok(Decision::Admitted(t)) => Ok(Permit::new(self, t, false)),
            Ok(Decision::Denied(d)) => Err(TryAcquireError::Denied(d)),
            Err(e) => Err(TryAcquireError::Never(Reason::from(e))),
        }
    }
}

impl From<AdmitError> for TryAcquireError {
    fn from(e: AdmitError) -> Self {
        Self::Never(e.into())
    }
}
