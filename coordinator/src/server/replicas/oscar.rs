//! `type: oscar` replicas: a service on an OSCAR cluster (or on another Spillway coordinator,
//! which serves the same API). Delegation works as OSCAR's own: `POST {endpoint}/job/{service}`
//! with the wrapped event `{"storage_provider": …, "event": "<event JSON>"}`, the service's
//! bearer token, `X-Delegated-Job-ID` (the job's name there, so a second submission is the same
//! job) and `X-Delegated-From`; on `401` the token is refreshed through
//! `GET {endpoint}/system/services/{service}` with the cluster's basic-auth credentials and the
//! request sent once more. The job is observed (and reconciled) by its name in
//! `GET {endpoint}/system/logs/{service}`.
//!
//! The event is a MinIO-style notification for the input (bucket and key as the origin saw
//! them) with a `spillway` member holding the [`Envelope`]: a Spillway coordinator fetches the
//! input from its presigned URL; an OSCAR cluster reads the notification as its supervisor does.

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use spillway_placement::delegation::{Found, Submitted};
use spillway_proto::Event;
use spillway_proto::envelope::Envelope;

use super::{Backend, BoxFut, body_excerpt, classify, error_chain};

pub struct OscarBackend {
    id: String,
    endpoint: String,
    service: String,
    user: String,
    password: String,
    from: String,
    http: reqwest_tls::Client,
    timeout: Duration,
    token: Mutex<Option<String>>,
}

#[derive(Debug, Deserialize)]
struct ServiceInfo {
    #[serde(default)]
    token: String,
}

#[derive(Debug, Deserialize)]
struct JobsResponse {
    #[serde(default)]
    jobs: std::collections::BTreeMap<String, Option<JobInfo>>,
}

#[derive(Debug, Deserialize)]
struct JobInfo {
    #[serde(default)]
    status: String,
}

/// Object keys in notifications as MinIO encodes them: `/`, `.`, `-` and `_` stay as they are.
const KEY_ENCODING: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

/// The body OSCAR's delegation posts (`DelegatedEvent`: the event travels as a string).
pub fn wrapped_event(from: &str, envelope: &Envelope) -> serde_json::Value {
    let (bucket, key) = match &envelope.event {
        Event::File(f) => (f.bucket.clone(), f.key.to_string()),
        Event::FileAgain(w) => (w.file.bucket.clone(), w.file.key.to_string()),
        Event::Mqtt(m) => ("mqtt".to_owned(), m.file_name.to_string()),
    };
    let encoded_key = percent_encoding::utf8_percent_encode(&key, KEY_ENCODING).to_string();
    let event = serde_json::json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("{bucket}/{key}"),
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "spillway",
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": bucket},
                "object": {"key": encoded_key, "size": envelope.input.size, "sha256": envelope.input.sha256},
            },
        }],
        "spillway": envelope,
    });
    serde_json::json!({
        "storage_provider": format!("spillway.{from}"),
        "event": event.to_string(),
    })
}

impl std::fmt::Debug for OscarBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscarBackend")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl OscarBackend {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        endpoint: String,
        service: String,
        user: String,
        password: String,
        from: String,
        http: reqwest_tls::Client,
        timeout: Duration,
    ) -> Self {
        Self {
            id,
            endpoint,
            service,
            user,
            password,
            from,
            http,
            timeout,
            token: Mutex::new(None),
        }
    }

    fn cached_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The service's token, as OSCAR's delegation refreshes it. A failure is a [`Submitted`]
    /// that says whether the cluster was reached.
    async fn refresh_token(&self) -> Result<String, Submitted> {
        let url = format!("{}/system/services/{}", self.endpoint, self.service);
        let response = self
            .http
            .get(&url)
            .timeout(self.timeout)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| match classify(&e) {
                // Nothing was submitted yet: a lost answer to a GET is not ambiguous.
                Submitted::NoAnswer(why) | Submitted::NotSent(why) => {
                    Submitted::NotSent(format!("cannot get the service's token from {url}: {why}"))
                }
                other => other,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Submitted::Refused(format!(
                "GET {url} answered HTTP {status}{}",
                if status.as_u16() == 401 {
                    " (check auth_user/auth_password of the cluster in the FDL's `clusters` or the coordinator's [clusters] config)"
                } else {
                    ""
                }
            )));
        }
        let info: ServiceInfo = response
            .json()
            .await
            .map_err(|e| Submitted::Refused(format!("GET {url}: not a service definition: {e}")))?;
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.token.clone());
        Ok(info.token)
    }

    async fn post_job(
        &self,
        envelope: &Envelope,
        token: &str,
    ) -> Result<reqwest_tls::Response, Submitted> {
        self.http
            .post(format!("{}/job/{}", self.endpoint, self.service))
            .timeout(self.timeout)
            .bearer_auth(token)
            .header("X-Delegated-Job-ID", envelope.job.executor_name())
            .header("traceparent", envelope.traceparent(&self.id))
            .header("X-Delegated-From", &self.from)
            .json(&wrapped_event(&self.from, envelope))
            .send()
            .await
            .map_err(|e| classify(&e))
    }
}

impl Backend for OscarBackend {
    fn id(&self) -> &str {
        &self.id
    }

    fn submit<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Submitted> {
        Box::pin(async move {
            let token = match self.cached_token() {
                Some(t) => t,
                None => match self.refresh_token().await {
                    Ok(t) => t,
                    Err(s) => return s,
                },
            };
            let mut response = match self.post_job(envelope, &token).await {
                Ok(r) => r,
                Err(s) => return s,
            };
            if response.status().as_u16() == 401 {
                let token = match self.refresh_token().await {
                    Ok(t) => t,
                    Err(s) => return s,
                };
                response = match self.post_job(envelope, &token).await {
                    Ok(r) => r,
                    Err(s) => return s,
                };
            }
            let status = response.status();
            if status.is_success() {
                return Submitted::Accepted { done: false };
            }
            let body = body_excerpt(response, 200).await;
            Submitted::Refused(format!(
                "POST /job/{} answered HTTP {status}: {body}",
                self.service
            ))
        })
    }

    fn status<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Found> {
        Box::pin(async move {
            let url = format!("{}/system/logs/{}", self.endpoint, self.service);
            let response = match self
                .http
                .get(&url)
                .timeout(self.timeout)
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => return Found::Unknown(format!("GET {url} answered HTTP {}", r.status())),
                Err(e) => return Found::Unknown(error_chain(&e)),
            };
            let jobs: JobsResponse = match response.json().await {
                Ok(j) => j,
                Err(e) => return Found::Unknown(format!("GET {url}: not a job list: {e}")),
            };
            let name = envelope.job.executor_name();
            match jobs.jobs.get(&name) {
                Some(info) => {
                    let status = info.as_ref().map(|i| i.status.as_str()).unwrap_or("");
                    match status {
                        "Succeeded" => Found::Finished {
                            succeeded: true,
                            detail: format!("job {name} succeeded on `{}`", self.id),
                        },
                        "Failed" => Found::Finished {
                            succeeded: false,
                            detail: format!(
                                "job {name} failed on `{}` (its log: GET {url}/{name})",
                                self.id
                            ),
                        },
                        _ => Found::Running,
                    }
                }
                // OSCAR creates the job before it answers: one that is not listed once the
                // request has certainly ended was never created.
                None => Found::Absent,
            }
        })
    }

    fn cancel<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move {
            let url = format!(
                "{}/system/logs/{}/{}",
                self.endpoint,
                self.service,
                envelope.job.executor_name()
            );
            let r = self
                .http
                .delete(&url)
                .timeout(self.timeout)
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            if r.status().is_success() || r.status().as_u16() == 404 {
                Ok(())
            } else {
                Err(format!("DELETE {url} answered HTTP {}", r.status()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::envelope::{ENVELOPE_VERSION, InputRef};
    use spillway_proto::key::ObjectKey;
    use spillway_proto::{FileEvent, JobId};

    #[test]
    fn the_wrapped_event_is_a_minio_notification_with_the_key_encoded_as_minio_does() {
        let key = ObjectKey::parse("in/cam 1_a-b.jpg").unwrap();
        let envelope = Envelope {
            spillway: ENVELOPE_VERSION,
            job: JobId::derive("n", "f", key.as_str(), &[0; 32]),
            function: "f".into(),
            origin: "n".into(),
            hops: 1,
            attempt: 1,
            event: Event::File(FileEvent {
                bucket: "frames".into(),
                key,
                size: 3,
                mtime_ns: 0,
                sha256: [0; 32],
            }),
            input: InputRef {
                name: "cam 1_a-b.jpg".into(),
                size: 3,
                sha256: "00".into(),
                url: "http://c/v1/blobs/00".into(),
            },
            callback: "http://c/v1/callbacks/00".into(),
            expires_at: 0,
            upload: None,
            script: None,
            variables: Default::default(),
        };
        let body = wrapped_event("coord", &envelope);
        assert_eq!(body["storage_provider"], "spillway.coord");
        let event: serde_json::Value =
            serde_json::from_str(body["event"].as_str().unwrap()).unwrap();
        assert_eq!(
            event["Records"][0]["s3"]["object"]["key"],
            "in/cam%201_a-b.jpg"
        );
        assert_eq!(event["spillway"]["job"], envelope.job.to_string());
    }
}
