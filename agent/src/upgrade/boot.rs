//! Which binary the agent starts: the A/B record kept in `state_dir/upgrade/boot.json`, and the
//! pure decisions on it. The launcher reads it at every start; the binary on trial commits it
//! once it is linked, or marks itself failed when its deadline passes.

use serde::{Deserialize, Serialize};

/// A binary stored by an upgrade, named by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub sha256: String,
    pub version: String,
}

/// A new binary that has not reported Ready yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub slot: Slot,
    pub rollout: u64,
    pub ready_within_ms: u64,
    /// Times it was started. It gets one start: a second means it stopped before Ready.
    pub starts: u32,
}

/// What to tell the coordinator about the last order, at every link until the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub rollout: u64,
    pub sha256: String,
    /// `None`: Ready; otherwise why it rolled back.
    pub rolled_back: Option<String>,
}

/// `None` in `current` or `previous` is the binary the service starts (the installed one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boot {
    pub current: Option<Slot>,
    pub previous: Option<Slot>,
    pub trial: Option<Trial>,
    pub outcome: Option<Outcome>,
}

/// What a start should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// The installed binary: whoever started is it, or has its path.
    Installed,
    /// A stored binary that has reported Ready before.
    Current(Slot),
    /// The binary on trial, for its one start.
    Trial(Slot),
}

impl Boot {
    /// Decides what to start, and records a trial binary's start: a trial that was already
    /// started once and never committed is rolled back instead.
    pub fn choose(&mut self) -> Run {
        if let Some(trial) = &mut self.trial {
            if trial.starts == 0 {
                trial.starts = 1;
                return Run::Trial(trial.slot.clone());
            }
            self.roll_back("the new binary stopped before it reported Ready".into());
        }
        match &self.current {
            Some(slot) => Run::Current(slot.clone()),
            None => Run::Installed,
        }
    }

    /// Puts `slot` on trial for one start (a trial under way is replaced).
    pub fn begin_trial(&mut self, slot: Slot, rollout: u64, ready_within_ms: u64) {
        self.trial = Some(Trial {
            slot,
            rollout,
            ready_within_ms,
            starts: 0,
        });
        self.outcome = None;
    }

    /// Gives up the trial: the current binary runs again.
    pub fn roll_back(&mut self, reason: String) {
        if let Some(trial) = self.trial.take() {
            self.outcome = Some(Outcome {
                rollout: trial.rollout,
                sha256: trial.slot.sha256,
                rolled_back: Some(reason),
            });
        }
    }

    /// The trial binary reported Ready: it becomes current and the current one previous. The
    /// binary that was previous is returned, to be deleted, unless it is still in use.
    pub fn commit(&mut self) -> Option<Slot> {
        let trial = self.trial.take()?;
        self.outcome = Some(Outcome {
            rollout: trial.rollout,
            sha256: trial.slot.sha256.clone(),
            rolled_back: None,
        });
        let old_previous = std::mem::replace(&mut self.previous, self.current.take());
        self.current = Some(trial.slot);
        old_previous.filter(|old| !self.keeps(&old.sha256))
    }

    /// Whether a stored binary is still named by this record.
    pub fn keeps(&self, sha256: &str) -> bool {
        let named = |s: &Option<Slot>| s.as_ref().is_some_and(|s| s.sha256 == sha256);
        named(&self.current)
            || named(&self.previous)
            || self.trial.as_ref().is_some_and(|t| t.slot.sha256 == sha256)
    }

    /// Whether the binary with this digest is the one on trial.
    pub fn on_trial(&self, sha256: &str) -> Option<&Trial> {
        self.trial.as_ref().filter(|t| t.slot.sha256 == sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u8) -> Slot {
        Slot {
            sha256: format!("{n:064x}"),
            version: format!("1.{n}"),
        }
    }

    #[test]
    fn a_fresh_node_runs_the_installed_binary() {
        assert_eq!(Boot::default().choose(), Run::Installed);
    }

    #[test]
    fn a_trial_gets_one_start_and_commits_into_current() {
        let mut boot = Boot::default();
        boot.begin_trial(slot(2), 7, 60_000);
        assert_eq!(boot.choose(), Run::Trial(slot(2)));
        assert_eq!(boot.commit(), None);
        assert_eq!(boot.current, Some(slot(2)));
        assert_eq!(
            boot.previous, None,
            "the installed binary is the previous one"
        );
        assert_eq!(
            boot.outcome.as_ref().map(|o| o.rolled_back.clone()),
            Some(None)
        );
        assert_eq!(boot.choose(), Run::Current(slot(2)));
    }

    #[test]
    fn a_trial_started_twice_without_ready_rolls_back_to_what_ran_before() {
        let mut boot = Boot::default();
        boot.begin_trial(slot(2), 7, 60_000);
        boot.commit();
        boot.begin_trial(slot(3), 8, 60_000);
        assert_eq!(boot.choose(), Run::Trial(slot(3)));
        // It crashed (or was killed by its deadline) before it committed.
        assert_eq!(boot.choose(), Run::Current(slot(2)));
        let outcome = boot.outcome.clone().expect("outcome");
        assert_eq!((outcome.rollout, outcome.sha256), (8, slot(3).sha256));
        assert!(
            outcome
                .rolled_back
                .expect("rolled back")
                .contains("before it reported Ready")
        );
        assert_eq!(boot.trial, None);
        assert!(
            !boot.keeps(&slot(3).sha256),
            "the failed binary may be deleted"
        );
    }

    #[test]
    fn committing_keeps_two_binaries_and_frees_the_oldest() {
        let mut boot = Boot::default();
        for n in 2..=4 {
            boot.begin_trial(slot(n), u64::from(n), 60_000);
            boot.choose();
            let freed = boot.commit();
            assert_eq!(freed, (n == 4).then(|| slot(2)), "after {n}");
        }
        assert_eq!(
            (boot.current, boot.previous),
            (Some(slot(4)), Some(slot(3)))
        );
    }

    #[test]
    fn rolling_back_to_the_same_binary_again_frees_nothing_in_use() {
        let mut boot = Boot::default();
        boot.begin_trial(slot(2), 1, 1);
        boot.choose();
        boot.commit();
        // An order for the binary that is already previous (a downgrade).
        boot.begin_trial(slot(9), 2, 1);
        boot.choose();
        boot.commit();
        boot.begin_trial(slot(2), 3, 1);
        boot.choose();
        assert_eq!(boot.commit(), None, "slot 2 is current now, not free");
    }
}
