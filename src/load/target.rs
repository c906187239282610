//! What an answer means for a load run, and the run mode that sends straight to a target
//! running its own engine (`keysim proxy`): no engine in the runner, the target's own 429s
//! (`x-keysim-denied`) counted as denials, its `x-keysim-project` as the request's project.

use std::time::Instant;

use super::{Done, Shared};
use crate::engine::{failure, parse_quota_error, Exhaustion, Outcome, UsageMetadata};
use crate::report::Terminal;
use crate::sim::NewRequest;

/// An answer off the wire.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: String,
    /// A proxy's reason for not admitting it (its own 429, not the provider's).
    pub(super) denied: Option<String>,
    /// The project a proxy sent it to.
    pub(super) project: Option<String>,
}

/// What a request's permit is settled with: a successful answer's usage (the permit counts
/// and learns from it), or another outcome.
pub(super) enum Settle {
    /// Answered, with this usage.
    Usage(UsageMetadata),
    /// Anything else.
    Outcome(Outcome),
}

impl Shared {
    /// Records what `answer` means in `done` and returns what to settle with.
    pub(super) fn judge(
        &self,
        answer: Result<Answer, bool>,
        answered: Instant,
        intended: Instant,
        done: &mut Done,
    ) -> Settle {
        let r = done.new;
        let outcome = match answer {
            Ok(a) if a.status == 200 => {
                let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
                let usage =
                    UsageMetadata::parse(&v).unwrap_or(UsageMetadata { prompt: r.input, ..UsageMetadata::default() });
                let (input, output) = (usage.prompt, usage.output());
                done.state = Terminal::Succeeded;
                done.input = input;
                done.output = output;
                done.e2e_us = Some(answered.saturating_duration_since(intended).as_micros() as u64);
                return Settle::Usage(usage);
            }
            // The target's engine did not admit it: a denial, not the provider's refusal.
            Ok(a) if a.denied.is_some() => {
                done.state = Terminal::Denied;
                done.reason = a.denied.unwrap_or_default();
                Outcome::NotSent
            }
            // A quota 429 is a breach; one without details is the provider short of capacity,
            // a failure.
            Ok(a) if a.status == 429 => {
                let q = parse_quota_error(&a.body);
                if q.kind == Exhaustion::Capacity {
                    done.state = Terminal::Failed;
                    done.reason = "capacity-429".into();
                } else {
                    done.state = Terminal::Breach;
                    done.reason = "rate-limited".into();
                }
                Outcome::RateLimited(q)
            }
            Ok(a) => {
                done.state = Terminal::Failed;
                // The simulator's names for the provider's failures, and what each tells the
                // engine: a rejected key, the provider's capacity, or nothing in particular.
                let (reason, outcome) = match failure(a.status, &a.body) {
                    Some((cause, outcome)) => (cause.to_owned(), outcome),
                    None => (format!("http-{}", a.status), Outcome::Failed),
                };
                done.reason = reason;
                outcome
            }
            // A timeout is the provider's capacity (the model backs off); another transport
            // failure says nothing about the provider.
            Err(timed_out) => {
                done.state = Terminal::Failed;
                done.reason = if timed_out { "timeout".into() } else { "transport".into() };
                done.transport_error = true;
                if timed_out {
                    Outcome::Unavailable
                } else {
                    Outcome::Failed
                }
            }
        };
        Settle::Outcome(outcome)
    }

    /// The whole life of one request sent straight to a target that admits it itself.
    pub(super) async fn through_target(&self, r: NewRequest, intended: Instant) -> Done {
        let started = Instant::now();
        let mut done = Done::new(r, started.saturating_duration_since(intended).as_micros() as u64);
        let text = super::prompt_text(&self.sc, &r);
        let token = self.token.clone().unwrap_or_default();
        let sent_at = self.now();
        let (answer, answered) = self.send(&r, &token, &text).await;
        let now = self.now();
        let arrival = crate::engine::Timestamp(self.origin_ms + r.at);
        done.end_ms = now.since(crate::engine::Timestamp(self.origin_ms));
        if let Ok(a) = &answer {
            done.project = a.project.as_ref().and_then(|p| self.sc.projects.iter().position(|q| &q.id == p));
        }
        // The target's queue wait is not visible: its whole time counts as the request's.
        let admitted = answer.as_ref().is_ok_and(|a| a.denied.is_none());
        if admitted {
            done.latency_ms = Some(now.since(sent_at));
            done.queue_wait_ms = sent_at.since(arrival);
        } else {
            done.queue_wait_ms = now.since(arrival);
        }
        self.judge(answer, answered, intended, &mut done);
        done
    }
}
