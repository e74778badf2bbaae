//! Spillway's placement core: where a job should run. Sans-IO — no sockets, no clocks: every
//! call takes the view of the targets, the job and `now`, and returns a decision. The
//! coordinator, the agent and the simulator (`spillway-sim`) drive the same code.
//!
//! [`model`] names the parts (targets, jobs, decisions); [`estimate`] learns run times per
//! function and target; [`policy`] holds the [`policy::Policy`] trait with Spillway's policy
//! (lowest predicted completion, priority tiers, cost bound) and OSCAR's (Resource Manager and
//! Rescheduler on a stale view), the baseline we measure against; [`handover`] is the one-owner
//! hand-over protocol between an origin agent and the coordinator; [`delegation`] decides what an
//! answer from a replica outside the mesh (endpoint, OSCAR, Kubernetes, Lambda) means.

pub mod delegation;
pub mod estimate;
pub mod handover;
pub mod model;
pub mod policy;

pub use model::{Decision, Job, Mechanism, Millis, Target, TargetKind};
pub use policy::Policy;
