//! The agent's membership in a mesh: joining at a flashed card's first start ([`first_join`];
//! the join itself is `spillway_link::membership`), the session with the coordinator
//! ([`session`], driven by the sans-IO `spillway_proto::uplink` state machine), the files that
//! move with hand-overs ([`transfers`]: offered inputs, fetched outputs, placed jobs, guest
//! results), the deployment it receives ([`deployment`]) and the requests it answers
//! ([`requests`]), and the upgrade orders it carries out ([`upgrades`]).
//!
//! None of this is needed to run: an agent without a coordinator, or cut off from it, keeps
//! processing its folders with the functions it last had.

pub mod deployment;
pub mod first_join;
pub mod requests;
pub mod session;
pub mod transfers;
pub mod trust;
pub mod upgrades;

pub use first_join::join_at_start;
pub use spillway_link::membership::{JoinError, Membership, join};
