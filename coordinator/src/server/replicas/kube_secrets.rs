//! A function's `environment.secrets` for its Kubernetes Jobs: a Secret the coordinator keeps
//! in the Jobs' namespace, which each Job's container takes as `envFrom`, as OSCAR keeps a
//! service's secrets. They never travel in a Job's manifest or in the envelope, where anyone who
//! may read Jobs would see them.
//!
//! The Secret is named after its content (`spillway-FUNCTION-DIGEST`, immutable), so a changed
//! secret is a new Secret and a Job in flight keeps the one it started with; making it again is
//! harmless (409 is success).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};
use spillway_proto::FunctionDef;

/// The Secret a function's Jobs read their secrets from.
#[derive(Clone)]
pub struct FunctionSecret {
    pub name: String,
    function: String,
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for FunctionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSecret")
            .field("name", &self.name)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FunctionSecret {
    /// `None` for a function without secrets.
    pub fn of(def: &FunctionDef) -> Option<Self> {
        if def.secrets.is_empty() {
            return None;
        }
        let values: BTreeMap<String, String> = def
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        let mut h = Sha256::new();
        for (k, v) in &values {
            for part in [k, v] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        let digest = hex::encode(&h.finalize()[..5]);
        Some(Self {
            name: format!("spillway-{}-{digest}", def.name),
            function: def.name.clone(),
            values,
        })
    }

    /// The Secret object (immutable, labelled with its function).
    pub fn object(&self, namespace: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    "spillway.io/function".to_owned(),
                    self.function.clone(),
                )])),
                ..ObjectMeta::default()
            },
            immutable: Some(true),
            data: Some(
                self.values
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    /// Makes the Secret unless it exists (then it is this content: the name says so).
    pub async fn ensure(&self, api: &Api<Secret>, namespace: &str) -> Result<(), kube::Error> {
        match api
            .create(&PostParams::default(), &self.object(namespace))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(secrets: &[(&str, &str)]) -> FunctionDef {
        let yaml = format!(
            "functions:\n  oscar:\n  - edge:\n      name: fire\n      image: alpine\n      environment:\n        secrets:\n{}",
            secrets
                .iter()
                .map(|(k, v)| format!("          {k}: {v}\n"))
                .collect::<String>()
        );
        let (fdl, _) = spillway_proto::fdl::parse_str("f.yaml", &yaml, std::path::Path::new("/"))
            .into_result()
            .expect("valid");
        fdl.functions.into_iter().next().expect("one function")
    }

    #[test]
    fn the_secret_is_named_by_its_content_and_never_printed() {
        let a = FunctionSecret::of(&def(&[("TOKEN", "s3cr3t")])).expect("secret");
        let same = FunctionSecret::of(&def(&[("TOKEN", "s3cr3t")])).expect("secret");
        let changed = FunctionSecret::of(&def(&[("TOKEN", "other")])).expect("secret");
        assert_eq!(a.name, same.name);
        assert_ne!(a.name, changed.name, "a changed secret is a new Secret");
        assert!(a.name.starts_with("spillway-fire-") && a.name.len() <= 63);
        assert!(!format!("{a:?}").contains("s3cr3t"));
        let object = a.object("jobs");
        assert_eq!(object.immutable, Some(true));
        assert_eq!(
            object.data.expect("data")["TOKEN"],
            ByteString(b"s3cr3t".to_vec())
        );
        let (plain, _) = spillway_proto::fdl::parse_str(
            "f.yaml",
            "functions:\n  oscar:\n  - edge:\n      name: fire\n      image: alpine\n",
            std::path::Path::new("/"),
        )
        .into_result()
        .expect("valid");
        assert!(FunctionSecret::of(&plain.functions[0]).is_none());
    }
}
