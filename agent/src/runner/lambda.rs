//! The Lambda Runtime API loop: with this, the runner is the `bootstrap` of a Lambda custom
//! runtime or container image. Each invocation's payload is an [`Envelope`] — sent as is by an
//! `Invoke`, or as the body of a function URL request — and the answer is the [`ResultReport`].
//!
//! A job that would outlive the invocation's deadline is stopped just before it and answered
//! [`ReportedStatus::Stopped`](spillway_proto::envelope::ReportedStatus::Stopped), so the
//! coordinator sends it to its next replica instead of failing it (SCAR's lambda-batch idea).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use spillway_proto::envelope::{Envelope, ResultReport};

use super::RunOptions;

const API_VERSION: &str = "2018-06-01";

/// Serves invocations until the Runtime API goes away (the sandbox is frozen or shut down
/// between them; a lost API is the end of this process's life).
pub async fn serve(api: &str, opts: RunOptions) -> Result<(), String> {
    let http = super::http_client()?;
    let base = format!("http://{api}/{API_VERSION}/runtime");
    tracing::info!(api, "serving the Lambda Runtime API");
    loop {
        let next = http
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the Lambda Runtime API at {api} is gone: {}",
                    spillway_plumbing::error_chain(&e)
                )
            })?;
        if !next.status().is_success() {
            return Err(format!(
                "the Lambda Runtime API answered HTTP {} to `next`",
                next.status()
            ));
        }
        let request_id = header(&next, "lambda-runtime-aws-request-id").ok_or(
            "the Lambda Runtime API gave an invocation without Lambda-Runtime-Aws-Request-Id",
        )?;
        let deadline = header(&next, "lambda-runtime-deadline-ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .and_then(deadline_instant);
        let payload = next.bytes().await.map_err(|e| {
            format!(
                "cannot read an invocation: {}",
                spillway_plumbing::error_chain(&e)
            )
        })?;
        let answer = match envelope_of(&payload) {
            Ok((envelope, from_url)) => {
                let opts = RunOptions {
                    deadline,
                    ..opts.clone()
                };
                let report: ResultReport = super::run(&http, &envelope, &opts).await;
                let body = if from_url {
                    // A function URL answers with an HTTP response object.
                    serde_json::json!({
                        "statusCode": 200,
                        "headers": {"content-type": "application/json"},
                        "body": serde_json::to_string(&report).unwrap_or_default(),
                    })
                } else {
                    serde_json::to_value(&report).unwrap_or_default()
                };
                http.post(format!("{base}/invocation/{request_id}/response"))
                    .json(&body)
                    .send()
                    .await
            }
            Err(why) => {
                tracing::warn!(request_id, "{why}");
                http.post(format!("{base}/invocation/{request_id}/error"))
                    .header("Lambda-Runtime-Function-Error-Type", "Spillway.BadEnvelope")
                    .json(&serde_json::json!({"errorType": "Spillway.BadEnvelope", "errorMessage": why}))
                    .send()
                    .await
            }
        };
        if let Err(e) = answer {
            tracing::warn!(
                request_id,
                "cannot answer an invocation: {}",
                spillway_plumbing::error_chain(&e)
            );
        }
    }
}

fn header(response: &reqwest_tls::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The deadline (milliseconds since the Unix epoch) as an instant on this process's clock. A
/// value long past is no epoch time at all (emulators send a fixed budget): no deadline then.
fn deadline_instant(epoch_ms: u64) -> Option<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    if epoch_ms + 60_000 < now_ms {
        tracing::debug!(
            epoch_ms,
            "Lambda-Runtime-Deadline-Ms is not a time: no deadline"
        );
        return None;
    }
    Some(Instant::now() + Duration::from_millis(epoch_ms.saturating_sub(now_ms)))
}

/// The envelope in an invocation's payload: the envelope itself (an `Invoke`), or a function URL
/// request whose body is the envelope (base64 when the request said so; then `true`).
pub fn envelope_of(payload: &[u8]) -> Result<(Envelope, bool), String> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("the invocation's payload is not JSON: {e}"))?;
    let (value, from_url) = match value.get("body") {
        Some(Value::String(body)) if value.get("spillway").is_none() => {
            let bytes = if value.get("isBase64Encoded") == Some(&Value::Bool(true)) {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .map_err(|e| format!("the function URL request's body is not base64: {e}"))?
            } else {
                body.as_bytes().to_vec()
            };
            let body = serde_json::from_slice(&bytes)
                .map_err(|e| format!("the function URL request's body is not JSON: {e}"))?;
            (body, true)
        }
        _ => (value, false),
    };
    serde_json::from_value(value).map(|e| (e, from_url)).map_err(|e| {
        format!("the invocation's payload is not a Spillway envelope ({e}); invoke this function through a Spillway coordinator")
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn envelope() -> Envelope {
        use spillway_proto::{Event, FileEvent, JobId, ObjectKey};
        let key = ObjectKey::parse("in/a.jpg").unwrap();
        Envelope {
            spillway: 1,
            job: JobId::derive("n", "f", key.as_str(), &[3; 32]),
            function: "f".into(),
            origin: "n".into(),
            hops: 1,
            attempt: 1,
            event: Event::File(FileEvent {
                bucket: "b".into(),
                key,
                size: 1,
                mtime_ns: 0,
                sha256: [3; 32],
            }),
            input: spillway_proto::envelope::InputRef {
                name: "a.jpg".into(),
                size: 1,
                sha256: "00".into(),
                url: "http://c/b".into(),
            },
            callback: "http://c/cb".into(),
            expires_at: 9,
            upload: None,
            script: Some("echo hi".into()),
            variables: [("GREETING".to_owned(), "from the FDL".to_owned())].into(),
        }
    }

    #[test]
    fn an_invoke_payload_and_a_function_url_body_both_give_the_envelope() {
        let a = envelope();
        let direct = serde_json::to_string(&a).unwrap();
        assert_eq!(envelope_of(direct.as_bytes()), Ok((a.clone(), false)));
        let url = serde_json::json!({"body": direct, "isBase64Encoded": false}).to_string();
        assert_eq!(envelope_of(url.as_bytes()), Ok((a.clone(), true)));
        let b64 = base64::engine::general_purpose::STANDARD.encode(direct.as_bytes());
        let url = serde_json::json!({"body": b64, "isBase64Encoded": true}).to_string();
        assert_eq!(envelope_of(url.as_bytes()), Ok((a, true)));
    }

    #[test]
    fn a_payload_that_is_no_envelope_says_how_to_invoke_the_function() {
        let e = envelope_of(br#"{"hello": 1}"#).unwrap_err();
        assert!(e.contains("through a Spillway coordinator"), "{e}");
        assert!(envelope_of(b"not json").is_err());
    }
}
