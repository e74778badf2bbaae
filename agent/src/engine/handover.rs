//! The agent's side of the one-owner hand-over (see `spillway_placement::handover`): offering
//! queued jobs it cannot run soon enough, applying the coordinator's answers, and hosting jobs
//! the coordinator places here on behalf of other nodes.
//!
//! Every step is journaled before it is acted on: a job is `Offered` before the offer leaves, and
//! leaves `Offered` only on an answer from the coordinator, so the origin never runs a job the
//! coordinator may have given to a peer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use spillway_placement::handover::{OriginPhase, OriginStep, ToAgent, origin_step};
use spillway_placement::policy::spillway::predicted_wait;
use spillway_placement::{Target, TargetKind};
use spillway_proto::JobId;
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::OfferReason;

use super::run::conclude;
use super::{Agent, AgentError, JobEvent};
use crate::journal::{Guest, JobRecord, JobState};

/// A queued job waits this long before it is offered when its function sets no
/// `rescheduler_threshold` (OSCAR's default; the coordinator assumes the same).
pub const DEFAULT_RESCHEDULER_THRESHOLD: Duration =
    Duration::from_millis(spillway_placement::policy::DEFAULT_RESCHEDULER_THRESHOLD_MS);

/// After the coordinator declines a function's job, its jobs are not offered again for about
/// one run time, within these bounds.
const MIN_DECLINE_COOLDOWN: Duration = Duration::from_millis(200);
const MAX_DECLINE_COOLDOWN: Duration = Duration::from_secs(5);

/// What the engine hands to the mesh link.
#[derive(Debug)]
pub enum MeshOut {
    Offer {
        record: Box<JobRecord>,
        reason: OfferReason,
        /// This node's predicted wait before the job would start here, and its mean run time.
        local_wait_ms: u64,
        run_ms: u64,
    },
}

/// The coordinator's answer about a job this node offered.
#[derive(Debug, Clone)]
pub enum Answer {
    Accepted,
    Declined(String),
    Returned(String),
    /// A peer ran it; its outputs were fetched into `staging` (`staging/output/<key>`).
    Delivered {
        staging: PathBuf,
        outputs: Vec<ObjectKey>,
    },
    /// A peer ran it and it failed.
    Failed(String),
}

/// Where a job is on its origin, for the protocol.
fn origin_phase(state: &JobState) -> OriginPhase {
    match state {
        JobState::Queued | JobState::Running => OriginPhase::Local,
        JobState::Offered => OriginPhase::Offered,
        JobState::Handed => OriginPhase::Handed,
        JobState::Ran { .. } | JobState::Succeeded { .. } | JobState::Failed { .. } => {
            OriginPhase::Done
        }
    }
}

/// Predicted wait before a job that queues behind `ahead` others of its function starts here
/// (no slot free), by the placement core's own rule: the jobs ahead spread over the slots, each
/// taking the run time learned here.
pub fn predicted_local_wait_ms(ahead: u32, slots: u32, run_ms: u64) -> u64 {
    let here = Target {
        id: String::new(),
        kind: TargetKind::Origin,
        tier: 0,
        slots: Some(slots.max(1)),
        free_slots: 0,
        queued: ahead,
        latency_ms: 0,
        bytes_per_ms: 1.0,
        start_ms: 0,
        cost: None,
    };
    predicted_wait(&here, run_ms)
}

impl Agent {
    /// The run time expected here for `function`: learned from its runs, else the placement
    /// core's default (the coordinator assumes the same for this node).
    fn run_ms(&self, function: &str) -> u64 {
        self.run_times
            .expect(function, &self.shared.config.node_name)
    }

    /// The threshold past which a job of `function` should not wait here, if its jobs may be
    /// handed over at all (only functions the coordinator deployed: every peer runs the same).
    fn spill_threshold(&self, function: &str) -> Option<Duration> {
        let f = self.catalog.functions.get(function)?;
        if !f.from_mesh {
            return None;
        }
        Some(
            f.def
                .rescheduler_threshold
                .map_or(DEFAULT_RESCHEDULER_THRESHOLD, Duration::from_secs),
        )
    }

    /// Whether the rescheduler may offer jobs of `function` now: linked, and not just declined (a
    /// slot elsewhere frees after about one run, so that is how long the coordinator is left
    /// alone).
    fn may_offer(&self, function: &str) -> bool {
        let run = Duration::from_millis(self.run_ms(function));
        let cooldown = run.clamp(MIN_DECLINE_COOLDOWN, MAX_DECLINE_COOLDOWN);
        self.shared.mesh_out().is_some()
            && self
                .declined
                .get(function)
                .is_none_or(|at| at.elapsed() >= cooldown)
    }

    /// Admission: a job that did not start at once is offered when its predicted wait here is
    /// over its function's threshold.
    pub(super) fn offer_on_arrival(&mut self, id: JobId, function: &str) -> Result<(), AgentError> {
        let Some(threshold) = self.spill_threshold(function) else {
            return Ok(());
        };
        // A new arrival is a new prediction: the cool-down after a decline holds back only the
        // rescheduler's second tries (the simulator decides on every arrival as well).
        if self.shared.mesh_out().is_none() {
            return Ok(());
        }
        let Some(ahead) = self
            .scheduler
            .queued_of(function)
            .find(|(_, q)| *q == id)
            .map(|(ahead, _)| ahead as u32)
        else {
            return Ok(());
        };
        let slots = self.scheduler.slots(function);
        let wait = predicted_local_wait_ms(ahead, slots, self.run_ms(function));
        if wait > threshold.as_millis() as u64 {
            self.offer(id, OfferReason::Admission)?;
        }
        Ok(())
    }

    /// The rescheduler: queued (never started) jobs that waited longer than their function's
    /// threshold are offered.
    pub(super) fn reschedule(&mut self) -> Result<(), AgentError> {
        if self.shared.mesh_out().is_none() || self.scheduler.queued() == 0 {
            return Ok(());
        }
        let now = crate::journal::now_ms();
        let functions: Vec<String> = self.catalog.functions.keys().cloned().collect();
        for function in functions {
            let Some(threshold) = self.spill_threshold(&function) else {
                continue;
            };
            if !self.may_offer(&function) {
                continue;
            }
            let waiting: Vec<JobId> = self
                .scheduler
                .queued_of(&function)
                .map(|(_, id)| id)
                .collect();
            for id in waiting {
                let Some(record) = self.shared.journal.get(id)? else {
                    continue;
                };
                if now.saturating_sub(record.queued_at_ms) < threshold.as_millis() as u64 {
                    // Oldest first: the rest waited less.
                    break;
                }
                self.offer(id, OfferReason::Rescheduler)?;
            }
        }
        Ok(())
    }

    /// Journals `Offered`, takes the job out of the queue and passes the offer to the link.
    fn offer(&mut self, id: JobId, reason: OfferReason) -> Result<(), AgentError> {
        let Some(out) = self.shared.mesh_out() else {
            return Ok(());
        };
        let Some(function) = self.scheduler.queued_of_any(id).map(str::to_owned) else {
            return Ok(());
        };
        // Offers still unanswered may come back to the front of the queue: count them ahead.
        let in_doubt = self.in_doubt.values().filter(|f| **f == function).count();
        let ahead = self
            .scheduler
            .queued_of(&function)
            .find(|(_, q)| *q == id)
            .map_or(0, |(ahead, _)| (ahead + in_doubt) as u32);
        let run_ms = self.run_ms(&function);
        let local_wait_ms = predicted_local_wait_ms(ahead, self.scheduler.slots(&function), run_ms);
        // A job placed here for another node is the coordinator's already: it stays here.
        let journal = &self.shared.journal;
        if journal.was_returned(id)?
            || journal.hosting(id)?.is_some()
            || !self.scheduler.withdraw(id)
        {
            return Ok(());
        }
        let record = self
            .shared
            .journal
            .update(id, |r| r.state = JobState::Offered)?;
        self.in_doubt.insert(id, function);
        tracing::info!(job = %id.short(), function = %record.function, ?reason, "offering the job to the coordinator");
        // If the link went away meanwhile the job stays `Offered` and is offered again when it
        // comes back: only the coordinator can say whether it already took it.
        let _ = out.send(MeshOut::Offer {
            record: Box::new(record),
            reason,
            local_wait_ms,
            run_ms,
        });
        Ok(())
    }

    /// Applies the coordinator's answer. Returns whether the coordinator should be told the
    /// answer is journaled (deliveries and returns are acknowledged).
    pub(super) fn answer(&mut self, id: JobId, answer: Answer) -> Result<bool, AgentError> {
        let s = self.shared.clone();
        let Some(record) = s.journal.get(id)? else {
            return Ok(false);
        };
        self.in_doubt.remove(&id);
        let msg: ToAgent<JobId, ()> = match &answer {
            Answer::Accepted => ToAgent::Accepted(id),
            Answer::Declined(r) => ToAgent::Declined(id, r.clone()),
            Answer::Returned(r) => ToAgent::Return(id, r.clone()),
            Answer::Delivered { .. } | Answer::Failed(_) => ToAgent::Deliver(id, ()),
        };
        match origin_step(origin_phase(&record.state), &msg) {
            OriginStep::Ignore => Ok(false),
            OriginStep::Ack => Ok(true),
            OriginStep::Become(_) => match answer {
                Answer::Accepted => {
                    s.journal.update(id, |r| r.state = JobState::Handed)?;
                    tracing::info!(job = %id.short(), function = %record.function, "the coordinator took the job");
                    Ok(false)
                }
                Answer::Declined(reason) => {
                    s.journal.update(id, |r| r.state = JobState::Queued)?;
                    tracing::info!(job = %id.short(), function = %record.function, "offer declined ({reason}); running it here");
                    self.declined
                        .insert(record.function.clone(), Instant::now());
                    self.scheduler.enqueue_front(id, &record.function);
                    self.admit()?;
                    Ok(false)
                }
                Answer::Returned(reason) => {
                    s.journal.returned(id, &reason)?;
                    tracing::warn!(job = %id.short(), function = %record.function, "the coordinator returned the job ({reason}); running it here");
                    self.scheduler.enqueue_front(id, &record.function);
                    self.admit()?;
                    Ok(true)
                }
                Answer::Delivered { staging, outputs } => {
                    let ran = s.journal.update(id, |r| {
                        r.state = JobState::Ran {
                            staging: staging.clone(),
                            outputs: outputs.clone(),
                        };
                    })?;
                    tracing::info!(job = %id.short(), function = %record.function, "delivering the outputs of the job from the peer that ran it");
                    self.spawn_delivery(ran, staging, outputs);
                    Ok(true)
                }
                Answer::Failed(reason) => {
                    let staging = s.config.staging_dir().join(format!("handed-{id}"));
                    conclude(&s, record, JobState::Failed { reason }, &staging, None)?;
                    Ok(true)
                }
            },
        }
    }

    /// A job placed here by the coordinator, its input already fetched into `guest.dir`.
    /// Returns whether it is new here.
    pub(super) fn host(&mut self, record: JobRecord, guest: Guest) -> Result<bool, AgentError> {
        let s = self.shared.clone();
        if !self.catalog.functions.contains_key(&record.function) {
            return Ok(false);
        }
        if !s.journal.insert_guest(&record, &guest)? {
            return Ok(false);
        }
        tracing::info!(job = %record.id.short(), function = %record.function, origin = %guest.origin, "running a job for another node");
        let _ = s.events.send(JobEvent::Queued {
            id: record.id,
            function: record.function.clone(),
        });
        self.scheduler.enqueue(record.id, &record.function);
        self.admit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_wait_grows_with_the_queue_and_shrinks_with_slots() {
        assert_eq!(predicted_local_wait_ms(0, 1, 1000), 1000);
        assert_eq!(predicted_local_wait_ms(3, 1, 1000), 4000);
        assert_eq!(predicted_local_wait_ms(3, 2, 1000), 2000);
        assert_eq!(predicted_local_wait_ms(5, 1, 0), 0, "instant runs");
    }
}
