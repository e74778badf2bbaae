//! The agent's job book, sans-IO: every per-job decision (a job enters, is admitted, started,
//! offered, rescheduled, answered, delivered, retried or ended) made from inputs and a clock.
//!
//! Each input returns a [`Plan`]: the journal [`Change`]s to commit, in one transaction, and
//! then the [`Act`]s to carry out. The engine is the book's driver and the journal's only
//! writer; it reads the journal for facts (is this job known?) and never decides itself. So a
//! crash anywhere leaves either the whole of a decision journaled or none of it, and what was
//! journaled is what [`JobBook::recover`] starts from.
//!
//! The hand-over rules are the coordinator's (see `spillway_placement::handover`): a job is
//! `Offered` before its offer leaves and leaves `Offered` only on the coordinator's answer.

use std::collections::HashMap;

use spillway_placement::estimate::RunTimes;
use spillway_placement::handover::{OriginPhase, OriginStep, ToAgent, origin_step};
use spillway_placement::policy::spillway::predicted_wait;
use spillway_placement::{Target, TargetKind};
use spillway_proto::JobId;
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::OfferReason;

use crate::journal::{Change, Guest, JobRecord, JobState};
use crate::scheduler::Scheduler;

#[cfg(test)]
mod tests;

/// A queued job waits this long before it is offered when its function sets no
/// `rescheduler_threshold` (OSCAR's default; the coordinator assumes the same).
pub const DEFAULT_RESCHEDULER_THRESHOLD_MS: u64 =
    spillway_placement::policy::DEFAULT_RESCHEDULER_THRESHOLD_MS;

/// After the coordinator declines a function's job, its jobs are not offered again by the
/// rescheduler for about one run time, within these bounds.
const MIN_DECLINE_COOLDOWN_MS: u64 = 200;
const MAX_DECLINE_COOLDOWN_MS: u64 = 5_000;

/// What one input decided: journal first, then act.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// To commit in one transaction before any act.
    pub changes: Vec<Change>,
    pub acts: Vec<Act>,
    /// For an answer from the coordinator: whether to acknowledge it once journaled.
    pub ack: bool,
    /// For arrivals: the jobs that were new here.
    pub new: Vec<JobId>,
}

/// What the driver does once the plan's changes are journaled.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Tell observers a job is queued here.
    Queued { id: JobId, function: String },
    /// Run the attempt journaled `Running`.
    Start { id: JobId, function: String },
    /// Send the job, journaled `Offered`, to the coordinator.
    Offer {
        id: JobId,
        reason: OfferReason,
        /// This node's predicted wait before the job would start here, and its run time.
        local_wait_ms: u64,
        run_ms: u64,
    },
    /// Deliver the outputs of the job journaled `Ran`.
    Deliver { id: JobId },
    /// The job ended as journaled: tell observers, tidy its folders.
    Ended { id: JobId },
}

/// What the journal already says about an arriving job (the driver reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    New,
    Unfinished,
    Failed,
    Succeeded,
}

impl Known {
    pub fn of(state: Option<&JobState>) -> Self {
        match state {
            None => Known::New,
            Some(JobState::Failed { .. }) => Known::Failed,
            Some(JobState::Succeeded { .. }) => Known::Succeeded,
            Some(_) => Known::Unfinished,
        }
    }
}

/// A job arriving, whatever made it: a file, an MQTT message, or the coordinator placing it
/// here (a `/run` or `/job` call, a bucket event, another node's surplus).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// `Queued`, or `Failed` when it was refused on arrival (bad name, payload too large).
    pub record: JobRecord,
    pub known: Known,
    /// Set when the coordinator placed it here on behalf of another node.
    pub guest: Option<Guest>,
    /// The coordinator returned it once (the journal remembers): a failed job asked for again
    /// is still never offered.
    pub returned: bool,
}

/// How a run ended, as its task reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// Outputs wait in `staging/output` for delivery.
    Ran {
        staging: std::path::PathBuf,
        outputs: Vec<ObjectKey>,
    },
    /// A guest's outputs wait in its folder (`dir/output`) for the coordinator.
    GuestRan {
        dir: std::path::PathBuf,
        outputs: Vec<ObjectKey>,
    },
    Failed {
        reason: String,
    },
}

/// The coordinator's answer about a job this node offered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Accepted,
    Declined(String),
    Returned(String),
    /// A peer ran it; its outputs were fetched into `staging` (`staging/output/<key>`).
    Delivered {
        staging: std::path::PathBuf,
        outputs: Vec<ObjectKey>,
    },
    /// A peer ran it and it failed.
    Failed(String),
}

/// A job found unfinished in the journal at start-up.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: JobRecord,
    /// Placed here for another node and its result not yet taken.
    pub guest: bool,
    /// Returned by the coordinator once: never offered again.
    pub returned: bool,
}

/// When something happens, on two clocks: the wall clock for what is recorded (the journal's
/// times, which people read) and a monotonic one for what is measured (waits, run times,
/// cooldowns). A clock step, common on boards without a real-time clock when NTP first syncs,
/// moves the first and never the second, so it cannot offer every queued job at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: u64,
    pub mono_ms: u64,
}

/// Both clocks at `ms`: simulations and tests where they agree.
impl From<u64> for Now {
    fn from(ms: u64) -> Self {
        Self {
            wall_ms: ms,
            mono_ms: ms,
        }
    }
}

/// Where an unfinished job is, as the book holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    /// Since when, on the monotonic clock.
    Running {
        since_ms: u64,
    },
    Offered,
    Handed,
    Delivering,
}

#[derive(Debug, Clone)]
struct Held {
    function: String,
    phase: Phase,
    attempt: u32,
    /// Since when it waits here, on the monotonic clock: the rescheduler's measure. Restarts
    /// count from the recovery (the clock does not survive them).
    waiting_since_ms: u64,
    guest: bool,
    returned: bool,
}

/// Every unfinished job on this node and the decisions about them.
#[derive(Debug)]
pub struct JobBook {
    node: String,
    max_attempts: u32,
    admission: Scheduler,
    jobs: HashMap<JobId, Held>,
    /// The placement core's run-time estimates, under this node's name (the coordinator keeps
    /// the same).
    run_times: RunTimes,
    /// Per function deployed by the coordinator: how long a job may wait before it is offered.
    thresholds: HashMap<String, u64>,
    /// When the coordinator last declined a job of each function (monotonic).
    declined: HashMap<String, u64>,
    /// Offers not answered yet, with their function.
    in_doubt: HashMap<JobId, String>,
    linked: bool,
    /// No run starts (see [`JobBook::set_paused`]).
    paused: bool,
}

/// The load this node reports, from the book alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookLoad {
    pub queued: u32,
    pub running: u32,
    pub oldest_queued_ms: u64,
    /// Per function: name, jobs that could start now, queued, running, mean run time here.
    pub functions: Vec<(String, u32, u32, u32, u32)>,
}

impl JobBook {
    pub fn new(node: &str, admission: Scheduler, max_attempts: u32) -> Self {
        Self {
            node: node.to_owned(),
            max_attempts,
            admission,
            jobs: HashMap::new(),
            run_times: RunTimes::default(),
            thresholds: HashMap::new(),
            declined: HashMap::new(),
            in_doubt: HashMap::new(),
            linked: false,
            paused: false,
        }
    }

    /// The admission of this node, for deploying functions into it.
    pub fn admission(&mut self) -> &mut Scheduler {
        &mut self.admission
    }

    pub fn slots(&self, function: &str) -> u32 {
        self.admission.slots(function)
    }

    pub fn capacity(&self) -> crate::scheduler::Demand {
        self.admission.capacity()
    }

    /// The functions whose queued jobs may be offered, each with its threshold (only those the
    /// coordinator deployed: every peer runs the same).
    pub fn set_thresholds(&mut self, thresholds: impl IntoIterator<Item = (String, u64)>) {
        self.thresholds = thresholds.into_iter().collect();
    }

    /// Whether offers can reach the coordinator now.
    pub fn set_linked(&mut self, linked: bool) {
        self.linked = linked;
    }

    /// Whether runs may start (the disk is nearly full: what runs finishes, nothing new starts,
    /// and the load shows no free slot, so nothing is placed here). Unpausing does not start
    /// anything by itself: the next [`JobBook::admit`] does.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn running(&self) -> usize {
        self.admission.running()
    }

    /// Puts the journal's unfinished jobs back in motion: queued jobs queue again, interrupted
    /// runs run again (or fail once they were interrupted `max_attempts` times), finished runs
    /// deliver again, and offers wait for the coordinator's answer.
    pub fn recover(&mut self, now: impl Into<Now>, found: Vec<Found>) -> Plan {
        let now = now.into();
        let mut plan = Plan::default();
        for Found {
            record,
            guest,
            returned,
        } in found
        {
            let mut held = Held {
                function: record.function.clone(),
                phase: Phase::Queued,
                attempt: record.attempt,
                waiting_since_ms: now.mono_ms,
                guest,
                returned,
            };
            match record.state {
                JobState::Queued => self.admission.enqueue(record.id, &record.function),
                JobState::Running if record.attempt >= self.max_attempts => {
                    let reason = format!(
                        "interrupted {} times by agent restarts during its run; not retried again",
                        record.attempt
                    );
                    end(
                        &mut plan,
                        record.id,
                        JobState::Failed { reason },
                        now.wall_ms,
                    );
                    continue;
                }
                JobState::Running => {
                    plan.changes.push(Change::Move {
                        id: record.id,
                        to: JobState::Queued,
                        at_ms: now.wall_ms,
                    });
                    self.admission.enqueue(record.id, &record.function);
                }
                JobState::Ran { outputs, .. } if guest => {
                    // A guest's outputs wait in its own folder for the link to send them.
                    let outputs = outputs.iter().map(|k| k.to_string()).collect();
                    end(
                        &mut plan,
                        record.id,
                        JobState::Succeeded { outputs },
                        now.wall_ms,
                    );
                    continue;
                }
                JobState::Ran { .. } => {
                    held.phase = Phase::Delivering;
                    plan.acts.push(Act::Deliver { id: record.id });
                }
                JobState::Offered => held.phase = Phase::Offered,
                JobState::Handed => held.phase = Phase::Handed,
                JobState::Succeeded { .. } | JobState::Failed { .. } => continue,
            }
            self.jobs.insert(record.id, held);
        }
        self.admit(now, &mut plan);
        plan
    }

    /// Jobs arrive, all journaled in one commit (with the driver's own bookkeeping, such as the
    /// file or message they came from, added to the same plan). A job admitted at once enters
    /// straight as `Running`: one commit between the event and the function starting.
    ///
    /// `live`: the input was just delivered (not found by a rescan), so a job that failed
    /// before is a request to run it again.
    pub fn arrive(&mut self, now: impl Into<Now>, arrivals: Vec<Arrival>, live: bool) -> Plan {
        let now = now.into();
        let mut plan = Plan::default();
        let mut entered = Vec::new();
        for Arrival {
            mut record,
            known,
            guest,
            returned,
        } in arrivals
        {
            let refused = record.state.is_final();
            match known {
                Known::Failed if live && !refused && guest.is_none() => {
                    plan.changes.push(Change::Retry {
                        id: record.id,
                        at_ms: now.wall_ms,
                    });
                    record.attempt = 0;
                    record.queued_at_ms = now.wall_ms;
                }
                Known::New => {}
                Known::Succeeded | Known::Failed if guest.is_some() => {}
                _ => continue,
            }
            plan.new.push(record.id);
            if refused {
                plan.changes.push(Change::Put(record.clone()));
                plan.acts.push(Act::Ended { id: record.id });
                continue;
            }
            self.jobs.insert(
                record.id,
                Held {
                    function: record.function.clone(),
                    phase: Phase::Queued,
                    attempt: record.attempt,
                    waiting_since_ms: now.mono_ms,
                    guest: guest.is_some(),
                    returned: returned && guest.is_none(),
                },
            );
            self.admission.enqueue(record.id, &record.function);
            plan.acts.push(Act::Queued {
                id: record.id,
                function: record.function.clone(),
            });
            // A retry keeps its record (the journal re-queues it); everything else is put anew,
            // a guest placed here again included.
            let retry = known == Known::Failed && guest.is_none();
            if !retry {
                plan.changes.push(Change::Put(record.clone()));
            }
            if let Some(guest) = guest {
                plan.changes.push(Change::Guest(record.id, guest));
            }
            entered.push((record.id, record.function));
        }
        self.admit(now, &mut plan);
        for (id, function) in entered {
            self.offer_on_arrival(now, id, &function, &mut plan);
        }
        plan
    }

    /// Starts every job that fits, journaling `Running` before each one starts.
    pub fn admit(&mut self, now: impl Into<Now>, plan: &mut Plan) {
        if self.paused {
            return;
        }
        let now = now.into();
        for (id, function) in self.admission.admit() {
            let Some(held) = self.jobs.get_mut(&id) else {
                // Queued without being held cannot happen; free what admission took.
                self.admission.finish(id);
                continue;
            };
            held.phase = Phase::Running {
                since_ms: now.mono_ms,
            };
            held.attempt += 1;
            plan.changes.push(Change::Move {
                id,
                to: JobState::Running,
                at_ms: now.wall_ms,
            });
            plan.acts.push(Act::Start { id, function });
        }
    }

    /// A run ended; its slot is free, and its run time teaches the estimate.
    pub fn run_ended(&mut self, now: impl Into<Now>, id: JobId, how: RunEnd) -> Plan {
        let now = now.into();
        let mut plan = Plan::default();
        let Some(held) = self.jobs.get_mut(&id) else {
            return plan;
        };
        let Phase::Running { since_ms } = held.phase else {
            return plan;
        };
        self.admission.finish(id);
        self.run_times.observe(
            &held.function,
            &self.node,
            now.mono_ms.saturating_sub(since_ms),
        );
        match how {
            RunEnd::Ran { staging, outputs } => {
                held.phase = Phase::Delivering;
                deliver(
                    &mut plan,
                    id,
                    JobState::Ran { staging, outputs },
                    now.wall_ms,
                );
            }
            RunEnd::GuestRan { dir, outputs } => {
                let names = outputs.iter().map(|k| k.to_string()).collect();
                plan.changes.push(Change::Move {
                    id,
                    to: JobState::Ran {
                        staging: dir,
                        outputs,
                    },
                    at_ms: now.wall_ms,
                });
                self.jobs.remove(&id);
                end(
                    &mut plan,
                    id,
                    JobState::Succeeded { outputs: names },
                    now.wall_ms,
                );
            }
            RunEnd::Failed { reason } => {
                self.jobs.remove(&id);
                end(&mut plan, id, JobState::Failed { reason }, now.wall_ms);
            }
        }
        self.admit(now, &mut plan);
        plan
    }

    /// A delivery ended (`Succeeded` or `Failed`).
    pub fn delivered(&mut self, now: impl Into<Now>, id: JobId, state: JobState) -> Plan {
        let now = now.into();
        let mut plan = Plan::default();
        if self.jobs.get(&id).map(|h| h.phase) != Some(Phase::Delivering) || !state.is_final() {
            return plan;
        }
        self.jobs.remove(&id);
        end(&mut plan, id, state, now.wall_ms);
        plan
    }

    /// The rescheduler: queued (never started) jobs that waited longer than their function's
    /// threshold are offered, unless the coordinator just declined one of that function.
    pub fn tick(&mut self, now: impl Into<Now>) -> Plan {
        let now = now.into();
        let mut plan = Plan::default();
        if !self.linked || self.admission.queued() == 0 {
            return plan;
        }
        let mut functions: Vec<(String, u64)> = self
            .thresholds
            .iter()
            .map(|(f, t)| (f.clone(), *t))
            .collect();
        functions.sort();
        for (function, threshold) in functions {
            let cooldown = self
                .run_ms(&function)
                .clamp(MIN_DECLINE_COOLDOWN_MS, MAX_DECLINE_COOLDOWN_MS);
            if self
                .declined
                .get(&function)
                .is_some_and(|at| now.mono_ms.saturating_sub(*at) < cooldown)
            {
                continue;
            }
            let waiting: Vec<JobId> = self
                .admission
                .queued_of(&function)
                .map(|(_, id)| id)
                .collect();
            for id in waiting {
                let Some(held) = self.jobs.get(&id) else {
                    continue;
                };
                if now.mono_ms.saturating_sub(held.waiting_since_ms) < threshold {
                    // Oldest first: the rest waited less.
                    break;
                }
                self.offer(now, id, OfferReason::Rescheduler, &mut plan);
            }
        }
        plan
    }

    /// The coordinator's answer about an offered job.
    pub fn answer(&mut self, now: impl Into<Now>, id: JobId, answer: Answer) -> Plan {
        let now = now.into();
        let mut plan = Plan::default();
        self.in_doubt.remove(&id);
        let phase = match self.jobs.get(&id).map(|h| h.phase) {
            Some(Phase::Queued | Phase::Running { .. }) => OriginPhase::Local,
            Some(Phase::Offered) => OriginPhase::Offered,
            Some(Phase::Handed) => OriginPhase::Handed,
            Some(Phase::Delivering) | None => OriginPhase::Done,
        };
        let msg: ToAgent<JobId, ()> = match &answer {
            Answer::Accepted => ToAgent::Accepted(id),
            Answer::Declined(r) => ToAgent::Declined(id, r.clone()),
            Answer::Returned(r) => ToAgent::Return(id, r.clone()),
            Answer::Delivered { .. } | Answer::Failed(_) => ToAgent::Deliver(id, ()),
        };
        match origin_step(phase, &msg) {
            OriginStep::Ignore => {}
            OriginStep::Ack => plan.ack = true,
            OriginStep::Become(_) => {
                let Some(held) = self.jobs.get_mut(&id) else {
                    return plan;
                };
                let function = held.function.clone();
                match answer {
                    Answer::Accepted => {
                        held.phase = Phase::Handed;
                        plan.changes.push(Change::Move {
                            id,
                            to: JobState::Handed,
                            at_ms: now.wall_ms,
                        });
                    }
                    Answer::Declined(_) => {
                        held.phase = Phase::Queued;
                        plan.changes.push(Change::Move {
                            id,
                            to: JobState::Queued,
                            at_ms: now.wall_ms,
                        });
                        self.declined.insert(function.clone(), now.mono_ms);
                        self.admission.enqueue_front(id, &function);
                        self.admit(now, &mut plan);
                    }
                    Answer::Returned(reason) => {
                        held.phase = Phase::Queued;
                        held.returned = true;
                        plan.changes.push(Change::Returned { id, reason });
                        self.admission.enqueue_front(id, &function);
                        self.admit(now, &mut plan);
                        plan.ack = true;
                    }
                    Answer::Delivered { staging, outputs } => {
                        held.phase = Phase::Delivering;
                        deliver(
                            &mut plan,
                            id,
                            JobState::Ran { staging, outputs },
                            now.wall_ms,
                        );
                        plan.ack = true;
                    }
                    Answer::Failed(reason) => {
                        self.jobs.remove(&id);
                        end(&mut plan, id, JobState::Failed { reason }, now.wall_ms);
                        plan.ack = true;
                    }
                }
            }
        }
        plan
    }

    /// The coordinator has a guest job's result.
    pub fn guest_acknowledged(&mut self, id: JobId) -> Plan {
        Plan {
            changes: vec![Change::GuestAcked(id)],
            ..Plan::default()
        }
    }

    /// The load this node reports.
    pub fn load(&self, now: impl Into<Now>) -> BookLoad {
        let now = now.into();
        let oldest = self
            .admission
            .oldest_queued()
            .and_then(|id| self.jobs.get(&id))
            .map_or(0, |h| now.mono_ms.saturating_sub(h.waiting_since_ms));
        BookLoad {
            queued: self.admission.queued() as u32,
            running: self.admission.running() as u32,
            oldest_queued_ms: oldest,
            functions: self
                .admission
                .function_loads()
                .into_iter()
                .map(|(name, free, queued, running)| {
                    let free = if self.paused { 0 } else { free };
                    let mean = self
                        .run_times
                        .measured(&name, &self.node)
                        .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX));
                    (name, free, queued, running, mean)
                })
                .collect(),
        }
    }

    /// The run time expected here for `function`: learned from its runs, else the placement
    /// core's default (the coordinator assumes the same for this node).
    fn run_ms(&self, function: &str) -> u64 {
        self.run_times.expect(function, &self.node)
    }

    /// Admission's second half: a job of a function that may spill and did not start at once
    /// is offered, as OSCAR's Resource Manager sends a job on when its cluster is full; the
    /// coordinator keeps it here unless a target is predicted to finish it sooner (the
    /// simulator's `SpillwayPolicy::on_arrival` decides the same). A new arrival is a new
    /// prediction, so the cool-down after a decline does not hold it back.
    fn offer_on_arrival(&mut self, now: Now, id: JobId, function: &str, plan: &mut Plan) {
        if !self.thresholds.contains_key(function) || !self.linked {
            return;
        }
        let Some(ahead) = self
            .admission
            .queued_of(function)
            .find(|(_, q)| *q == id)
            .map(|(ahead, _)| ahead as u32)
        else {
            return;
        };
        let wait = predicted_local_wait_ms(ahead, self.slots(function), self.run_ms(function));
        if wait > 0 {
            self.offer(now, id, OfferReason::Admission, plan);
        }
    }

    /// Journals `Offered`, takes the job out of the queue and has the driver send the offer.
    /// If the link is gone by then, the job stays `Offered` and is offered again when it comes
    /// back: only the coordinator can say whether it already took it.
    fn offer(&mut self, now: Now, id: JobId, reason: OfferReason, plan: &mut Plan) {
        let Some(held) = self.jobs.get(&id) else {
            return;
        };
        // A job placed here for another node is the coordinator's already, and a returned
        // job is never offered again: they stay here.
        if held.guest || held.returned || held.phase != Phase::Queued {
            return;
        }
        let function = held.function.clone();
        // Offers still unanswered may come back to the front of the queue: count them ahead.
        let in_doubt = self.in_doubt.values().filter(|f| **f == function).count();
        let ahead = self
            .admission
            .queued_of(&function)
            .find(|(_, q)| *q == id)
            .map_or(0, |(ahead, _)| (ahead + in_doubt) as u32);
        let run_ms = self.run_ms(&function);
        let local_wait_ms = predicted_local_wait_ms(ahead, self.slots(&function), run_ms);
        if !self.admission.withdraw(id) {
            return;
        }
        if let Some(held) = self.jobs.get_mut(&id) {
            held.phase = Phase::Offered;
        }
        self.in_doubt.insert(id, function);
        plan.changes.push(Change::Move {
            id,
            to: JobState::Offered,
            at_ms: now.wall_ms,
        });
        plan.acts.push(Act::Offer {
            id,
            reason,
            local_wait_ms,
            run_ms,
        });
    }
}

/// Journals that a job's outputs wait (`ran`) and has the driver deliver them.
fn deliver(plan: &mut Plan, id: JobId, ran: JobState, now: u64) {
    move_then(plan, id, ran, now, Act::Deliver { id });
}

/// Journals a job's final state and has the driver tell observers.
fn end(plan: &mut Plan, id: JobId, state: JobState, now: u64) {
    move_then(plan, id, state, now, Act::Ended { id });
}

fn move_then(plan: &mut Plan, id: JobId, to: JobState, now: u64, then: Act) {
    plan.changes.push(Change::Move { id, to, at_ms: now });
    plan.acts.push(then);
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
