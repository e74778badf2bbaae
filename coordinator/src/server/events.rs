//! `POST /events`: the bucket notifications MinIO and S3 send (webhook JSON), routed as OSCAR's
//! manager routes them: each created object goes to every function with an input on that
//! bucket (and folder) of an S3 storage provider. The coordinator downloads the object with the
//! function's provider credentials and drops it as `bucket/key` into the data root of a node
//! that runs the function, so the job is an ordinary one there (journaled, deduplicated by
//! content, spilled over like the rest); its outputs go back to the buckets of its outputs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use serde::Serialize;
use spillway_proto::FunctionDef;
use spillway_proto::fdl::S3Settings;
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::MAX_STREAM_FRAME;

use super::State;
use super::api_error::ApiError;
use super::metrics::inc;
use super::submit::submit_object;

/// One object a notification says was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    /// Decoded (notifications URL-encode keys).
    pub key: String,
    pub event: String,
    /// S3's and MinIO's per-write order of the object: the same on a redelivery, new on every
    /// write (identical content included).
    pub sequencer: Option<String>,
}

/// Why a notification is refused as a whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Reads a MinIO/S3 notification: `Records[].eventName`, `.s3.bucket.name`, `.s3.object.key`.
/// Records of other kinds (removals, test events) are skipped; a body that is not such a
/// notification at all is refused.
pub fn parse_notification(body: &[u8]) -> Result<Vec<CreatedObject>, Malformed> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("the body is not JSON: {e}")))?;
    // S3's configuration test message has no records and nothing to do.
    if json.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let records = json
        .get("Records")
        .and_then(|r| r.as_array())
        .ok_or_else(|| {
            Malformed(
                "not a bucket notification: expected `Records` as MinIO and S3 send them (point a MinIO webhook or an S3 event notification at /events)".into(),
            )
        })?;
    let mut objects = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let field = |path: &[&str]| -> Result<String, Malformed> {
            let mut v = r;
            for p in path {
                v = v.get(p).ok_or_else(|| {
                    Malformed(format!("Records[{i}] has no `{}`", path.join(".")))
                })?;
            }
            v.as_str().map(str::to_owned).ok_or_else(|| {
                Malformed(format!("Records[{i}].{} is not a string", path.join(".")))
            })
        };
        let event = field(&["eventName"])?;
        if !event.starts_with("s3:ObjectCreated:") && !event.starts_with("ObjectCreated:") {
            continue;
        }
        let bucket = field(&["s3", "bucket", "name"])?;
        let raw = field(&["s3", "object", "key"])?;
        let key = decode_key(&raw).ok_or_else(|| {
            Malformed(format!(
                "Records[{i}].s3.object.key `{raw}` is not URL-encoded UTF-8"
            ))
        })?;
        let sequencer = r["s3"]["object"]["sequencer"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(str::to_owned);
        objects.push(CreatedObject {
            bucket,
            key,
            event,
            sequencer,
        });
    }
    Ok(objects)
}

/// Keys in notifications are URL-encoded with `+` for spaces (as HTML forms encode them).
fn decode_key(raw: &str) -> Option<String> {
    let plus_decoded = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The functions that take `object`, each with the settings of the input that takes it: an
/// input on an S3 provider naming its bucket, whose folder holds the key and whose filters
/// accept the file name.
pub fn route<'f>(
    functions: &'f [FunctionDef],
    object: &CreatedObject,
) -> Vec<(&'f FunctionDef, S3Settings)> {
    let file_name = object.key.rsplit('/').next().unwrap_or_default();
    functions
        .iter()
        .filter_map(|f| {
            f.input.iter().find_map(|i| {
                let takes = i.path.bucket == object.bucket
                    && i.path
                        .folder
                        .as_ref()
                        .is_none_or(|folder| object.key.starts_with(&format!("{folder}/")))
                    && i.accepts(file_name);
                takes
                    .then(|| f.s3_settings(&i.provider))
                    .flatten()
                    .map(|settings| (f, settings))
            })
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct EventJob {
    pub function: String,
    pub bucket: String,
    pub key: String,
    pub job: String,
    pub node: String,
}

#[derive(Debug, Serialize)]
pub struct EventsAccepted {
    pub jobs: Vec<EventJob>,
}

pub async fn receive(
    AxState(state): AxState<Arc<State>>,
    body: Bytes,
) -> Result<(StatusCode, Json<EventsAccepted>), ApiError> {
    let objects = parse_notification(&body).map_err(|Malformed(why)| {
        inc(&state.metrics.events_malformed);
        ApiError(StatusCode::BAD_REQUEST, why)
    })?;
    let jobs = accept(&state, &objects, None).await?;
    Ok((StatusCode::ACCEPTED, Json(EventsAccepted { jobs })))
}

/// Whether a body is a bucket notification (S3's or MinIO's `Records`), as MinIO's webhook posts
/// it to OSCAR's `POST /job/{service}`.
pub fn is_notification(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("Records").is_some_and(|r| r.is_array())
            || v.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent")
    })
}

/// The jobs the created objects make: for every function that takes each, or only for
/// `function` (a notification posted to `/job/{function}`).
pub async fn accept(
    state: &State,
    objects: &[CreatedObject],
    function: Option<&str>,
) -> Result<Vec<EventJob>, ApiError> {
    let functions: Vec<FunctionDef> = state
        .store
        .functions()?
        .into_iter()
        .filter(|f| function.is_none_or(|name| f.def.name == name))
        .map(|f| super::deploy::with_default_store(f.def, state.config.oscar_minio.as_ref()))
        .collect();
    let mut jobs = Vec::new();
    for object in objects {
        let key = ObjectKey::parse(&object.key).map_err(|e| {
            inc(&state.metrics.events_refused);
            ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "object key `{}` in bucket `{}` refused: {e}",
                    object.key, object.bucket
                ),
            )
        })?;
        let takers = route(&functions, object);
        if takers.is_empty() {
            inc(&state.metrics.events_unrouted);
            let why = match function {
                Some(name) => format!(
                    "function `{name}` takes no objects from bucket `{}` (key `{}`) of an S3-compatible store: a notification posted to /job/{name} fetches the object from the store of an input with that bucket on an `s3` or `minio.ID` provider with an `endpoint`, or on `minio.default` when the coordinator names its store ([oscar.minio_provider]); without one, `minio.default` is a folder on the nodes",
                    object.bucket, object.key
                ),
                None => format!(
                    "no function takes objects from bucket `{}` (key `{}`): give a function an input with `path: {}/…` on an s3 storage provider, or stop the bucket's notifications",
                    object.bucket, object.key, object.bucket
                ),
            };
            return Err(ApiError(StatusCode::NOT_FOUND, why));
        }
        for (f, settings) in takers {
            let seen = object.sequencer.as_ref().map(|sequencer| {
                (
                    f.name.clone(),
                    object.bucket.clone(),
                    object.key.clone(),
                    sequencer.clone(),
                )
            });
            let (job, node) = match seen.as_ref().and_then(|s| state.notified.made(s)) {
                Some(made) => {
                    inc(&state.metrics.events_redelivered);
                    made
                }
                None => {
                    let bucket = spillway_plumbing::s3::Bucket::open(&settings, &object.bucket)
                        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
                    let bytes = bucket
                        .get(&object.key, (MAX_STREAM_FRAME - 4096) as u64)
                        .await
                        .map_err(|e| {
                            inc(&state.metrics.events_refused);
                            ApiError(StatusCode::BAD_GATEWAY, e)
                        })?;
                    let invoked = submit_object(
                        state,
                        &f.name,
                        &object.bucket,
                        key.clone(),
                        None,
                        Bytes::from(bytes),
                    )
                    .await?;
                    inc(&state.metrics.events_accepted);
                    if let Some(seen) = seen {
                        state
                            .notified
                            .remember(seen, invoked.job.clone(), invoked.node.clone());
                    }
                    (invoked.job, invoked.node)
                }
            };
            jobs.push(EventJob {
                function: f.name.clone(),
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                job,
                node,
            });
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIO: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"fire/in/cam%201+a.jpg","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"fire"},"object":{"key":"in%2Fcam%201+a.jpg","size":3,"sequencer":"17A2B3C4D5E6F708"}}}]}"#;

    #[test]
    fn minio_notifications_give_bucket_and_decoded_key() {
        let objects = parse_notification(MINIO.as_bytes()).expect("valid");
        assert_eq!(
            objects,
            vec![CreatedObject {
                bucket: "fire".into(),
                key: "in/cam 1 a.jpg".into(),
                event: "s3:ObjectCreated:Put".into(),
                sequencer: Some("17A2B3C4D5E6F708".into()),
            }]
        );
    }

    #[test]
    fn malformed_notifications_say_what_was_expected() {
        assert!(parse_notification(b"{").unwrap_err().0.contains("not JSON"));
        assert!(
            parse_notification(b"{\"a\":1}")
                .unwrap_err()
                .0
                .contains("Records")
        );
        let no_key = r#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}"#;
        assert!(
            parse_notification(no_key.as_bytes())
                .unwrap_err()
                .0
                .contains("s3.object.key")
        );
        let removal = r#"{"Records":[{"eventName":"s3:ObjectRemoved:Delete","s3":{}}]}"#;
        assert_eq!(parse_notification(removal.as_bytes()), Ok(vec![]));
        assert_eq!(
            parse_notification(br#"{"Event":"s3:TestEvent"}"#),
            Ok(vec![])
        );
    }

    #[test]
    fn objects_go_to_functions_reading_that_bucket_folder_from_s3() {
        let fdl = spillway_proto::fdl::parse_str(
            "f.yaml",
            "functions:\n  oscar:\n  - edge:\n      name: s3fn\n      runtime: process\n      command: [\"true\"]\n      input: [{storage_provider: s3.aws, path: fire/in, suffix: [.jpg]}]\n  - edge:\n      name: localfn\n      runtime: process\n      command: [\"true\"]\n      input: [{storage_provider: minio.default, path: fire/in}]\nstorage_providers:\n  s3:\n    aws: {access_key: AK, secret_key: SK, region: eu-west-1}\n",
            std::path::Path::new("/"),
        )
        .into_result()
        .expect("valid")
        .0;
        let object = |bucket: &str, key: &str| CreatedObject {
            bucket: bucket.into(),
            key: key.into(),
            event: "s3:ObjectCreated:Put".into(),
            sequencer: None,
        };
        let names = |o: &CreatedObject| {
            route(&fdl.functions, o)
                .iter()
                .map(|(f, _)| f.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&object("fire", "in/a.jpg")), ["s3fn"]);
        assert!(names(&object("fire", "in/a.png")).is_empty());
        assert!(names(&object("fire", "out/a.jpg")).is_empty());
        assert!(names(&object("other", "in/a.jpg")).is_empty());
        let s3 = fdl.functions[0]
            .s3_settings(&fdl.functions[0].input[0].provider)
            .expect("s3");
        assert_eq!(
            (s3.access_key.as_str(), s3.region.as_str()),
            ("AK", "eu-west-1")
        );
    }
}
