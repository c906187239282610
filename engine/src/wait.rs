//! Waiting for capacity (feature `async`): [`Engine::acquire`] over the fair queue of each
//! model.
//!
//! A request that cannot be admitted now joins its model's [`FairQueue`] with an owned copy of
//! what admission needs. Only the queue's head is admitted, by its own task and outside the
//! queue's lock, so that a store's round trip never holds the lock: when its turn comes — at
//! once after the waiter before it was served, when the queue's next chance
//! ([`FairQueue::wake_at`]) arrives on the engine's [`Clock`](crate::Clock), or as soon as a
//! settlement frees capacity. Granted, it leaves and the next head tries; denied, the queue
//! waits until the denial's retry, and whoever cannot wait that long gives up then. A waiter
//! dropped in the queue leaves it and takes nothing.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

use crate::admit::{Priority, Request, Ticket};
use crate::clock::{ManualSleep, Timer};
use crate::estimate::Prompt;
use crate::fair::{FairQueue, Place, Served};
use crate::lifecycle::{step, Reason, Step};
use crate::permit::{OwnedPermit, Permit};
use crate::store::{AsyncStore, Buckets, QuotaStore};
use crate::time::Timestamp;
use crate::Engine;

/// Why [`Engine::acquire`] gave no permit: the request was not admitted within its wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not admitted: {0}")]
pub struct AcquireError(pub Reason);

/// What a queued request's admission needs, owned, so that it outlives the caller's borrow.
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

/// One waiter, shared between its task and the queue.
#[derive(Debug)]
struct Slot {
    req: Owned,
    /// Set by another waiter when this one must give up (it cannot be served by its deadline).
    gave_up: Mutex<Option<Reason>>,
    /// Wakes its task: its turn came, or it gave up.
    notify: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Inner {
    fair: FairQueue<Arc<Slot>>,
    /// Whether the head is being admitted now (by its own task, outside this lock).
    admitting: bool,
}

/// The fair queue of one model.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    /// Waiters in the queue, read without the lock by the fast path.
    pub(crate) waiting: AtomicUsize,
}

impl Queue {
    /// Tells the head its turn may have come.
    fn wake_head(&self, inner: &Inner) {
        if let Some(head) = inner.fair.first() {
            head.notify.notify_one();
        }
    }
}

/// A sleep on the engine's clock.
enum Sleep<'e> {
    Real(Pin<Box<tokio::time::Sleep>>),
    Manual(ManualSleep<'e>),
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Self::Real(s) => s.as_mut().poll(cx),
            Self::Manual(s) => Pin::new(s).poll(cx),
        }
    }
}

/// Completes when either does.
async fn race(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

impl<S: Buckets> Engine<S> {
    /// Something was freed in `model` (or anywhere): its queue's head may try at once.
    pub(crate) fn wake_queues(&self, model: Option<usize>) {
        for (m, q) in self.queues.iter().enumerate() {
            // `forget_exhaustion` bumped the epoch just before this.
            if model.is_none_or(|x| x == m) && q.waiting.load(Ordering::SeqCst) > 0 {
                let mut inner = lock(&q.inner);
                inner.fair.wake_now(self.clock().now());
                q.wake_head(&inner);
            }
        }
    }

    /// A sleep until `at` on the engine's clock (read at `now`).
    fn sleep_until(&self, at: Timestamp, now: Timestamp) -> Sleep<'_> {
        match self.clock().timer() {
            Timer::Manual(clock) => Sleep::Manual(clock.sleep_until(at)),
            Timer::Real { scale, lag } => {
                let ms = at.since(now) as f64 / scale.max(f64::MIN_POSITIVE);
                Sleep::Real(Box::pin(tokio::time::sleep(Duration::from_secs_f64(ms.ceil() / 1000.0) + lag)))
            }
        }
    }
}

/// A waiter's membership of its queue: leaving (dropped, or at its deadline) takes it out and
/// lets the next head try.
struct Member<'e> {
    queue: &'e Queue,
    place: Place,
    /// Whether it is out of the queue already.
    gone: bool,
    /// Whether it is the head being admitted now.
    admitting: bool,
}

impl Member<'_> {
    fn leave(&mut self, inner: &mut Inner) {
        if !self.gone {
            inner.fair.cancel(self.place);
            self.queue.waiting.store(inner.fair.len(), Ordering::SeqCst);
            self.gone = true;
        }
        if self.admitting {
            inner.admitting = false;
            self.admitting = false;
        }
        self.queue.wake_head(inner);
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        if !self.gone || self.admitting {
            let mut inner = lock(&self.queue.inner);
            self.leave(&mut inner);
        }
    }
}

impl<S: AsyncStore> Engine<S> {
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
    pub async fn acquire(&self, req: &Request<'_>, max_wait: Duration) -> Result<Permit<'_, S>, AcquireError>
    where
        S: QuotaStore,
    {
        let (ticket, queued) = self.acquire_ticket(req, max_wait).await?;
        Ok(Permit::new(self, ticket, queued, self.lesson(req)))
    }

    /// [`Engine::acquire`], for a permit that holds the engine by an `Arc` (`'static`: it moves
    /// into whatever task relays the answer, and settles in the background when dropped). The
    /// way to wait with a store that waits on I/O.
    pub async fn acquire_owned(
        self: &Arc<Self>,
        req: &Request<'_>,
        max_wait: Duration,
    ) -> Result<OwnedPermit<S>, AcquireError>
    where
        S: 'static,
    {
        let (ticket, queued) = self.acquire_ticket(req, max_wait).await?;
        Ok(OwnedPermit::new(Arc::clone(self), ticket, queued, self.lesson(req)))
    }

    /// A ticket for `req` within `max_wait`, and whether it queued for it.
    async fn acquire_ticket(&self, req: &Request<'_>, max_wait: Duration) -> Result<(Ticket, bool), AcquireError> {
        let now = self.clock().now();
        let deadline = now.plus(max_wait.as_millis().min(u128::from(u64::MAX)) as u64);
        let queue = self.queues.get(req.model).ok_or(AcquireError(Reason::UnknownModel))?;
        self.note_arrival(req.model, now);
        // Bumped by every freeing: a request denied just before a settlement freed capacity,
        // which joins the queue just after that settlement found it empty, sees the bump and
        // tries again at once. No wake-up is lost.
        let freed = self.exhaustion_epoch.load(Ordering::SeqCst);
        let mut retry = None;
        if queue.waiting.load(Ordering::Acquire) == 0 {
            match step(self.admit_async(req, now).await, deadline, now) {
                Step::Send(t) => return Ok((t, false)),
                Step::GiveUp(r) => return Err(AcquireError(r)),
                Step::WaitUntil(at, why) => retry = Some((at, why)),
            }
        }
        let slot = Arc::new(Slot { req: Owned::of(req), gave_up: Mutex::new(None), notify: Notify::new() });
        let place = {
            let mut inner = lock(&queue.inner);
            // Its own retry tells the queue when the head can next try only if it is the head.
            let retry = if inner.fair.must_queue(req.priority) { None } else { retry };
            let place =
                inner.fair.push(slot.clone(), req.priority, deadline, retry).map_err(|(_, r)| AcquireError(r))?;
            queue.waiting.store(inner.fair.len(), Ordering::SeqCst);
            if self.exhaustion_epoch.load(Ordering::SeqCst) != freed {
                inner.fair.wake_now(self.clock().now());
            }
            queue.wake_head(&inner);
            place
        };
        let mut member = Member { queue, place, gone: false, admitting: false };
        loop {
            if let Some(reason) = lock(&slot.gave_up).take() {
                member.gone = true;
                return Err(AcquireError(reason));
            }
            let now = self.clock().now();
            let until = {
                let mut inner = lock(&queue.inner);
                if now > deadline {
                    // Past its deadline and still queued: it leaves.
                    member.leave(&mut inner);
                    return Err(AcquireError(inner.fair.last_reason()));
                } else if inner.fair.is_first(place) {
                    match inner.fair.wake_at() {
                        _ if inner.admitting => Some(deadline.plus(1)),
                        Some(at) if at > now => Some(at.min(deadline.plus(1))),
                        _ => {
                            inner.admitting = true;
                            member.admitting = true;
                            None
                        }
                    }
                } else {
                    Some(deadline.plus(1))
                }
            };
            if let Some(until) = until {
                race(slot.notify.notified(), self.sleep_until(until, now)).await;
                continue;
            }
            if !member.admitting {
                continue;
            }
            // The head admits itself, outside the lock.
            let decision = self.admit_async(&slot.req.request(), now).await;
            let mut gave_up = Vec::new();
            let fate = {
                let mut inner = lock(&queue.inner);
                inner.admitting = false;
                member.admitting = false;
                let fate = inner.fair.settle_head(place, now, decision, |s| gave_up.push(s));
                queue.waiting.store(inner.fair.len(), Ordering::SeqCst);
                if fate.is_some() {
                    member.gone = true;
                    queue.wake_head(&inner);
                }
                fate
            };
            for s in gave_up {
                if let Served::GaveUp(w, reason) = s {
                    *lock(&w.gave_up) = Some(reason);
                    w.notify.notify_one();
                }
            }
            match fate {
                Some(Served::Granted(_, t)) => return Ok((t, true)),
                Some(Served::GaveUp(_, reason)) => return Err(AcquireError(reason)),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::{Clock, KeySpec, Limits, ModelSpec, Outcome, PoolSpec, ProjectSpec};

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
            let replica = |_| -> Arc<Engine<crate::AnyStore>> {
                let shared = match redis_url() {
                    #[cfg(feature = "redis")]
                    Some(url) => {
                        let mut c = crate::RedisConfig::parse(&url).unwrap();
                        c.prefix = prefix.clone();
                        c.time = crate::redis_store::RedisTime::Caller;
                        crate::AnyStore::Redis(Box::new(crate::RedisStore::new(c).unwrap()))
                    }
                    _ => crate::AnyStore::Memory(store.clone()),
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
                        let got = e.acquire_owned(&req, Duration::from_secs(10)).await;
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
