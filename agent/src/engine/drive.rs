//! Carrying out the job book's plans: the journal first, then the acts. Each plan's changes are
//! staged at once (later decisions read them); its acts, and the answers that promise it is on
//! disk (an MQTT `PUBACK`, a coordinator's acknowledgement), wait in [`After`] until one durable
//! commit covers every plan staged meanwhile ([`Agent::settle`]).
//! Also the engine's inputs that need facts from the journal before the book can decide: start
//! up, a job arriving, a job placed here.

use std::sync::atomic::Ordering;

use spillway_proto::{Event, JobId};
use tokio::sync::oneshot;

use super::run::{Targets, finish_delivery, run_job};
use super::{Agent, AgentError, JobEvent, Msg};
use crate::book::{Act, Arrival, Found, Known, Plan};
use crate::journal::{Change, Guest, JobRecord, JobState};
use crate::staging::Staging;
use crate::{joblog, runtime};

/// Who writes the log of a job a plan ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Logs {
    /// The run or delivery task that reported the end wrote it, with the job's streams.
    Reporter,
    /// The engine writes it, before the end is journaled: if the agent dies in between, the
    /// journal still says the job is unfinished, so it runs (or delivers) again and rewrites it.
    Driver,
}

/// What may happen only once the journal's next durable commit is done, in the order it was
/// decided.
pub(super) enum After {
    /// A plan's acts.
    Acts(Vec<Act>),
    /// An MQTT message's jobs are journaled: the broker may have its `PUBACK`.
    Acknowledge(oneshot::Sender<()>),
    /// A caller's answer (the coordinator's, about an offer or a placement).
    Reply(oneshot::Sender<bool>, bool),
}

impl Agent {
    /// Stages the plan's changes in one transaction; its acts wait for [`Agent::settle`].
    pub(super) fn carry_out(&mut self, plan: Plan, logs: Logs) -> Result<(), AgentError> {
        if logs == Logs::Driver {
            self.log_ends_first(&plan.changes);
        }
        self.shared.journal.stage(&plan.changes)?;
        if !plan.acts.is_empty() {
            self.after.push(After::Acts(plan.acts));
        }
        Ok(())
    }

    /// Makes everything staged durable (the MQTT inbox's files, then the journal: one sync
    /// each, for every plan staged since the last), then carries out what waited for it.
    pub(super) fn settle(&mut self) -> Result<(), AgentError> {
        let s = self.shared.clone();
        if std::mem::take(&mut self.inbox_unsynced) {
            let inbox = s.config.inbox_dir();
            sync_filesystem(&inbox).map_err(|source| AgentError::Sync {
                path: inbox,
                source,
            })?;
            s.filesystem_syncs.fetch_add(1, Ordering::Relaxed);
        }
        s.journal.flush()?;
        for after in std::mem::take(&mut self.after) {
            match after {
                After::Acts(acts) => self.act(acts)?,
                After::Acknowledge(done) => {
                    let _ = done.send(());
                }
                After::Reply(reply, answer) => {
                    let _ = reply.send(answer);
                }
            }
        }
        Ok(())
    }

    /// Carries out a plan's acts, its changes durable.
    fn act(&mut self, acts: Vec<Act>) -> Result<(), AgentError> {
        let s = self.shared.clone();
        for act in acts {
            match act {
                Act::Queued { id, function } => {
                    let _ = s.events.send(JobEvent::Queued { id, function });
                }
                // Shutting down: it stays as journaled and runs at the next start.
                Act::Start { .. } if self.stopping => {}
                Act::Start { id, function } => self.start_run(id, &function)?,
                Act::Offer {
                    id,
                    reason,
                    local_wait_ms,
                    run_ms,
                } => {
                    let Some(record) = s.journal.get(id)? else {
                        continue;
                    };
                    tracing::info!(job = %id.short(), function = %record.function, ?reason, "offering the job to the coordinator");
                    // If the link went away meanwhile the job stays `Offered` and is offered
                    // again when it comes back: only the coordinator can say whether it took it.
                    if let Some(out) = s.mesh_out() {
                        let _ = out.send(super::MeshOut::Offer {
                            record: Box::new(record),
                            reason,
                            local_wait_ms,
                            run_ms,
                        });
                    }
                }
                Act::Deliver { id } => {
                    if let Some(record) = s.journal.get(id)? {
                        self.spawn_delivery(record);
                    }
                }
                Act::Ended { id } => {
                    if let Some(record) = s.journal.get(id)? {
                        ended(&s, record);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the log of every job the changes end (header only: no streams are in hand).
    fn log_ends_first(&self, changes: &[Change]) {
        let s = &self.shared;
        for change in changes {
            let record = match change {
                Change::Put(record) if record.state.is_final() => Some(record.clone()),
                Change::Move { id, to, .. } if to.is_final() => {
                    s.journal.get(*id).ok().flatten().and_then(|mut record| {
                        change.apply(&mut record).ok()?;
                        Some(record)
                    })
                }
                _ => None,
            };
            if let Some(record) = record {
                joblog::write(&s.config.logs_dir(), &record, None, None);
            }
        }
    }

    /// Runs the attempt journaled `Running`, in a task of its own that reports how it ended.
    fn start_run(&mut self, id: JobId, function: &str) -> Result<(), AgentError> {
        let s = self.shared.clone();
        let Some(record) = s.journal.get(id)? else {
            return Ok(());
        };
        s.metrics.started(&record);
        let Some(deployed) = self.catalog.functions.get(function).cloned() else {
            let reason = format!("function `{function}` is no longer deployed here");
            let _ = s
                .msgs
                .send(Msg::RunEnded(id, crate::book::RunEnd::Failed { reason }));
            return Ok(());
        };
        self.tasks.spawn(async move {
            let how = run_job(&s, &deployed, record).await;
            let _ = s.msgs.send(Msg::RunEnded(id, how));
        });
        Ok(())
    }

    /// Delivers, in the background, the outputs of a job journaled `Ran` to its function's
    /// outputs.
    fn spawn_delivery(&mut self, record: JobRecord) {
        let JobState::Ran { staging, outputs } = record.state.clone() else {
            return;
        };
        let targets = self
            .catalog
            .functions
            .get(&record.function)
            .map(|f| Targets::of(&f.def))
            .unwrap_or_default();
        let s = self.shared.clone();
        self.tasks.spawn(async move {
            let id = record.id;
            let state = finish_delivery(&s, record, &staging, &outputs, &targets).await;
            let _ = s.msgs.send(Msg::Delivered(id, state));
        });
    }

    /// Puts every unfinished job of the journal back in motion.
    pub(super) fn recover(&mut self) -> Result<(), AgentError> {
        let s = self.shared.clone();
        if let Ok(entries) = std::fs::read_dir(s.config.run_dir()) {
            for entry in entries.flatten() {
                runtime::process::reap_orphan(&entry.path());
            }
        }
        let mut found = Vec::new();
        let mut keep_staging = Vec::new();
        for record in s.journal.unfinished()? {
            let guest = s.journal.hosting(record.id)?.is_some();
            if let JobState::Ran { staging, .. } = &record.state
                && !guest
            {
                keep_staging.push(staging.clone());
                tracing::info!(job = %record.id.short(), "delivering the outputs of a job that finished before the restart");
            }
            if record.state == JobState::Running {
                tracing::info!(job = %record.id.short(), function = %record.function, "re-running a job interrupted by a restart");
            }
            found.push(Found {
                returned: s.journal.was_returned(record.id)?,
                guest,
                record,
            });
        }
        // Folders of runs that will never be looked at again; gone before any run starts again.
        if let Ok(entries) = std::fs::read_dir(s.config.staging_dir()) {
            for entry in entries
                .flatten()
                .filter(|e| !keep_staging.contains(&e.path()))
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        // Carried out when the engine runs: nothing starts before [`Agent::run`].
        self.recovered = Some(self.book.recover(super::book_now(), found));
        joblog::prune(&s.config.logs_dir(), s.config.logs.keep_jobs);
        Ok(())
    }

    /// A job a file made: the book decides, and the file is remembered in the same commit.
    pub(super) fn accept(
        &mut self,
        record: JobRecord,
        learnt: Vec<Change>,
        live: bool,
    ) -> Result<(), AgentError> {
        let known = known(&self.shared.journal, record.id)?;
        if known == Known::Failed && live && !record.state.is_final() {
            tracing::info!(job = %record.id.short(), function = %record.function, "input delivered again: retrying the failed job");
        }
        let returned = known == Known::Failed && self.shared.journal.was_returned(record.id)?;
        let arrival = Arrival {
            record,
            known,
            guest: None,
            returned,
        };
        self.arrive(vec![arrival], live, learnt)
    }

    /// Jobs arrive, whatever made them; `also` joins the same commit.
    pub(super) fn arrive(
        &mut self,
        arrivals: Vec<Arrival>,
        live: bool,
        also: Vec<Change>,
    ) -> Result<(), AgentError> {
        self.book.set_linked(self.shared.mesh_out().is_some());
        let mut plan = self.book.arrive(super::book_now(), arrivals, live);
        plan.changes.extend(also);
        self.carry_out(plan, Logs::Driver)
    }

    /// A job placed here by the coordinator, its input already fetched into `guest.dir`.
    /// Returns whether it is new here. A job that ran here before and whose result the
    /// coordinator already took is a new placement (its origin runs it again).
    pub(super) fn host(&mut self, record: JobRecord, guest: Guest) -> Result<bool, AgentError> {
        let s = self.shared.clone();
        if !self.catalog.functions.contains_key(&record.function) {
            return Ok(false);
        }
        let known = if s.journal.hosting(record.id)?.is_some() {
            Known::Unfinished
        } else {
            known(&s.journal, record.id)?
        };
        let (id, function, origin) = (record.id, record.function.clone(), guest.origin.clone());
        self.book.set_linked(s.mesh_out().is_some());
        let plan = self.book.arrive(
            super::book_now(),
            vec![Arrival {
                record,
                known,
                guest: Some(guest),
                returned: false,
            }],
            true,
        );
        let new = plan.new.contains(&id);
        self.carry_out(plan, Logs::Driver)?;
        if new {
            tracing::info!(job = %id.short(), %function, %origin, "running a job for another node");
        }
        Ok(new)
    }

    /// The coordinator has a guest job's result: forget its files, remember its origin.
    pub(super) fn guest_acknowledged(&mut self, id: JobId) -> Result<(), AgentError> {
        if let Some(guest) = self.shared.journal.hosting(id)? {
            let _ = std::fs::remove_dir_all(&guest.dir);
        }
        let plan = self.book.guest_acknowledged(id);
        self.carry_out(plan, Logs::Driver)
    }
}

/// Flushes the filesystem holding `dir` (`syncfs`): one flush for every file written there
/// since, instead of one fsync per file.
fn sync_filesystem(dir: &std::path::Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&dir)?;
    Ok(())
}

/// A job's end is journaled: say so, and tidy what it left.
fn ended(s: &super::Shared, record: JobRecord) {
    s.metrics.ended(&record);
    match &record.state {
        JobState::Failed { reason } => {
            tracing::warn!(job = %record.id.short(), function = %record.function, "failed: {reason}")
        }
        JobState::Succeeded { outputs } => {
            tracing::info!(job = %record.id.short(), function = %record.function, outputs = outputs.len(), "succeeded")
        }
        _ => {}
    }
    // Its last run's folder, and the folder a peer's outputs were fetched into.
    let staging = s.config.staging_dir();
    let _ = std::fs::remove_dir_all(Staging::for_attempt(&staging, record.id, record.attempt).root);
    let _ = std::fs::remove_dir_all(crate::mesh::transfers::delivery_dir(&staging, record.id));
    if let Event::Mqtt(_) = &record.event {
        // The message was the input; the job is over (the log keeps what happened).
        let _ = std::fs::remove_dir_all(s.config.inbox_dir().join(record.id.to_string()));
    }
    let _ = s.events.send(JobEvent::Finished {
        id: record.id,
        function: record.function.clone(),
        state: record.state,
    });
}

/// What the journal knows of job `id`, for the book to decide an arrival.
pub(super) fn known(
    journal: &crate::journal::Journal,
    id: spillway_proto::JobId,
) -> Result<Known, crate::journal::JournalError> {
    Ok(Known::of(journal.get(id)?.map(|r| r.state).as_ref()))
}
