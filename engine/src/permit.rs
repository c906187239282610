//! Permits: admitted quota that cannot leak.
//!
//! A permit holds what admission reserved. Settle it with what happened — from an answer's
//! `usageMetadata` in one call ([`Permit::succeeded`]: the outcome, the estimator's lesson and
//! the settlement together). Drop it unsettled before sending (a handler cancelled before its
//! call went out) and it settles as never sent, returning everything it held — like tokio's
//! `SemaphorePermit`. Once the caller has marked it sent ([`Permit::mark_sent`]), a drop (a
//! client hang-up while the answer is on its way) settles it as failed instead: the provider
//! may have counted the request, so the engine keeps counting it too.
//!
//! [`Permit`] borrows its engine; [`OwnedPermit`] holds an `Arc` of it, so a service can move
//! it into the task that relays an answer (tokio's `acquire_owned`).

use std::fmt;
#[cfg(feature = "async")]
use std::future::Future;
#[cfg(feature = "async")]
use std::pin::Pin;
#[cfg(feature = "async")]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(feature = "async")]
use std::sync::Arc;
#[cfg(feature = "async")]
use std::task::{Context, Poll};

use crate::admit::{AdmitError, Decision, Denial, Outcome, Request, Ticket};
use crate::estimate::Prompt;
use crate::lifecycle::Reason;
use crate::pool::KeyId;
use crate::provider::UsageMetadata;
#[cfg(feature = "async")]
use crate::store::AsyncStore;
use crate::store::{Buckets, QuotaStore, StoreError};
use crate::Engine;

/// A prompt kept for the estimator's lesson at settlement (only when it learns).
#[derive(Clone, Debug)]
pub(crate) struct Lesson {
    text: Option<String>,
    chars: u64,
    /// Tokens of the request's parts that are not text, left out of the lesson.
    media_tokens: u64,
}

impl Lesson {
    pub(crate) fn of(req: &Request<'_>) -> Self {
        let (text, chars) = match req.prompt {
            Prompt::Text(t) => (Some(t.to_owned()), 0),
            Prompt::Chars(n) => (None, n),
        };
        Self { text, chars, media_tokens: req.media_tokens }
    }

    fn prompt(&self) -> Prompt<'_> {
        self.text.as_deref().map_or(Prompt::Chars(self.chars), Prompt::Text)
    }
}

/// How a permit holds its engine, and how it settles through it.
trait Holder {
    type Store: Buckets;
    fn engine(&self) -> &Engine<Self::Store>;
    /// Settles `ticket` with `outcome` at the engine clock's now.
    fn settle_ticket(&self, ticket: Ticket, outcome: Outcome) -> Result<(), StoreError>;
}

impl<S: QuotaStore> Holder for &Engine<S> {
    type Store = S;

    fn engine(&self) -> &Engine<S> {
        self
    }

    fn settle_ticket(&self, ticket: Ticket, outcome: Outcome) -> Result<(), StoreError> {
        self.settle(&ticket, outcome, self.clock().now()).map(drop)
    }
}

#[cfg(feature = "async")]
impl<S: AsyncStore + 'static> Holder for Arc<Engine<S>> {
    type Store = S;

    fn engine(&self) -> &Engine<S> {
        self
    }

    fn settle_ticket(&self, ticket: Ticket, outcome: Outcome) -> Result<(), StoreError> {
        Engine::settle_in_background(self, ticket, outcome)
    }
}

/// What every permit holds, whatever holds its engine.
struct Held<E> {
    engine: E,
    ticket: Option<Ticket>,
    sent: bool,
    queued: bool,
    lesson: Option<Lesson>,
}

impl<E: Holder> Held<E> {
    fn ticket(&self) -> &Ticket {
        self.ticket.as_ref().expect("a permit holds its ticket until settled")
    }

    fn take(&mut self) -> Ticket {
        self.ticket.take().expect("a permit holds its ticket until settled")
    }

    fn key_id(&self) -> String {
        self.engine.engine().pool().keys()[self.ticket().key.0 as usize].id.clone()
    }

    fn project_id(&self) -> String {
        let pool = self.engine.engine().pool();
        pool.projects()[pool.bucket_owner(self.ticket().bucket).0].id.clone()
    }

    fn settle(&mut self, outcome: Outcome) -> Result<(), StoreError> {
        let ticket = self.take();
        self.engine.settle_ticket(ticket, outcome)
    }

    fn succeeded(&mut self, usage: &UsageMetadata) -> Result<(), StoreError> {
        let model = self.ticket().model;
        let engine = self.engine.engine();
        if let Some(l) = self.lesson.take() {
            engine.learn(model, &l.prompt(), usage.prompt.saturating_sub(l.media_tokens));
        }
        let outcome = engine.success(usage);
        self.settle(outcome)
    }

    fn ended_early(&mut self, usage: Option<&UsageMetadata>) -> Result<(), StoreError> {
        let reserved = self.ticket().reserved_output;
        let outcome = match usage.map(|u| self.engine.engine().success(u)) {
            Some(Outcome::Success { input_tokens, output_tokens }) => {
                Outcome::Success { input_tokens, output_tokens: output_tokens.max(reserved) }
            }
            _ => Outcome::Failed,
        };
        self.settle(outcome)
    }

    fn on_drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let outcome = if self.sent { Outcome::Failed } else { Outcome::NotSent };
            // Nothing to report to from a drop: a store that cannot be reached keeps the
            // reservation, which errs on the safe side and expires with its window.
            let _ = self.engine.settle_ticket(ticket, outcome);
        }
    }
}

/// The methods both permits share.
macro_rules! permit_methods {
    () => {
        /// Says the request is on its way: from now on a drop keeps it counted.
        pub fn mark_sent(&mut self) {
            self.held.sent = true;
        }

        /// Whether the request waited in the fair queue before it was admitted.
        pub fn queued(&self) -> bool {
            self.held.queued
        }

        /// What admission granted.
        pub fn ticket(&self) -> &Ticket {
            self.held.ticket()
        }

        /// The key to send with.
        pub fn key(&self) -> KeyId {
            self.held.ticket().key
        }

        /// The id of the key to send with (a label; the caller maps it to the secret).
        pub fn key_id(&self) -> String {
            self.held.key_id()
        }

        /// The id of the project whose quota it holds.
        pub fn project_id(&self) -> String {
            self.held.project_id()
        }

        /// Settles with what really happened, at the engine clock's `now`.
        pub fn settle(mut self, outcome: Outcome) -> Result<(), StoreError> {
            self.held.settle(outcome)
        }

        /// Settles a successful answer from its `usageMetadata`, in one call: the outcome as
        /// the engine counts it, the estimator's lesson (what the prompt really counted), and
        /// the settlement.
        pub fn succeeded(mut self, usage: &UsageMetadata) -> Result<(), StoreError> {
            self.held.succeeded(usage)
        }

        /// Settles an answer that ended early (a stream broken off, its client gone): from
        /// the usage it had stated, with at least the output reserved for it (every Gemini
        /// chunk states the prompt's count); at its reservation if it stated none.
        pub fn ended_early(mut self, usage: Option<&UsageMetadata>) -> Result<(), StoreError> {
            self.held.ended_early(usage)
        }

        /// Gives up the drop guard: the caller now settles the ticket itself.
        pub fn into_ticket(mut self) -> Ticket {
            self.held.take()
        }
    };
}

/// Admitted quota on one key's bucket, borrowing its engine (whose store answers at once);
/// settled when dropped.
#[must_use = "a permit holds quota: send the request and settle it; dropping it returns the quota"]
pub struct Permit<'e, S: QuotaStore> {
    held: Held<&'e Engine<S>>,
}

impl<'e, S: QuotaStore> Permit<'e, S> {
    pub(crate) fn new(engine: &'e Engine<S>, ticket: Ticket, queued: bool, lesson: Option<Lesson>) -> Self {
        Self { held: Held { engine, ticket: Some(ticket), sent: false, queued, lesson } }
    }

    permit_methods!();

    /// The same permit holding `engine` (the one it borrows) by an `Arc`.
    #[cfg(feature = "async")]
    pub fn into_owned(mut self, engine: Arc<Engine<S>>) -> OwnedPermit<S>
    where
        S: 'static,
    {
        assert!(std::ptr::eq(self.held.engine, &*engine), "a permit moves only to its own engine");
        let ticket = self.held.take();
        let mut owned = OwnedPermit::new(engine, ticket, self.held.queued, self.held.lesson.take());
        owned.held.sent = self.held.sent;
        owned
    }
}

#[cfg(feature = "async")]
/// Admitted quota on one key's bucket, holding its engine by an `Arc`: `'static`, so it moves
/// into whatever task relays the answer. Settled when dropped. With a store that waits on
/// I/O (Redis), a settlement — explicit or from a drop — that cannot complete at once goes to
/// a bounded background task ([`Engine::drain_settlements`] waits for it at shutdown), so
/// neither a drop nor a caller ever waits on the store.
#[must_use = "a permit holds quota: send the request and settle it; dropping it returns the quota"]
pub struct OwnedPermit<S: AsyncStore + 'static> {
    held: Held<Arc<Engine<S>>>,
}

#[cfg(feature = "async")]
impl<S: AsyncStore + 'static> OwnedPermit<S> {
    pub(crate) fn new(engine: Arc<Engine<S>>, ticket: Ticket, queued: bool, lesson: Option<Lesson>) -> Self {
        Self { held: Held { engine, ticket: Some(ticket), sent: false, queued, lesson } }
    }

    permit_methods!();

    /// The engine it holds quota of.
    pub fn engine(&self) -> &Arc<Engine<S>> {
        &self.held.engine
    }
}

impl<S: QuotaStore> Drop for Permit<'_, S> {
    fn drop(&mut self) {
        self.held.on_drop();
    }
}

#[cfg(feature = "async")]
impl<S: AsyncStore + 'static> Drop for OwnedPermit<S> {
    fn drop(&mut self) {
        self.held.on_drop();
    }
}

impl<S: QuotaStore> fmt::Debug for Permit<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("ticket", &self.held.ticket).finish()
    }
}

#[cfg(feature = "async")]
impl<S: AsyncStore + 'static> fmt::Debug for OwnedPermit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").field("ticket", &self.held.ticket).finish()
    }
}

#[cfg(feature = "async")]
/// Settlements of owned permits that could not complete at once.
#[derive(Debug, Default)]
pub(crate) struct Background {
    /// Under way in the background.
    pending: AtomicUsize,
    /// That the store refused or could not be reached for (their reservations stay counted).
    failed: AtomicU64,
    /// Never started: no runtime to run them on, or too many under way already.
    dropped: AtomicU64,
    /// Wakes a drain when the last one ends.
    idle: tokio::sync::Notify,
}

#[cfg(feature = "async")]
/// The most settlements under way in the background at once; past it, a settlement is
/// counted as dropped (its reservation stays counted: safe) rather than queued without bound.
pub const BACKGROUND_SETTLEMENTS: usize = 65_536;

#[cfg(feature = "async")]
impl<S: AsyncStore + 'static> Engine<S> {
    /// Settles `ticket`: at once if the store answers at once; otherwise in the background.
    fn settle_in_background(self: &Arc<Self>, ticket: Ticket, outcome: Outcome) -> Result<(), StoreError> {
        let now = self.clock().now();
        let engine = Arc::clone(self);
        let mut call: Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send>> =
            Box::pin(async move { engine.settle_async(&ticket, outcome, now).await });
        let waker = std::task::Waker::noop();
        if let Poll::Ready(r) = call.as_mut().poll(&mut Context::from_waker(waker)) {
            return r.map(drop);
        }
        let bg = &self.background;
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(rt) if bg.pending.fetch_add(1, Ordering::SeqCst) < BACKGROUND_SETTLEMENTS => {
                let engine = Arc::clone(self);
                rt.spawn(async move {
                    if call.await.is_err() {
                        engine.background.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if engine.background.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                        engine.background.idle.notify_waiters();
                    }
                });
                Ok(())
            }
            Ok(_) => {
                bg.pending.fetch_sub(1, Ordering::SeqCst);
                bg.dropped.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Unavailable("too many settlements under way".into()))
            }
            Err(_) => {
                bg.dropped.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Unavailable("no async runtime to settle on".into()))
            }
        }
    }

    /// Waits, at most `within`, for the settlements under way in the background (at
    /// shutdown); returns how many are still under way.
    pub async fn drain_settlements(&self, within: std::time::Duration) -> usize {
        let until = tokio::time::Instant::now() + within;
        loop {
            let idle = self.background.idle.notified();
            let left = self.background.pending.load(Ordering::SeqCst);
            if left == 0 || tokio::time::Instant::now() >= until {
                return left;
            }
            let _ = tokio::time::timeout_at(until, idle).await;
        }
    }
}

#[cfg(feature = "async")]
impl<S: Buckets> Engine<S> {
    /// Settlements of owned permits under way in the background now.
    pub fn settlements_pending(&self) -> usize {
        self.background.pending.load(Ordering::SeqCst)
    }

    /// Settlements of owned permits that failed in the background (the store refused or
    /// could not be reached) or never started (no runtime, or the background was full);
    /// their reservations stay counted until their windows pass.
    pub fn settlements_failed(&self) -> u64 {
        self.background.failed.load(Ordering::Relaxed) + self.background.dropped.load(Ordering::Relaxed)
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
            Ok(Decision::Admitted(t)) => Ok(Permit::new(self, t, false, self.lesson(req))),
            Ok(Decision::Denied(d)) => Err(TryAcquireError::Denied(d)),
            Err(e) => Err(TryAcquireError::Never(Reason::from(e))),
        }
    }

    /// [`Engine::try_acquire`], for a permit that holds the engine by an `Arc`.
    #[cfg(feature = "async")]
    pub fn try_acquire_owned(self: &Arc<Self>, req: &Request<'_>) -> Result<OwnedPermit<S>, TryAcquireError>
    where
        S: 'static,
    {
        self.try_acquire(req).map(|p| p.into_owned(Arc::clone(self)))
    }
}

impl<S: Buckets> Engine<S> {
    /// What the estimator may learn from `req` at settlement, if it learns at all.
    pub(crate) fn lesson(&self, req: &Request<'_>) -> Option<Lesson> {
        self.learns().then(|| Lesson::of(req))
    }
}

impl From<AdmitError> for TryAcquireError {
    fn from(e: AdmitError) -> Self {
        Self::Never(e.into())
    }
}
