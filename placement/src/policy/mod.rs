//! Placement policies behind one trait, so the agent, the coordinator and the simulator can run
//! either on the same workload.

mod oscar;
pub mod spillway;

pub use oscar::OscarPolicy;
pub use spillway::SpillwayPolicy;

use crate::estimate::RunTimes;
use crate::model::{Decision, Job, Millis, Target};

/// A queued job waits this long before it is offered when its function sets no
/// `rescheduler_threshold` (OSCAR's default), on agents and in the coordinator alike.
pub const DEFAULT_RESCHEDULER_THRESHOLD_MS: Millis = 30_000;

/// What a policy knows about a function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    /// A job queues locally only while its predicted local wait is under this.
    pub max_local_wait_ms: Millis,
    /// A queued job that has waited this long is offered elsewhere (if it has not started).
    pub rescheduler_threshold_ms: Millis,
    /// Most a job may cost on an elastic target (USD); `None`: no bound.
    pub cost_bound_usd: Option<f64>,
    /// Most GB-seconds elastic targets may bill in any hour; `None`: no budget.
    pub elastic_budget_gb_s_per_hour: Option<f64>,
    /// Hand-overs a job may make before it must stay where it is.
    pub max_hops: u8,
}

/// A placement policy. `view` lists every target the deciding party knows, the job's current
/// node among them as [`crate::TargetKind::Origin`].
pub trait Policy {
    fn name(&self) -> &'static str;
    /// How old the view of other targets may be when decisions are made (how often it is
    /// refreshed).
    fn view_refresh_ms(&self) -> Millis;
    /// Whether the policy sees its own node's load exactly (an agent knows its queue), or
    /// through the same refreshed view as the others.
    fn knows_own_load(&self) -> bool;
    /// Whether the deciding party counts its own hand-overs into its view at once (Spillway's
    /// coordinator knows what it placed), or waits for the next refresh to see them (OSCAR's
    /// Resource Manager: a spike is scheduled before the resources are updated).
    fn counts_own_placements(&self) -> bool;
    /// How often [`Policy::on_tick`] runs.
    fn tick_ms(&self) -> Millis;
    /// Whether the origin's copy of a handed-over job is removed in the same step as the hand-over
    /// (Spillway), or only once the target has accepted it (OSCAR's Rescheduler: a job that
    /// starts meanwhile runs twice).
    fn atomic_handover(&self) -> bool;
    /// Whether a job placed on a target stays there (Spillway: the agent hosting it never offers
    /// it again; only the coordinator moves it, when the lease expires), or is the target's to
    /// place again like its own jobs (an OSCAR cluster treats a delegated job as a new one).
    fn guests_stay(&self) -> bool;
    /// A job arrived.
    fn on_arrival(
        &mut self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        now: Millis,
    ) -> Decision;
    /// Periodically: which of the queued (not started) jobs should move, oldest first.
    fn on_tick(
        &mut self,
        queued: &[Job],
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        now: Millis,
    ) -> Vec<(u64, Decision)>;
}
