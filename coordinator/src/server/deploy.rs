//! Which functions each node runs: OSCAR's `cluster_id` (matched against the agent's own
//! `cluster_id`, when it has one) and Spillway's `node_selector` pick the nodes; everything else
//! goes everywhere. SCAR Lambda functions never go to agents.

use spillway_proto::FunctionDef;
use spillway_proto::fdl::{Platform, ProviderRef, Secret, StorageProvider};
use spillway_proto::wire::{Deployment, FunctionBundle};

use super::store::{FunctionRecord, NodeRecord};
use crate::config::MinioProvider;

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

/// The whole desired function set of `node`, in name order (so equal sets hash equally), with
/// `minio.default` made the operator's store when there is one ([`with_default_store`]).
pub fn for_node(
    node: &NodeRecord,
    functions: &[FunctionRecord],
    default_store: Option<&MinioProvider>,
) -> Deployment {
    let mut bundles: Vec<FunctionBundle> = functions
        .iter()
        .filter(|f| selects(f, node))
        .map(|f| FunctionBundle {
            name: f.def.name.clone(),
            def_json: serde_json::to_string(&with_default_store(f.def.clone(), default_store))
                .unwrap_or_default(),
            files: f.files.clone(),
        })
        .collect();
    bundles.sort_by(|a, b| a.name.cmp(&b.name));
    Deployment { functions: bundles }
}

/// A function as the nodes and bucket events see it. Without `[oscar.minio_provider]`,
/// `minio.default` is a folder on each node. With it, `minio.default` is that store, as it is
/// for OSCAR's clients (`GET /system/config`): outputs on it go to its buckets, and its
/// notifications (to `/events` or `/job/NAME`) bring objects to the nodes. An FDL that defines
/// `minio.default` itself keeps its own.
pub fn with_default_store(mut def: FunctionDef, store: Option<&MinioProvider>) -> FunctionDef {
    let Some(store) = store else {
        return def;
    };
    let default = ProviderRef::parse("minio.default");
    let uses = def
        .input
        .iter()
        .chain(&def.output)
        .any(|r| r.provider == default);
    if !uses || def.providers.iter().any(|p| p.reference == default) {
        return def;
    }
    let region = if store.region.is_empty() {
        "us-east-1"
    } else {
        store.region.as_str()
    };
    let settings = [
        ("endpoint", store.endpoint.as_str()),
        ("region", region),
        ("access_key", store.access_key.as_str()),
        (
            "secret_key",
            store.secret_key.as_deref().unwrap_or_default(),
        ),
        ("verify", if store.verify { "true" } else { "false" }),
    ];
    def.providers.push(StorageProvider {
        reference: default,
        settings: settings
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Secret(v.to_owned())))
            .collect(),
    });
    def
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
        for_node(node, &functions(FDL), None)
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
    fn the_operators_store_becomes_minio_default_unless_the_fdl_defines_it() {
        let store = MinioProvider {
            endpoint: "https://minio.lab:9000".into(),
            region: String::new(),
            verify: true,
            access_key: "fn-user".into(),
            secret_key: Some("fn-secret".into()),
            secret_key_file: None,
        };
        let of = |yaml: &str| functions(yaml).remove(0).def;
        let plain = of(
            "functions:\n  oscar:\n  - edge:\n      name: f\n      command: [true]\n      input: [{storage_provider: minio.default, path: b/in}]\n",
        );
        let made = with_default_store(plain.clone(), Some(&store));
        let s3 = made
            .s3_settings(&ProviderRef::parse("minio.default"))
            .expect("the store");
        assert_eq!(s3.endpoint.as_deref(), Some("https://minio.lab:9000"));
        assert_eq!(
            (s3.region.as_str(), s3.access_key.as_str()),
            ("us-east-1", "fn-user")
        );
        assert_eq!(
            with_default_store(plain.clone(), None),
            plain,
            "no store: folders"
        );
        let own = of(
            "functions:\n  oscar:\n  - edge:\n      name: f\n      command: [true]\n      input: [{storage_provider: minio.default, path: b/in}]\nstorage_providers:\n  minio:\n    default: {endpoint: 'http://mine:9000', access_key: a, secret_key: s}\n",
        );
        assert_eq!(with_default_store(own.clone(), Some(&store)), own);
        let elsewhere = of(
            "functions:\n  oscar:\n  - edge:\n      name: f\n      command: [true]\n      input: [{storage_provider: local, path: b/in}]\n",
        );
        assert_eq!(
            with_default_store(elsewhere.clone(), Some(&store)),
            elsewhere
        );
    }

    #[test]
    fn equal_function_sets_make_equal_deployments() {
        let n = node(None, &[]);
        let mut fs = functions(FDL);
        let a = for_node(&n, &fs, None).digest();
        fs.reverse();
        assert_eq!(for_node(&n, &fs, None).digest(), a);
    }
}
