//! The fair wait queue of one model, sans-IO: high priority first, first come first served
//! within a priority, one timer for the whole queue.
//!
//! Waiters do not retry on their own. The queue keeps the one instant at which its head can
//! next be admitted ([`FairQueue::wake_at`]); the caller wakes it then — or earlier, when
//! capacity frees — and [`FairQueue::dispatch`] admits waiters in order until one is denied.
//! A waiter that cannot be served before its deadline (the head's next chance is later) gives
//! up at once, so nobody waits in vain. The simulator drives it with an event per queue, the
//! async [`Engine::acquire`](crate::Engine) with one sleeping waiter per queue.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::admit::{AdmitError, Decision, DenyReason, Priority, Ticket};
use crate::lifecycle::Reason;
use crate::time::Timestamp;

/// A waiter's place in the queue, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Place(u64);

/// What became of a waiter at dispatch.
#[derive(Debug, PartialEq, Eq)]
pub enum Served<W> {
    /// Admitted: send with the ticket.
    Granted(W, Ticket),
    /// It cannot be served before its deadline.
    GaveUp(W, Reason),
}

#[derive(Debug)]
struct Waiting<W> {
    waiter: W,
    deadline: u64,
}

/// The fair wait queue of one model. `W` identifies a waiter (a request index, a handle).
#[derive(Debug)]
pub struct FairQueue<W> {
    /// By priority, high first; within a lane by arrival (the place's number).
    lanes: [BTreeMap<u64, Waiting<W>>; 2],
    /// Deadlines of waiters, earliest first; entries of waiters gone are skipped.
    deadlines: BinaryHeap<Reverse<(u64, u64)>>,
    wake_at: Option<Timestamp>,
    /// Why the head was last denied: the reason of those who give up behind it.
    last: Reason,
    next: u64,
}

impl<W> Default for FairQueue<W> {
    fn default() -> Self {
        Self {
            lanes: [BTreeMap::new(), BTreeMap::new()],
            deadlines: BinaryHeap::new(),
            wake_at: None,
            last: Reason::Denied(DenyReason::NoUsableKey),
            next: 0,
        }
    }
}

fn lane(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
    }
}

impl<W> FairQueue<W> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waiters in the queue.
    pub fn len(&self) -> usize {
        self.lanes[0].len() + self.lanes[1].len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiter served next, if any.
    pub fn first(&self) -> Option<&W> {
        self.lanes.iter().find_map(|l| l.first_key_value()).map(|(_, w)| &w.waiter)
    }

    /// When the head can next be admitted, if anybody waits: when to call
    /// [`FairQueue::dispatch`].
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.wake_at
    }

    /// Why the head was last denied: the reason of a waiter that leaves at its deadline.
    pub fn last_reason(&self) -> Reason {
        self.last
    }

    /// Whether a new request of `priority` must queue behind waiters rather than try
    /// admission itself: someone of its priority or higher already waits.
    pub fn must_queue(&self, priority: Priority) -> bool {
        !self.lanes[0].is_empty() || (priority == Priority::Normal && !self.lanes[1].is_empty())
    }

    /// Queues `waiter` at the back of its priority's lane. `retry_at` is when its own
    /// admission said capacity frees, if it tried ([`FairQueue::must_queue`] was false).
    /// Gives the waiter back, with the reason, when it cannot be served by `deadline`.
    pub fn push(
        &mut self,
        waiter: W,
        priority: Priority,
        deadline: Timestamp,
        retry_at: Option<(Timestamp, DenyReason)>,
    ) -> Result<Place, (W, Reason)> {
        if let Some((at, why)) = retry_at {
            self.last = Reason::Denied(why);
            if self.wake_at.is_none_or(|w| at < w) {
                self.wake_at = Some(at);
            }
        }
        let earliest = self.wake_at.unwrap_or(Timestamp(0));
        if earliest > deadline {
            if self.is_empty() {
                self.wake_at = None;
            }
            return Err((waiter, self.last));
        }
        let place = self.next;
        self.next += 1;
        self.lanes[lane(priority)].insert(place, Waiting { waiter, deadline: deadline.0 });
        self.deadlines.push(Reverse((deadline.0, place)));
        Ok(Place(place))
    }

    /// Takes a waiter out of the queue (its caller gave up); `None` if it already left.
    pub fn cancel(&mut self, place: Place) -> Option<W> {
        let w = self.remove(place.0);
        if self.is_empty() {
            self.clear();
        }
        w
    }

    fn remove(&mut self, place: u64) -> Option<W> {
        let [high, normal] = &mut self.lanes;
        high.remove(&place).or_else(|| normal.remove(&place)).map(|w| w.waiter)
    }

    fn clear(&mut self) {
        self.deadlines.clear();
        self.wake_at = None;
    }

    /// Capacity may have freed: the head may try again at once.
    pub fn wake_now(&mut self, now: Timestamp) {
        if !self.is_empty() {
            self.wake_at = Some(self.wake_at.map_or(now, |w| w.min(now)));
        }
    }

    /// Whether the waiter at `place` is the one served next.
    pub fn is_first(&self, place: Place) -> bool {
        self.lanes.iter().find_map(|l| l.first_key_value()).is_some_and(|(p, _)| *p == place.0)
    }

    /// The admission the head (at `place`) made of itself, outside the queue (so that no
    /// store call is made under the queue's lock), at `now`: granted, it leaves and the next
    /// head may try at once; denied with a retry before its deadline, it stays first and the
    /// queue waits until then — whoever cannot wait that long gives up now (handed to
    /// `out`); otherwise it gives up. Returns the head's own fate, `None` while it waits.
    pub fn settle_head(
        &mut self,
        place: Place,
        now: Timestamp,
        decision: Result<Decision, AdmitError>,
        mut out: impl FnMut(Served<W>),
    ) -> Option<Served<W>> {
        let deadline = self.lanes.iter().find_map(|l| l.get(&place.0)).map(|w| Timestamp(w.deadline))?;
        let fate = match decision {
            Ok(Decision::Admitted(t)) => Some(Served::Granted(self.remove(place.0)?, t)),
            Ok(Decision::Denied(d)) => {
                self.last = Reason::Denied(d.reason);
                match d.retry_at {
                    Some(at) if at <= deadline => {
                        let at = at.max(now);
                        // Nobody behind the head is served before `at`: whoever must be sent
                        // earlier gives up now rather than wait in vain.
                        while let Some(&Reverse((d, p))) = self.deadlines.peek() {
                            if d >= at.0 {
                                break;
                            }
                            self.deadlines.pop();
                            if p != place.0 {
                                if let Some(w) = self.remove(p) {
                                    out(Served::GaveUp(w, self.last));
                                }
                            }
                        }
                        self.wake_at = Some(at);
                        return None;
                    }
                    _ => Some(Served::GaveUp(self.remove(place.0)?, self.last)),
                }
            }
            Err(e) => Some(Served::GaveUp(self.remove(place.0)?, e.into())),
        };
        if self.is_empty() {
            self.clear();
        } else {
            self.wake_at = Some(now);
        }
        fate
    }

    /// Admits waiters in order at `now` with `admit`, until one is denied; hands each one
    /// served or given up to `out`. Afterwards [`FairQueue::wake_at`] says when to come back.
    pub fn dispatch(
        &mut self,
        now: Timestamp,
        mut admit: impl FnMut(&W, Priority) -> Result<Decision, AdmitError>,
        mut out: impl FnMut(Served<W>),
    ) {
        let mut blocked: Option<Timestamp> = None;
        'lanes: for (l, priority) in [(0, Priority::High), (1, Priority::Normal)] {
            while let Some(head) = self.lanes[l].first_entry() {
                let deadline = Timestamp(head.get().deadline);
                // Its caller stopped waiting at its deadline: nothing is sent after it.
                if deadline < now {
                    out(Served::GaveUp(head.remove().waiter, self.last));
                    continue;
                }
                let decision = admit(&head.get().waiter, priority);
                match decision {
                    Ok(Decision::Admitted(t)) => out(Served::Granted(head.remove().waiter, t)),
                    Ok(Decision::Denied(d)) => {
                        self.last = Reason::Denied(d.reason);
                        match d.retry_at {
                            Some(at) if at <= deadline => {
                                blocked = Some(at.max(now));
                                break 'lanes;
                            }
                            _ => out(Served::GaveUp(head.remove().waiter, self.last)),
                        }
                    }
                    Err(e) => out(Served::GaveUp(head.remove().waiter, e.into())),
                }
            }
        }
        let Some(at) = blocked else {
            self.clear();
            return;
        };
        // Nobody behind the head is served before `at`: whoever must be sent earlier gives
        // up now rather than wait in vain.
        while let Some(&Reverse((deadline, place))) = self.deadlines.peek() {
            if deadline >= at.0 {
                break;
            }
            self.deadlines.pop();
            if let Some(w) = self.remove(place) {
                out(Served::GaveUp(w, self.last));
            }
        }
        self.wake_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::Denial;
    use crate::limits::Dimension;
    use crate::pool::KeyId;
    use crate::store::BucketId;

    const T0: Timestamp = Timestamp(1_000_000);
    const RPM: DenyReason = DenyReason::Exhausted(Dimension::Rpm);

    fn ticket() -> Ticket {
        Ticket {
            key: KeyId(0),
            bucket: BucketId(0),
            model: 0,
            estimated_input: 1,
            reserved_output: 0,
            reservation: crate::store::Reservation {
                seq: 0,
                at: Timestamp(0),
                day_ends: Timestamp(0),
                tokens: 1,
                requests: 1,
            },
            model_probe: false,
            key_probe: false,
        }
    }

    /// Admits `free` requests, then denies until `retry`.
    fn admitter(free: &mut u32, retry: Timestamp) -> impl FnMut(&u32, Priority) -> Result<Decision, AdmitError> + '_ {
        move |_, _| {
            if *free > 0 {
                *free -= 1;
                Ok(Decision::Admitted(ticket()))
            } else {
                Ok(Decision::Denied(Denial { retry_at: Some(retry), reason: RPM, bucket: None }))
            }
        }
    }

    #[test]
    fn serves_high_priority_first_then_arrival_order() {
        let mut q = FairQueue::new();
        let far = T0.plus(60_000);
        q.push(1u32, Priority::Normal, far, Some((T0.plus(10), RPM))).unwrap();
        q.push(2, Priority::Normal, far, None).unwrap();
        q.push(3, Priority::High, far, None).unwrap();
        q.push(4, Priority::Normal, far, None).unwrap();
        assert_eq!(q.wake_at(), Some(T0.plus(10)));
        let mut order = Vec::new();
        let mut free = 3;
        q.dispatch(T0.plus(10), admitter(&mut free, T0.plus(20)), |s| order.push(s));
        let granted: Vec<u32> =
            order.iter().map(|s| if let Served::Granted(w, _) = s { *w } else { panic!("{s:?}") }).collect();
        assert_eq!(granted, vec![3, 1, 2]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.wake_at(), Some(T0.plus(20)));
    }

    #[test]
    fn waiters_who_cannot_make_it_give_up_at_once() {
        let mut q = FairQueue::new();
        q.push(1u32, Priority::Normal, T0.plus(60_000), Some((T0.plus(10), RPM))).unwrap();
        q.push(2, Priority::Normal, T0.plus(15), None).unwrap();
        q.push(3, Priority::Normal, T0.plus(40_000), None).unwrap();
        let mut out = Vec::new();
        let mut free = 0;
        q.dispatch(T0.plus(10), admitter(&mut free, T0.plus(30_000)), |s| out.push(s));
        assert_eq!(out, vec![Served::GaveUp(2, Reason::Denied(RPM))]);
        assert_eq!(q.len(), 2);
        // A newcomer whose deadline comes before the head's next chance is refused.
        assert_eq!(q.push(4, Priority::Normal, T0.plus(29_999), None), Err((4, Reason::Denied(RPM))));
        assert!(q.push(5, Priority::Normal, T0.plus(30_000), None).is_ok());
    }

    #[test]
    fn a_cancelled_waiter_is_never_served() {
        let mut q = FairQueue::new();
        let a = q.push(1u32, Priority::Normal, T0.plus(60_000), Some((T0.plus(10), RPM))).unwrap();
        q.push(2, Priority::Normal, T0.plus(60_000), None).unwrap();
        assert_eq!(q.cancel(a), Some(1));
        assert_eq!(q.cancel(a), None);
        let mut out = Vec::new();
        let mut free = 5;
        q.dispatch(T0.plus(10), admitter(&mut free, T0), |s| out.push(s));
        assert_eq!(out, vec![Served::Granted(2, ticket())]);
        assert!(q.is_empty());
        assert_eq!(q.wake_at(), None);
        assert_eq!(free, 4, "the cancelled waiter took nothing");
    }
}
