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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use spillway_proto::fdl;

    fn functions(yaml: &str) -> Vec<FunctionRecord> {
        let (doc, _) = fdl::parse_str("t.yaml", yaml, Path::new(""))
            .into_result()
            .unwrap();
        doc.functions
            .into_iter()
            .map(|def| FunctionRecord {
                def,
                files: vec![],
                source: "t.yaml".into(),
                applied_at_ms: 0,
            })
            .collect()
    }

    fn node(cluster: Option<&str>, labels: &[(&str, &str)]) -> NodeRecord {
        let mut n = NodeRecord::joined("n", String::new(), 0, 0);
        n.cluster_id = cluster.map(str::to_owned);
        n.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>();
        n
    }

    const FDL: &str = "
functions:
  oscar:
  - fog:
      name: on-fog
      command: [true]
  - cloud:
      name: on-cloud
      command: [true]
  - name: everywhere
    command: [true]
  - name: cameras-only
    command: [true]
    node_selector:
      camera: 'yes'
  aws:
  - lambda:
      name: in-lambda
      container:
        image: x/y
";

    fn deployed(node: &NodeRecord) -> Vec<String> {
        for_node(node, &functions(FDL))
            .functions
            .into_iter()
            .map(|b| b.name)
            .collect()
    }

    #[test]
    fn cluster_ids_and_node_selectors_pick_the_nodes() {
        assert_eq!(deployed(&node(Some("fog"), &[])), ["everywhere", "on-fog"]);
        assert_eq!(
            deployed(&node(Some("cloud"), &[("camera", "yes")])),
            ["cameras-only", "everywhere", "on-cloud"]
        );
        // A node that names no cluster runs every cluster's functions, as a standalone agent does.
        assert_eq!(
            deployed(&node(None, &[("camera", "no")])),
            ["everywhere", "on-cloud", "on-fog"]
        );
    }

    #[test]
    fn equal_function_sets_make_equal_deployments() {
        let n = node(None, &[]);
        let mut fs = functions(FDL);
        let a = for_node(&n, &fs).digest();
        fs.reverse();
        assert_eq!(for_node(&n, &fs).digest(), a);
    }
}
