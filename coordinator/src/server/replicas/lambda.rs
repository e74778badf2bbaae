//! `type: lambda` replicas: AWS Lambda running the Spillway runner (`spillway-agent run-job` as
//! the function's `bootstrap`), reached through `Invoke` or a function URL, SigV4-signed by the
//! official `aws-sigv4` signer.
//!
//! - `RequestResponse` and function URLs answer with the runner's [`ResultReport`]; it is
//!   recorded as if the callback had brought it (the runner reports through the callback too).
//! - `Event` answers `202`: the result comes only through the callback.
//! - A report of `stopped` (the runner stopped the job at the invocation's deadline), or a
//!   Lambda timeout error, means the job did not finish there and goes to the next replica
//!   instead of failing — SCAR's lambda-batch idea.
//! - A refused request (4xx, throttling, 5xx) falls through; a request left unanswered is
//!   reconciled through the callback, as for endpoints (Lambda cannot be asked about a job).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use spillway_placement::delegation::{Found, Submitted};
use spillway_proto::envelope::{Envelope, ReportedStatus, ResultReport};
use spillway_proto::fdl::LambdaTarget;

use super::endpoint::Callbacks;
use super::{Backend, BoxFut, body_excerpt, classify};
use crate::config::CoordinatorConfig;

/// Lambda's own limit on a synchronous invocation (15 minutes), plus the network.
const MAX_SYNC: Duration = Duration::from_secs(15 * 60 + 30);

pub struct LambdaBackend {
    pub id: String,
    /// Where the request goes: the `Invoke` URL or the function URL.
    pub url: String,
    /// `None`: an unsigned function URL (`auth: none`).
    pub signer: Option<Signer>,
    pub asynchronous: bool,
    pub is_function_url: bool,
    pub http: reqwest_tls::Client,
    /// How long a synchronous invocation may take (the function's timeout and the request's).
    pub timeout: Duration,
    pub callbacks: Arc<Callbacks>,
}

impl std::fmt::Debug for LambdaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaBackend")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("asynchronous", &self.asynchronous)
            .finish()
    }
}

/// SigV4 credentials and scope for one region.
pub struct Signer {
    identity: Identity,
    region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Signs a POST of `body` to `url` with the given headers; returns the headers to add.
    fn sign(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }
}

/// Builds the backend of a lambda replica from the coordinator's `[aws]` settings and the
/// usual `AWS_*` variables.
pub fn backend(
    id: &str,
    target: &LambdaTarget,
    asynchronous: bool,
    config: &CoordinatorConfig,
    function_timeout: Option<Duration>,
    http: &reqwest_tls::Client,
    callbacks: Arc<Callbacks>,
) -> Result<LambdaBackend, String> {
    let aws = &config.aws;
    let request_timeout = config.replicas.timeout;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let default_region = aws
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let signer = |region: String| -> Result<Signer, String> {
        let key = aws
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = aws
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let token = aws
            .session_token
            .clone()
            .or_else(|| env("AWS_SESSION_TOKEN"));
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(format!(
                "replica `{id}` needs AWS credentials: set access_key_id and secret_access_key (or secret_access_key_file) under [aws] in the coordinator's config, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ));
        };
        Ok(Signer {
            identity: Credentials::new(key, secret, token, None, "spillway-config").into(),
            region,
        })
    };
    let (url, signer, is_function_url) = match target {
        LambdaTarget::Function { name, region } => {
            // An ARN names its own region.
            let region = region
                .clone()
                .or_else(|| arn_region(name))
                .unwrap_or(default_region);
            let base = aws
                .endpoint_url
                .clone()
                .or_else(|| env("AWS_ENDPOINT_URL_LAMBDA"))
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|| format!("https://lambda.{region}.amazonaws.com"));
            let name: String =
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            (
                format!(
                    "{}/2015-03-31/functions/{name}/invocations",
                    base.trim_end_matches('/')
                ),
                Some(signer(region)?),
                false,
            )
        }
        LambdaTarget::Url { url, iam } => {
            let region = url_region(url).unwrap_or(default_region);
            let signer = if *iam { Some(signer(region)?) } else { None };
            (url.clone(), signer, true)
        }
    };
    let timeout = if asynchronous {
        request_timeout
    } else {
        (function_timeout.unwrap_or(Duration::from_secs(900)) + request_timeout).min(MAX_SYNC)
    };
    Ok(LambdaBackend {
        id: id.to_owned(),
        url,
        signer,
        asynchronous,
        is_function_url,
        http: http.clone(),
        timeout,
        callbacks,
    })
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME` → REGION.
fn arn_region(name: &str) -> Option<String> {
    let mut parts = name.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty()).map(str::to_owned)
}

/// `https://ID.lambda-url.REGION.on.aws/` → REGION.
fn url_region(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let rest = host.split(".lambda-url.").nth(1)?;
    rest.split('.').next().map(str::to_owned)
}

/// What a synchronous answer (the runner's report, or Lambda's error) says about the job.
fn read_answer(function_error: Option<&str>, body: &[u8], is_function_url: bool) -> ResultReport {
    let text = String::from_utf8_lossy(body);
    if let Some(kind) = function_error {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let message = v["errorMessage"].as_str().unwrap_or(text.trim()).to_owned();
        let error_type = v["errorType"].as_str().unwrap_or(kind);
        // Lambda ends a run at its `timeout` with "Task timed out after N seconds".
        let timed_out = error_type.contains("Timedout")
            || error_type.contains("TimedOut")
            || message.contains("Task timed out");
        let status = if timed_out {
            ReportedStatus::Stopped
        } else {
            ReportedStatus::Failed
        };
        return ResultReport::finished(status, Some(format!("Lambda {error_type}: {message}")));
    }
    let report = if is_function_url {
        // A function URL answer may be the runner's HTTP response object with the report as body.
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("body").and_then(|b| b.as_str()).map(str::to_owned))
            .and_then(|b| serde_json::from_str::<ResultReport>(&b).ok())
            .or_else(|| serde_json::from_slice(body).ok())
    } else {
        serde_json::from_slice(body).ok()
    };
    report.unwrap_or_else(|| {
        ResultReport::finished(
            ReportedStatus::Succeeded,
            Some(format!(
                "the function answered without a Spillway report (is it the Spillway runner?), so no outputs came back: {}",
                text.chars().take(200).collect::<String>()
            )),
        )
    })
}

impl Backend for LambdaBackend {
    fn id(&self) -> &str {
        &self.id
    }

    fn submit<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Submitted> {
        Box::pin(async move {
            self.callbacks.submitting(envelope.job);
            let body = match serde_json::to_vec(envelope) {
                Ok(b) => b,
                Err(e) => return Submitted::Refused(format!("cannot encode the envelope: {e}")),
            };
            let invocation = if self.asynchronous {
                "Event"
            } else {
                "RequestResponse"
            };
            let traceparent = envelope.traceparent(&self.id);
            let mut headers = vec![
                ("content-type", "application/json"),
                ("traceparent", traceparent.as_str()),
            ];
            if !self.is_function_url {
                headers.push(("x-amz-invocation-type", invocation));
            }
            let mut request = self
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .body(body.clone());
            for (k, v) in &headers {
                request = request.header(*k, *v);
            }
            if let Some(signer) = &self.signer {
                match signer.sign(&self.url, &headers, &body) {
                    Ok(signed) => {
                        for (k, v) in signed {
                            request = request.header(k, v);
                        }
                    }
                    Err(why) => return Submitted::Refused(why),
                }
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return classify(&e),
            };
            let status = response.status();
            let function_error = response
                .headers()
                .get("x-amz-function-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match status.as_u16() {
                202 if self.asynchronous => {
                    self.callbacks.accepted(envelope.job);
                    Submitted::Accepted { done: false }
                }
                200 if !self.asynchronous => {
                    let body = match response.bytes().await {
                        Ok(b) => b,
                        // The function ran (or runs); its report also comes by callback.
                        Err(e) => return classify(&e),
                    };
                    let report =
                        read_answer(function_error.as_deref(), &body, self.is_function_url);
                    self.callbacks.accepted(envelope.job);
                    self.callbacks.report(envelope.job, report);
                    Submitted::Accepted { done: false }
                }
                _ => {
                    let body = body_excerpt(response, 300).await;
                    Submitted::Refused(format!("HTTP {status}: {body}"))
                }
            }
        })
    }

    fn status<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Found> {
        // Lambda keeps no record to ask by job id: the runner's callback is the record.
        Box::pin(async move { self.callbacks.found(envelope.job, self.timeout * 2) })
    }

    fn cancel<'a>(&'a self, _envelope: &'a Envelope) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move {
            Err(format!(
                "`{}` is a Lambda function: a running invocation cannot be cancelled",
                self.id
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_arns_and_function_urls() {
        assert_eq!(
            arn_region("arn:aws:lambda:eu-west-1:123456789012:function:fire").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("fire"), None);
        assert_eq!(
            url_region("https://abc123.lambda-url.eu-central-1.on.aws/").as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(url_region("http://127.0.0.1:9000/lambda-url/f/"), None);
    }

    #[test]
    fn a_lambda_timeout_is_a_stop_and_other_function_errors_are_failures() {
        let timeout = read_answer(
            Some("Unhandled"),
            br#"{"errorMessage":"2026-11-23T01:02:03Z abc Task timed out after 3.00 seconds","errorType":"Sandbox.Timedout"}"#,
            false,
        );
        assert_eq!(timeout.status, ReportedStatus::Stopped);
        let crash = read_answer(
            Some("Unhandled"),
            br#"{"errorMessage":"boom","errorType":"Runtime.ExitError"}"#,
            false,
        );
        assert_eq!(crash.status, ReportedStatus::Failed);
        assert!(crash.reason.unwrap().contains("boom"));
    }

    #[test]
    fn the_runners_report_is_read_from_an_invoke_answer_and_a_function_url_response() {
        let direct = read_answer(None, br#"{"status":"stopped","reason":"deadline"}"#, false);
        assert_eq!(direct.status, ReportedStatus::Stopped);
        let wrapped = read_answer(
            None,
            br#"{"statusCode":200,"body":"{\"status\":\"failed\",\"reason\":\"exit 2\"}"}"#,
            true,
        );
        assert_eq!(wrapped.status, ReportedStatus::Failed);
        let foreign = read_answer(None, b"Simple Lambda happy path OK", false);
        assert_eq!(foreign.status, ReportedStatus::Succeeded);
        assert!(
            foreign
                .reason
                .unwrap()
                .contains("without a Spillway report")
        );
    }
}
