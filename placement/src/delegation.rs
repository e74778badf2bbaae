//! One job's attempt on a replica outside the mesh (an HTTP endpoint, an OSCAR cluster, a
//! Kubernetes cluster, AWS Lambda), sans-IO: what the coordinator does after each answer.
//!
//! The rule that keeps a job from running twice: a replica is left for the next one only when
//! it *certainly* does not run the job — it refused it (an HTTP error status), the request never
//! left (connection refused), or a reconciliation by job id showed it was never started there.
//! A request that was sent and not answered (a timeout, a connection reset after sending) is
//! ambiguous: the job may be running there, so the replica is asked again about that job id
//! (reconciled) before anything else happens, and when it cannot tell after every try the job
//! fails with that reason instead of being sent elsewhere.

/// What a replica answered to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// It took the job (or had it already: submissions are idempotent on the job id). `done`
    /// when the answer is the result (a synchronous endpoint), not just an acceptance.
    Accepted { done: bool },
    /// It answered that it will not run it (an HTTP error status, a quota, bad credentials).
    Refused(String),
    /// The request never reached it (connection refused, DNS, TLS handshake).
    NotSent(String),
    /// The request went out and no answer came (timeout, reset after sending).
    NoAnswer(String),
}

/// What a reconciliation by job id found on the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// It has the job (running or finished): it stays there.
    Running,
    /// It finished the job, with this result.
    Finished { succeeded: bool, detail: String },
    /// It certainly never started the job and never will (the job name is unknown to it).
    Absent,
    /// It started the job and stopped it unfinished because its own time limit came first (a
    /// Lambda `timeout`), delivering nothing: the next target may run it.
    Stopped(String),
    /// It could not tell (no answer again).
    Unknown(String),
}

/// What the coordinator does next with the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The replica has it: wait for its result (watch, callback, or poll by reconciling).
    Wait,
    /// The replica finished it.
    Finished { succeeded: bool, detail: String },
    /// The replica certainly does not run it: try the next target (or return it to its origin).
    Elsewhere(String),
    /// Ask the replica about the job id again after this many milliseconds.
    Reconcile { after_ms: u64 },
    /// The job may or may not have run there and the replica cannot say: fail it rather than
    /// risk running it twice.
    GiveUp(String),
}

/// How many times an ambiguous attempt is reconciled, and how long to wait before each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilePolicy {
    pub max_tries: u32,
    pub first_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for ReconcilePolicy {
    fn default() -> Self {
        Self {
            max_tries: 5,
            first_delay_ms: 200,
            max_delay_ms: 5_000,
        }
    }
}

impl ReconcilePolicy {
    fn delay(&self, tries: u32) -> u64 {
        self.first_delay_ms
            .saturating_mul(1 << tries.min(16))
            .min(self.max_delay_ms)
    }
}

/// The state of one attempt on one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub replica: String,
    /// Reconciliations so far.
    pub reconciles: u32,
    /// Whether a request for this job may have reached the replica: once it has, leaving the
    /// replica needs proof ([`Found::Absent`]) or an explicit refusal.
    pub maybe_sent: bool,
    policy: ReconcilePolicy,
}

impl Attempt {
    pub fn new(replica: impl Into<String>, policy: ReconcilePolicy) -> Self {
        Self {
            replica: replica.into(),
            reconciles: 0,
            maybe_sent: false,
            policy,
        }
    }

    /// The replica answered the submission (or did not).
    pub fn submitted(&mut self, answer: Submitted) -> Next {
        match answer {
            Submitted::Accepted { done: true } => Next::Finished {
                succeeded: true,
                detail: format!("`{}` answered with success", self.replica),
            },
            Submitted::Accepted { done: false } => {
                self.maybe_sent = true;
                Next::Wait
            }
            Submitted::Refused(why) | Submitted::NotSent(why) if !self.maybe_sent => {
                Next::Elsewhere(format!("`{}` did not take it: {why}", self.replica))
            }
            // A refusal after an ambiguous request: the first one may still be running there.
            Submitted::Refused(why) | Submitted::NotSent(why) | Submitted::NoAnswer(why) => {
                self.maybe_sent = true;
                self.reconcile_or_give_up(why)
            }
        }
    }

    /// A reconciliation by job id answered.
    pub fn reconciled(&mut self, found: Found) -> Next {
        match found {
            Found::Running => {
                self.maybe_sent = true;
                Next::Wait
            }
            Found::Finished { succeeded, detail } => Next::Finished { succeeded, detail },
            Found::Absent => Next::Elsewhere(format!(
                "`{}` did not answer and then showed it never started the job",
                self.replica
            )),
            Found::Stopped(why) => Next::Elsewhere(format!(
                "`{}` stopped the job unfinished: {why}",
                self.replica
            )),
            Found::Unknown(why) => self.reconcile_or_give_up(why),
        }
    }

    fn reconcile_or_give_up(&mut self, why: String) -> Next {
        if self.reconciles >= self.policy.max_tries {
            return Next::GiveUp(format!(
                "`{}` may have run the job but could not say after {} tries ({why}); it was not sent elsewhere so that it cannot run twice",
                self.replica, self.reconciles
            ));
        }
        let after_ms = self.policy.delay(self.reconciles);
        self.reconciles += 1;
        Next::Reconcile { after_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        Attempt::new("endpoint:a", ReconcilePolicy::default())
    }

    #[test]
    fn a_refusal_moves_on_at_once() {
        let mut a = attempt();
        assert!(matches!(
            a.submitted(Submitted::Refused("HTTP 503".into())),
            Next::Elsewhere(_)
        ));
        let mut a = attempt();
        assert!(matches!(
            a.submitted(Submitted::NotSent("connection refused".into())),
            Next::Elsewhere(_)
        ));
    }

    #[test]
    fn no_answer_is_reconciled_and_only_absence_moves_on() {
        let mut a = attempt();
        assert_eq!(
            a.submitted(Submitted::NoAnswer("timeout".into())),
            Next::Reconcile { after_ms: 200 }
        );
        assert_eq!(
            a.reconciled(Found::Unknown("timeout".into())),
            Next::Reconcile { after_ms: 400 }
        );
        assert!(matches!(a.reconciled(Found::Absent), Next::Elsewhere(_)));
        assert!(matches!(
            a.reconciled(Found::Stopped("Lambda timeout".into())),
            Next::Elsewhere(_)
        ));
    }

    #[test]
    fn an_ambiguous_attempt_gives_up_instead_of_moving_on() {
        let mut a = attempt();
        let mut next = a.submitted(Submitted::NoAnswer("timeout".into()));
        while let Next::Reconcile { .. } = next {
            next = a.reconciled(Found::Unknown("timeout".into()));
        }
        assert!(matches!(next, Next::GiveUp(_)), "{next:?}");
        assert_eq!(a.reconciles, ReconcilePolicy::default().max_tries);
    }

    #[test]
    fn a_refusal_after_no_answer_is_still_reconciled() {
        let mut a = attempt();
        a.submitted(Submitted::NoAnswer("reset".into()));
        assert!(matches!(
            a.submitted(Submitted::Refused("HTTP 500".into())),
            Next::Reconcile { .. }
        ));
    }
}
