//! What the engine hands to the mesh link: offers of queued jobs the book decided this node
//! cannot run soon enough (see `crate::book` for the decisions, and
//! `spillway_placement::handover` for the protocol).

use spillway_proto::wire::OfferReason;

use crate::journal::JobRecord;

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
