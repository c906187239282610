//! Waiting for capacity (feature `async`): [`Engine::acquire`] over the fair queue of each
//! model.
//!
//! A request that cannot be admitted now joins its model's [`FairQueue`] with an owned copy of
//! what admission needs. Nobody retries on their own: one waiter per queue holds the queue's
//! timer (on the engine's [`Clock`]), and whoever finds the queue due — that waiter when its
//! timer fires, or a settlement that frees capacity — admits waiters in order and hands each
//! its ticket. A waiter dropped in the queue leaves it and takes nothing; one dropped after
//! its ticket was granted returns the ticket's quota.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::admit::{Outcome, Priority, Request, Ticket};
use crate::clock::{ManualSleep, Timer};
use crate::estimate::Prompt;
use crate::fair::{FairQueue, Place, Served};
use crate::lifecycle::{step, Reason, Step};
use crate::permit::Permit;
use crate::store::QuotaStore;
use crate::time::Timestamp;
use crate::Engine;

/// Why [`Engine::acquire`] gave no permit: the request was not admitted within its wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not admitted: {0}")]
pub struct AcquireError(pub Reason);

/// What a queued request's admission needs, owned, so that any task may admit it.
#[derive(Debug)]
struct Owned {
    model: usize,
    text: Option<String>,
    chars: u64,
    priority: Priority,
    max_output_tokens: Option<u64>,
    requests: u64,
    media_tokens: u64,
}

impl Owned {
    fn of(req: &Request<'_>) -> Self {
        let (text, chars) = match req.prompt {
            Prompt::Text(t) => (Some(t.to_owned()), 0),
            Prompt::Chars(n) => (None, n),
        };
        let (model, priority, max_output_tokens) = (req.model, req.priority, req.max_output_tokens);
        Self { model, text, chars, priority, max_output_tokens, requests: req.requests, media_tokens: req.media_tokens }
    }

    fn request(&self) -> Request<'_> {
        let prompt = self.text.as_deref().map_or(Prompt::Chars(self.chars), Prompt::Text);
        Request::new(self.model, prompt)
            .priority(self.priority)
            .max_output_tokens(self.max_output_tokens)
            .batch(self.requests)
            .media_tokens(self.media_tokens)
    }
}

#[derive(Debug)]
enum State {
    Waiting(Option<Waker>),
    Granted(Ticket),
    GaveUp(Reason),
    Done,
}

/// One waiter, shared between its future and the queue.
#[derive(Debug)]
struct Slot {
    req: Owned,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Inner {
    fair: FairQueue<Arc<Slot>>,
    /// The waiter holding the queue's timer, and how to wake it.
    holder: Option<(usize, Waker)>,
}

/// The fair queue of one model.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    /// Waiters in the queue, read without the lock by the fast path.
    waiting: AtomicUsize,
}

fn id(slot: &Arc<Slot>) -> usize {
    Arc::as_ptr(slot) as usize
}

impl<S: QuotaStore> Engine<S> {
    /// Admits `req`, waiting up to `max_wait` for capacity in its model's fair queue: high
    /// priority first, first come first served within a priority. Dropping the future
    /// leaves the queue without taking anything.
    ///
    /// ```
    /// # use keysim_engine::{Engine, Limits, ModelSpec, PoolSpec, ProjectSpec, KeySpec, Prompt, Request, Outcome};
    /// # use std::time::Duration;
    /// # let l = Limits { rpm: 10, tpm: 250_000, rpd: 250, tpd: None };
    /// # let engine = Engine::builder(PoolSpec {
    /// #     models: vec![ModelSpec { name: "gemini-2.5-flash".into(), limits: l }],
    /// #     projects: vec![ProjectSpec { id: "p".into(), limits: vec![Some(l)] }],
    /// #     keys: vec![KeySpec { id: "k".into(), project: "p".into() }],
    /// # }).build().unwrap();
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let permit = engine.acquire(&Request::new(0, Prompt::Text("Hi")), Duration::from_secs(30)).await?;
    /// permit.settle(Outcome::Success { input_tokens: 1, output_tokens: 5 })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub async fn acquire(&self, req: &Request<'_>, max_wait: Duration) -> Result<Permit<'_, S>, AcquireError> {
        let now = self.clock().now();
        let deadline = now.plus(max_wait.as_millis().min(u128::from(u64::MAX)) as u64);
        let queue = self.queues.get(req.model).ok_or(AcquireError(Reason::UnknownModel))?;
        self.note_arrival(req.model, now);
        if queue.waiting.load(Ordering::Acquire) == 0 {
            match step(self.admit(req, now), deadline, now) {
                Step::Send(t) => return Ok(Permit::new(self, t, false, self.lesson(req))),
                Step::GiveUp(r) => return Err(AcquireError(r)),
                Step::WaitUntil(..) => {}
            }
        }
        let slot = Arc::new(Slot { req: Owned::of(req), state: Mutex::new(State::Waiting(None)) });
        let place = {
            let mut inner = lock(&queue.inner);
            // Bumped by every freeing (the engine's exhaustion epoch). A waiter denied just
            // before a settlement freed capacity, which joins the queue just after that
            // settlement found it empty, sees the bump and dispatches itself: no wake-up is
            // lost (the settlement bumps, then reads `waiting`; the waiter stores `waiting`,
            // then reads the epoch).
            let freed = self.exhaustion_epoch.load(Ordering::SeqCst);
            let now = self.clock().now();
            let retry = if inner.fair.must_queue(req.priority) {
                None
            } else {
                match step(self.admit(req, now), deadline, now) {
                    Step::Send(t) => return Ok(Permit::new(self, t, false, self.lesson(req))),
                    Step::GiveUp(r) => return Err(AcquireError(r)),
                    Step::WaitUntil(at, why) => Some((at, why)),
                }
            };
            let before = inner.fair.wake_at();
            let place =
                inner.fair.push(slot.clone(), req.priority, deadline, retry).map_err(|(_, r)| AcquireError(r))?;
            queue.waiting.store(inner.fair.len(), Ordering::SeqCst);
            if self.exhaustion_epoch.load(Ordering::SeqCst) != freed {
                // Freed while this request was being denied: the settlement may have seen an
                // empty queue, so serve the queue now.
                self.dispatch(queue, &mut inner);
            } else if inner.fair.wake_at() != before {
                // The queue's timer now fires earlier: its holder must re-arm.
                if let Some((_, w)) = &inner.holder {
                    w.wake_by_ref();
                }
            }
            place
        };
        Waiter { engine: self, queue, slot, place, deadline, sleep: None, done: false }.await
    }

    /// [`Engine::acquire`], for a permit that holds the engine by an `Arc` (`'static`: it moves
    /// into whatever task relays the answer).
    pub async fn acquire_owned(
        self: &Arc<Self>,
        req: &Request<'_>,
        max_wait: Duration,
    ) -> Result<crate::OwnedPermit<S>, AcquireError> {
        let permit = self.acquire(req, max_wait).await?;
        Ok(permit.into_owned(Arc::clone(self)))
    }

    /// Something was freed in `model` (or anywhere): serve its waiters now.
    pub(crate) fn wake_queues(&self, model: Option<usize>) {
        for (m, q) in self.queues.iter().enumerate() {
            // `forget_exhaustion` bumped the epoch just before this.
            if model.is_none_or(|x| x == m) && q.waiting.load(Ordering::SeqCst) > 0 {
                let mut inner = lock(&q.inner);
                self.dispatch(q, &mut inner);
            }
        }
    }

    /// Admits the queue's waiters in order at the clock's `now`, and wakes each one served.
    fn dispatch(&self, q: &Queue, inner: &mut Inner) {
        let now = self.clock().now();
        let before = inner.fair.wake_at();
        let mut served = Vec::new();
        inner.fair.dispatch(now, |slot, _| self.admit(&slot.req.request(), now), |s| served.push(s));
        q.waiting.store(inner.fair.len(), Ordering::SeqCst);
        // The head's next chance moved earlier (capacity freed): the timer's holder re-arms.
        if inner.fair.wake_at().is_some_and(|at| before.is_none_or(|b| at < b)) {
            if let Some((_, w)) = &inner.holder {
                w.wake_by_ref();
            }
        }
        for s in served {
            let (slot, state) = match s {
                Served::Granted(slot, t) => (slot, State::Granted(t)),
                Served::GaveUp(slot, r) => (slot, State::GaveUp(r)),
            };
            let old = std::mem::replace(&mut *lock(&slot.state), state);
            if let State::Waiting(Some(w)) = old {
                w.wake();
            }
        }
    }
}

enum Sleep<'e> {
    Real(Pin<Box<tokio::time::Sleep>>, Timestamp),
    Manual(ManualSleep<'e>, Timestamp),
}

impl Sleep<'_> {
    fn until(&self) -> Timestamp {
        match self {
            Self::Real(_, t) | Self::Manual(_, t) => *t,
        }
    }
}

/// A queued request's future.
struct Waiter<'e, S: QuotaStore> {
    engine: &'e Engine<S>,
    queue: &'e Queue,
    slot: Arc<Slot>,
    place: Place,
    /// When it gives up: every waiter keeps a timer for it, so that none outlives it even
    /// if no dispatch or holder comes by.
    deadline: Timestamp,
    sleep: Option<Sleep<'e>>,
    done: bool,
}

impl<'e, S: QuotaStore> Waiter<'e, S> {
    /// Takes the slot's outcome, if there is one.
    fn outcome(&mut self) -> Option<Result<Permit<'e, S>, AcquireError>> {
        let mut state = lock(&self.slot.state);
        let out = match std::mem::replace(&mut *state, State::Done) {
            State::Granted(t) => {
                let lesson = self.engine.lesson(&self.slot.req.request());
                Ok(Permit::new(self.engine, t, true, lesson))
            }
            State::GaveUp(r) => Err(AcquireError(r)),
            waiting => {
                *state = waiting;
                return None;
            }
        };
        drop(state);
        self.done = true;
        self.release_timer();
        Some(out)
    }

    /// Hands the queue's timer on, if this waiter holds it: the next waiter takes it.
    fn release_timer(&mut self) {
        self.sleep = None;
        let mut inner = lock(&self.queue.inner);
        if inner.holder.as_ref().is_some_and(|(h, _)| *h == id(&self.slot)) {
            inner.holder = None;
            if let Some(next) = inner.fair.first() {
                if let State::Waiting(Some(w)) = &*lock(&next.state) {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Arms the timer for `at` on the engine's clock (unless armed for it already).
    fn arm(&mut self, at: Timestamp, now: Timestamp) {
        if self.sleep.as_ref().is_some_and(|s| s.until() == at) {
            return;
        }
        self.sleep = Some(match self.engine.clock().timer() {
            Timer::Manual(clock) => Sleep::Manual(clock.sleep_until(at), at),
            Timer::Real { scale, lag } => {
                let ms = at.since(now) as f64 / scale.max(f64::MIN_POSITIVE);
                Sleep::Real(Box::pin(tokio::time::sleep(Duration::from_secs_f64(ms.ceil() / 1000.0) + lag)), at)
            }
        });
    }
}

impl<'e, S: QuotaStore> Future for Waiter<'e, S> {
    type Output = Result<Permit<'e, S>, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if let Some(out) = this.outcome() {
                return Poll::Ready(out);
            }
            let now = this.engine.clock().now();
            let next = {
                let mut inner = lock(&this.queue.inner);
                match inner.fair.wake_at() {
                    Some(at) if at <= now => {
                        this.engine.dispatch(this.queue, &mut inner);
                        Next::Again
                    }
                    // Past its deadline and still queued: it leaves (a dispatch that served
                    // it meanwhile left its outcome in the slot).
                    _ if now > this.deadline => match inner.fair.cancel(this.place) {
                        Some(_) => {
                            this.queue.waiting.store(inner.fair.len(), Ordering::SeqCst);
                            Next::Leave(inner.fair.last_reason())
                        }
                        None => Next::Again,
                    },
                    wake_at => {
                        let me = id(&this.slot);
                        // Registered under the queue's lock: a dispatch that serves this
                        // waiter takes the same lock, so its wake cannot be lost.
                        match &mut *lock(&this.slot.state) {
                            State::Waiting(w) => *w = Some(cx.waker().clone()),
                            _ => continue,
                        }
                        let holds = inner.holder.as_ref().is_none_or(|(h, _)| *h == me);
                        match wake_at {
                            Some(at) if holds => {
                                inner.holder = Some((me, cx.waker().clone()));
                                Next::Sleep(at)
                            }
                            _ => Next::Park,
                        }
                    }
                }
            };
            // A holder sleeps until the queue's next chance or its own deadline, whichever
            // comes first; any other waiter until its deadline (a dispatch wakes it sooner).
            let at = match next {
                Next::Again => continue,
                Next::Leave(reason) => {
                    *lock(&this.slot.state) = State::Done;
                    this.done = true;
                    this.release_timer();
                    return Poll::Ready(Err(AcquireError(reason)));
                }
                Next::Park => this.deadline.plus(1),
                Next::Sleep(at) => at.min(this.deadline.plus(1)),
            };
            this.arm(at, now);
            let fired = match this.sleep.as_mut().expect("armed above") {
                Sleep::Real(s, _) => s.as_mut().poll(cx).is_ready(),
                Sleep::Manual(s, _) => Pin::new(s).poll(cx).is_ready(),
            };
            if !fired {
                return Poll::Pending;
            }
            this.sleep = None;
        }
    }
}

/// What a waiter does after looking at its queue.
enum Next {
    /// Look at its slot again.
    Again,
    /// Sleep on the queue's timer until then.
    Sleep(Timestamp),
    /// Wait to be woken by a dispatch or by the timer's holder (or its own deadline).
    Park,
    /// Give up: past its deadline.
    Leave(Reason),
}

impl<S: QuotaStore> Drop for Waiter<'_, S> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut inner = lock(&self.queue.inner);
            inner.fair.cancel(self.place);
            self.queue.waiting.store(inner.fair.len(), Ordering::Release);
        }
        self.release_timer();
        // Granted after the caller stopped waiting: the quota goes back.
        if let State::Granted(t) = std::mem::replace(&mut *lock(&self.slot.state), State::Done) {
            let _ = self.engine.settle(&t, Outcome::NotSent, self.engine.clock().now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Clock, KeySpec, Limits, ManualClock, ModelSpec, PoolSpec, ProjectSpec};

    const T0: Timestamp = Timestamp(1_764_140_400_000);

    fn engine(rpm: u64, clock: Arc<ManualClock>) -> Arc<Engine> {
        let limits = Limits { rpm, tpm: 100_000_000, rpd: 1_000_000, tpd: None };
        let spec = PoolSpec {
            models: vec![ModelSpec { name: "m".into(), limits }],
            projects: vec![ProjectSpec { id: "p".into(), limits: vec![Some(limits)] }],
            keys: vec![KeySpec { id: "k".into(), project: "p".into() }],
        };
        Arc::new(Engine::builder(spec).clock(clock).build().unwrap())
    }

    fn waiting(e: &Engine) -> usize {
        e.queues[0].waiting.load(Ordering::Acquire)
    }

    async fn settle_down(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("tasks did not settle");
    }

    /// 1,000 tasks against RPM 100 on a manual clock: exactly 100 granted per window, high
    /// priority first, first come first served within a priority, cancelled waiters take
    /// nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn a_thousand_waiters_are_served_fairly_one_window_at_a_time() {
        let clock = Arc::new(ManualClock::new(T0));
        let e = engine(100, clock.clone());
        let granted: Arc<Mutex<Vec<(usize, Priority, Timestamp)>>> = Arc::default();
        let mut handles = Vec::new();
        for i in 0..1000usize {
            let priority = if i >= 800 { Priority::High } else { Priority::Normal };
            let (e2, granted2, clock2) = (e.clone(), granted.clone(), clock.clone());
            let before = (waiting(&e), lock(&granted).len());
            handles.push(tokio::spawn(async move {
                let req = Request::new(0, Prompt::Chars(40)).priority(priority);
                let permit = e2.acquire(&req, Duration::from_secs(3_600)).await.expect("served within the hour");
                lock(&granted2).push((i, priority, clock2.now()));
                permit.settle(Outcome::Success { input_tokens: 10, output_tokens: 1 }).unwrap();
            }));
            // Each task is in the queue (or served at once) before the next one starts.
            settle_down(|| (waiting(&e), lock(&granted).len()) != before).await;
        }
        assert_eq!(lock(&granted).len(), 100, "the first window's requests go through at once");
        assert_eq!(waiting(&e), 900);
        // Cancel every tenth queued normal waiter.
        let cancelled: Vec<usize> = (100..800).filter(|i| i % 10 == 3).collect();
        for &i in &cancelled {
            handles[i].abort();
        }
        settle_down(|| waiting(&e) == 900 - cancelled.len()).await;
        let expected_total = 1000 - cancelled.len();
        let mut window = 0;
        while lock(&granted).len() < expected_total {
            window += 1;
            clock.advance(60_000);
            let want = (100 + 100 * window).min(expected_total);
            settle_down(|| lock(&granted).len() == want).await;
            let at = T0.plus(60_000 * window as u64);
            let in_window = lock(&granted).iter().filter(|g| g.2 == at).count();
            assert_eq!(in_window, want - (100 + 100 * (window - 1)).min(expected_total), "window {window}");
            assert_eq!(e.usage(BucketIdOf::first(&e), at).unwrap().minute_requests as usize, in_window);
        }
        let g = lock(&granted).clone();
        // High priority (enqueued last) went first: all of it in the first two windows.
        assert!(g.iter().filter(|x| x.1 == Priority::High).all(|x| x.2 <= T0.plus(120_000)));
        // Within normal priority, arrival order: grant times never go down with the index.
        let mut normal: Vec<_> = g.iter().filter(|x| x.1 == Priority::Normal).collect();
        normal.sort_by_key(|x| x.0);
        assert!(normal.windows(2).all(|w| w[0].2 <= w[1].2), "first come, first served");
        assert!(g.iter().all(|x| !cancelled.contains(&x.0)), "a cancelled waiter took nothing");
        assert_eq!(waiting(&e), 0);
    }

    /// Dropping 500 unsettled permits returns usage to zero.
    #[tokio::test(flavor = "current_thread")]
    async fn dropped_permits_return_their_quota() {
        let clock = Arc::new(ManualClock::new(T0));
        let e = engine(1_000, clock.clone());
        let mut permits = Vec::new();
        for _ in 0..500 {
            permits.push(e.acquire(&Request::new(0, Prompt::Chars(400)), Duration::ZERO).await.unwrap());
        }
        let bucket = BucketIdOf::first(&e);
        let u = e.usage(bucket, T0).unwrap();
        assert_eq!((u.minute_requests, u.minute_tokens), (500, 500 * 100));
        drop(permits);
        let u = e.usage(bucket, T0).unwrap();
        assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests, u.day_tokens), (0, 0, 0, 0));
    }

    /// The bucket of the pool's only project.
    struct BucketIdOf;

    impl BucketIdOf {
        fn first(e: &Engine) -> crate::BucketId {
            e.pool().groups(0)[0].bucket
        }
    }

    /// The Redis server to share between replicas, if the environment names one.
    fn redis_url() -> Option<String> {
        std::env::var("KEYSIM_REDIS_URL").ok().filter(|_| cfg!(feature = "redis"))
    }

    /// A clock running `scale` times faster than real time, as lab runs do.
    struct Fast {
        origin: std::time::Instant,
        scale: f64,
    }

    impl Clock for Fast {
        fn now(&self) -> Timestamp {
            T0.plus((self.origin.elapsed().as_secs_f64() * 1000.0 * self.scale) as u64)
        }

        fn timer(&self) -> Timer<'_> {
            Timer::Real { scale: self.scale, lag: Duration::from_millis(5) }
        }
    }

    /// Many tasks on a multi-threaded runtime, real timers, two replicas on one store (Redis
    /// when `KEYSIM_REDIS_URL` names one), deadlines shorter than a window, settlements from
    /// other tasks: every waiter ends by its deadline. Two proxy replicas on Redis under CPU
    /// pressure once left waiters parked past their deadlines with no timer to end them; every
    /// waiter now keeps a timer for its own deadline.
    #[test]
    fn no_waiter_outlives_its_deadline_on_a_busy_runtime() {
        for round in 0..5 {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let limits = Limits { rpm: 30, tpm: 100_000_000, rpd: 1_000_000, tpd: None };
            let spec = PoolSpec {
                models: vec![ModelSpec { name: "m".into(), limits }],
                projects: (0..2).map(|p| ProjectSpec { id: format!("p{p}"), limits: vec![Some(limits)] }).collect(),
                keys: (0..2).map(|p| KeySpec { id: format!("k{p}"), project: format!("p{p}") }).collect(),
            };
            let clock = Arc::new(Fast { origin: std::time::Instant::now(), scale: 20.0 });
            // Two replicas sharing one store, as two proxies on one Redis.
            let store = Arc::new(crate::MemoryStore::new());
            #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
            let prefix = format!("keysim-wait-test:{}:{round}:{:?}", std::process::id(), std::time::Instant::now());
            let replica = |_| -> Arc<Engine<Box<dyn QuotaStore>>> {
                let shared: Box<dyn QuotaStore> = match redis_url() {
                    #[cfg(feature = "redis")]
                    Some(url) => {
                        let mut c = crate::RedisConfig::parse(&url).unwrap();
                        c.prefix = prefix.clone();
                        c.time = crate::RedisTime::Caller;
                        Box::new(crate::RedisStore::new(c).unwrap())
                    }
                    _ => Box::new(store.clone()),
                };
                Arc::new(Engine::builder(spec.clone()).clock(clock.clone()).store(shared).build().unwrap())
            };
            let replicas: Vec<_> = (0..2).map(replica).collect();
            let late = rt.block_on(async {
                let start = tokio::time::Instant::now();
                let mut tasks = Vec::new();
                for i in 0..120u64 {
                    let e = replicas[i as usize % 2].clone();
                    tasks.push(tokio::spawn(async move {
                        tokio::time::sleep_until(start + Duration::from_millis(25 * i)).await;
                        let asked = tokio::time::Instant::now();
                        let req = Request::new(0, Prompt::Chars(40));
                        // 10 s of the clock: half a second.
                        let got = e.acquire(&req, Duration::from_secs(10)).await;
                        let waited = asked.elapsed();
                        if let Ok(p) = got {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            p.settle(Outcome::Success { input_tokens: 10, output_tokens: 1 }).unwrap();
                        }
                        waited
                    }));
                }
                let mut late = Vec::new();
                for t in tasks {
                    match tokio::time::timeout(Duration::from_secs(5), t).await {
                        Ok(w) => {
                            let w = w.unwrap();
                            if w > Duration::from_millis(1_500) {
                                late.push(w);
                            }
                        }
                        Err(_) => late.push(Duration::MAX),
                    }
                }
                late
            });
            let queued: Vec<usize> = replicas.iter().map(|e| e.queues[0].waiting.load(Ordering::Acquire)).collect();
            assert!(late.is_empty(), "round {round}: waiters past their deadline: {late:?} (queues {queued:?})");
            rt.shutdown_background();
        }
    }
}
