//! S3-compatible buckets (`s3` providers, and `minio` providers with an `endpoint`) through
//! `object_store`: the agent uploads outputs there, the coordinator downloads the objects that
//! bucket notifications name. Requests are signed with SigV4 (ring).

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload};
use spillway_proto::fdl::S3Settings;

/// A bucket of an S3-compatible store.
#[derive(Debug)]
pub struct Bucket {
    store: AmazonS3,
    name: String,
    /// `s3://bucket` or `ENDPOINT/bucket`, for messages.
    shown: String,
}

impl Bucket {
    pub fn open(settings: &S3Settings, bucket: &str) -> Result<Self, String> {
        // reqwest's rustls takes the process's default provider: ring, as everywhere here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key)
            .with_secret_access_key(settings.secret_key.expose())
            .with_client_options(
                ClientOptions::new().with_allow_invalid_certificates(!settings.verify),
            );
        let shown = match &settings.endpoint {
            Some(endpoint) => {
                // MinIO and most S3 look-alikes want path-style requests; plain HTTP only when
                // the endpoint says so.
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
                format!("{}/{bucket}", endpoint.trim_end_matches('/'))
            }
            None => format!("s3://{bucket}"),
        };
        let store = builder
            .build()
            .map_err(|e| format!("cannot use bucket {shown}: {e}"))?;
        Ok(Self {
            store,
            name: bucket.to_owned(),
            shown,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot upload {}/{key}: {}", self.shown, explain(&e)))
    }

    /// The object's bytes, refusing objects over `limit` bytes before downloading them.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Vec<u8>, String> {
        let path = ObjectPath::from(key);
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| format!("cannot read {}/{key}: {}", self.shown, explain(&e)))?;
        if meta.size > limit {
            return Err(format!(
                "{}/{key} is {} bytes, over the {limit} bytes a job input may have here",
                self.shown, meta.size
            ));
        }
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| format!("cannot read {}/{key}: {}", self.shown, explain(&e)))?;
        // The object may have changed since the HEAD: the bound holds while reading too.
        let too_big = || {
            format!(
                "{}/{key} is over the {limit} bytes a job input may have here",
                self.shown
            )
        };
        if got.meta.size > limit {
            return Err(too_big());
        }
        let mut stream = got.into_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk =
                chunk.map_err(|e| format!("cannot read {}/{key}: {}", self.shown, explain(&e)))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// The store's error, with what to do about the common ones.
fn explain(e: &object_store::Error) -> String {
    let text = e.to_string();
    if text.contains("SignatureDoesNotMatch")
        || text.contains("InvalidAccessKeyId")
        || text.contains("403")
    {
        format!("{text} (check access_key and secret_key of the storage provider in the FDL)")
    } else if matches!(e, object_store::Error::NotFound { .. }) || text.contains("NoSuchBucket") {
        format!("{text} (does the bucket exist?)")
    } else {
        text
    }
}
