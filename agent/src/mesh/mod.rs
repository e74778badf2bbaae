//! The agent's membership in a mesh: joining with a token ([`membership`]), the link to the
//! coordinator ([`link`], driven by the sans-IO `spillway_proto::link` state machine), the
//! deployment it receives ([`deployment`]) and the requests it answers ([`requests`]).
//!
//! None of this is needed to run: an agent without a coordinator, or cut off from it, keeps
//! processing its folders with the functions it last had.

pub mod deployment;
pub mod handover;
pub mod link;
pub mod membership;
pub mod requests;

pub use membership::{JoinError, Membership, join};
