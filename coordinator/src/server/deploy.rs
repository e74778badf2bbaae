//! Which functions each node runs: OSCAR's `cluster_id` (matched against the agent's own
//! `cluster_id`, when it has one) and Spillway's `node_selector` pick the nodes; everything else
//! goes everywhere. SCAR Lambda functions never go to agents.

use spillway_proto::fdl::Platform;
use spillway_proto::wire::{Deployment, FunctionBundle};

use super::store::{FunctionRecord, NodeRecord};

/// Whether `node` should run `f`.
pub fn selects(f: &FunctionRecord, node: &NodeRecord) -> bool {
    let cluster_ok = match &f.def.platform {
        Platform::Aws => return false,
        Platform::Oscar { cluster_id: None } => true,
        // A node that names no cluster runs every cluster's functions, as a standalone agent does.
        Platform::Oscar {
            cluster_id: Some(c),
        } => node.cluster_id.as_deref().is_none_or(|mine| mine == c),
    };
    cluster_ok
        && f.def
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
}

/// The whole desired function set of `node`, in name order (so equal sets hash equally).
pub fn for_node(node: &NodeRecord, functions: &[FunctionRecord]) -> Deployment {
    let mut bundles: Vec<FunctionBundle> = functions
        .iter()
        .filter(|f| selects(f, node))
        .map(|f| FunctionBundle {
            name: f.def.name.clone(),
            def_json: serde_json::to_string(&f.def).unwrap_or_default(),
            files: f.files.clone(),
        })
        .collect();
    bundles.sort_by(|a, b| a.name.cmp(&b.name));
    Deployment { functions: bundles }
}
