//! `type: endpoint` replicas: a `POST` of the job's [`Envelope`] (JSON) with the replica's
//! `headers`, plus `Idempotency-Key: <job id>` so an endpoint can recognise a second submission.
//! `200`/`201`/`204` mean the endpoint ran the job; `202` that it took it and will report through
//! the envelope's `callback`; any other status that it did not take it.
//!
//! An endpoint has no API to ask about a job, so a request left without an answer is reconciled
//! through the callback: a report of the job (running or finished) keeps it there; none within
//! twice the request timeout means the endpoint did not take it, and the job moves on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spillway_placement::delegation::{Found, Submitted};
use spillway_proto::JobId;
use spillway_proto::envelope::{Envelope, OutputRef, ReportedStatus, ResultReport};

use super::{Backend, BoxFut, body_excerpt, classify};

/// What executors reported through callbacks, and when each job was last submitted (shared by
/// every backend: a callback may arrive before or after the submission's answer).
#[derive(Debug, Default)]
pub struct Callbacks {
    inner: Mutex<HashMap<JobId, Tracked>>,
}

#[derive(Debug, Clone)]
struct Tracked {
    submitted_at: Instant,
    accepted: bool,
    report: Option<ResultReport>,
}

impl Callbacks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Tracked>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new submission of the job: what an earlier attempt (another replica) reported is
    /// forgotten, so its `stopped` or `running` cannot pass for this attempt's.
    pub fn submitting(&self, job: JobId) {
        self.lock().insert(
            job,
            Tracked {
                submitted_at: Instant::now(),
                accepted: false,
                report: None,
            },
        );
    }

    pub fn accepted(&self, job: JobId) {
        if let Some(t) = self.lock().get_mut(&job) {
            t.accepted = true;
        }
    }

    /// An executor's report. Reports for jobs no attempt is tracking are kept too (a callback can
    /// overtake the submission's answer, or arrive after a coordinator restart).
    pub fn report(&self, job: JobId, report: ResultReport) {
        let mut inner = self.lock();
        let t = inner.entry(job).or_insert(Tracked {
            submitted_at: Instant::now(),
            accepted: true,
            report: None,
        });
        // A final report is never replaced by a late `running`.
        let is_final = |r: &ResultReport| r.status != ReportedStatus::Running;
        if t.report.as_ref().is_none_or(|r| !is_final(r)) {
            t.report = Some(report);
        }
    }

    /// How long ago the job was last submitted (by any backend).
    pub fn since_submitted(&self, job: JobId) -> Option<Duration> {
        self.lock().get(&job).map(|t| t.submitted_at.elapsed())
    }

    /// The outputs the job's final report lists.
    pub fn outputs(&self, job: JobId) -> Vec<OutputRef> {
        self.lock()
            .get(&job)
            .and_then(|t| t.report.as_ref())
            .map(|r| r.outputs.clone())
            .unwrap_or_default()
    }

    pub fn forget(&self, job: JobId) {
        self.lock().remove(&job);
    }

    /// What is known of the job; without a report, an accepted job is running and an
    /// unanswered one is unknown until `settle` has passed since it was submitted.
    pub fn found(&self, job: JobId, settle: Duration) -> Found {
        let inner = self.lock();
        let Some(t) = inner.get(&job) else {
            return Found::Unknown("no submission recorded since the coordinator started".into());
        };
        match &t.report {
            Some(r) => match r.status {
                ReportedStatus::Running => Found::Running,
                ReportedStatus::Succeeded => Found::Finished {
                    succeeded: true,
                    detail: r.reason.clone().unwrap_or_default(),
                },
                ReportedStatus::Failed => Found::Finished {
                    succeeded: false,
                    detail: r.reason.clone().unwrap_or_else(|| "failed".into()),
                },
                ReportedStatus::Stopped => Found::Stopped(
                    r.reason
                        .clone()
                        .unwrap_or_else(|| "stopped at its time limit".into()),
                ),
            },
            None if t.accepted => Found::Running,
            None if t.submitted_at.elapsed() >= settle => Found::Absent,
            None => Found::Unknown(format!(
                "no report yet ({}s after the submission)",
                t.submitted_at.elapsed().as_secs()
            )),
        }
    }
}

pub struct EndpointBackend {
    pub id: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub http: reqwest_tls::Client,
    pub timeout: Duration,
    pub callbacks: std::sync::Arc<Callbacks>,
}

impl std::fmt::Debug for EndpointBackend {
    // Headers carry credentials (API keys, bearer tokens): names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("EndpointBackend")
            .field("id", &self.id)
            .field("headers", &names)
            .finish()
    }
}

impl Backend for EndpointBackend {
    fn id(&self) -> &str {
        &self.id
    }

    fn submit<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Submitted> {
        Box::pin(async move {
            self.callbacks.submitting(envelope.job);
            let mut request = self
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .header("Idempotency-Key", envelope.job.to_string())
                .header("traceparent", envelope.traceparent(&self.id))
                .json(envelope);
            for (name, value) in &self.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return classify(&e),
            };
            let status = response.status();
            match status.as_u16() {
                200 | 201 | 204 => Submitted::Accepted { done: true },
                202 => {
                    self.callbacks.accepted(envelope.job);
                    Submitted::Accepted { done: false }
                }
                _ => {
                    let body = body_excerpt(response, 200).await;
                    Submitted::Refused(format!("HTTP {status}: {body}"))
                }
            }
        })
    }

    fn status<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Found> {
        Box::pin(async move { self.callbacks.found(envelope.job, self.timeout * 2) })
    }

    fn cancel<'a>(&'a self, _envelope: &'a Envelope) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move {
            Err(format!(
                "`{}` is an HTTP endpoint: it has no way to cancel a job",
                self.id
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_submission_is_unknown_until_it_settles_then_absent() {
        let c = Callbacks::default();
        let job = JobId::derive("n", "f", "k", &[0; 32]);
        assert!(matches!(c.found(job, Duration::ZERO), Found::Unknown(_)));
        c.submitting(job);
        assert!(matches!(
            c.found(job, Duration::from_secs(60)),
            Found::Unknown(_)
        ));
        assert_eq!(c.found(job, Duration::ZERO), Found::Absent);
        c.report(job, ResultReport::running());
        assert_eq!(c.found(job, Duration::ZERO), Found::Running);
    }

    #[test]
    fn a_final_report_is_not_replaced_by_a_late_running_one() {
        let c = Callbacks::default();
        let job = JobId::derive("n", "f", "k", &[1; 32]);
        c.report(
            job,
            ResultReport::finished(ReportedStatus::Failed, Some("exit 3".into())),
        );
        c.report(job, ResultReport::running());
        assert_eq!(
            c.found(job, Duration::ZERO),
            Found::Finished {
                succeeded: false,
                detail: "exit 3".into()
            }
        );
    }
}
