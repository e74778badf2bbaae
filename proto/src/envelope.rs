//! What crosses to an executor outside the mesh (an HTTP endpoint, another cluster, a runner in
//! a Kubernetes Job or a Lambda function): the job, its original event, where to fetch its input
//! and where to report its result, as JSON. URLs are presigned and expire; the executor needs no
//! other credential.

use serde::{Deserialize, Serialize};

use crate::{Event, JobId};

/// The envelope's format version; a reader refuses others.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub spillway: u32,
    pub job: JobId,
    pub function: String,
    /// The node where the job appeared.
    pub origin: String,
    /// Placements so far; a receiver that is itself a mesh stops at the coordinator's limit.
    pub hops: u8,
    /// The lease number: a result reported for an older attempt is ignored.
    pub attempt: u32,
    pub event: Event,
    pub input: InputRef,
    /// `POST` a [`ResultReport`] here when the job starts and when it ends.
    pub callback: String,
    /// When the URLs stop working, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `PUT` each output file's bytes to this URL with `{name}` replaced by its key relative to
    /// the output folder (percent-encoded); absent for executors that deliver outputs themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// The function's script (the FDL `script`'s text), for a runner inside the user's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The function's `environment.variables`, set for the script wherever it runs, as on the
    /// nodes (over the executor's own environment). Secrets never travel here: an executor gets
    /// them from its own platform (a Kubernetes Secret the coordinator keeps, a Lambda's
    /// configuration).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variables: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// `FILE_NAME` for the function.
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes at `url`.
    pub sha256: String,
    /// `GET` gives the input's bytes.
    pub url: String,
}

/// What an executor reports through the envelope's `callback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultReport {
    pub status: ReportedStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The outputs uploaded through the envelope's `upload` URL, when the job succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputRef>,
}

/// One uploaded output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// Its key relative to the function's output folder.
    pub name: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    pub size: u64,
}

impl ResultReport {
    pub fn running() -> Self {
        Self {
            status: ReportedStatus::Running,
            reason: None,
            outputs: Vec::new(),
        }
    }

    pub fn finished(status: ReportedStatus, reason: Option<String>) -> Self {
        Self {
            status,
            reason,
            outputs: Vec::new(),
        }
    }
}

/// Replaces `{name}` in an envelope's `upload` template with a percent-encoded output key
/// (its `/` kept, so folders survive).
pub fn upload_url(template: &str, name: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(name, KEEP).to_string();
    template.replace("{name}", &encoded)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped before it finished because the executor's own time limit came first (a Lambda
    /// `timeout`): nothing was delivered, so the next replica may run it (SCAR's lambda-batch).
    Stopped,
}

impl JobId {
    /// The job's name on systems that name their work (an OSCAR job, a Kubernetes Job): a
    /// lowercase DNS label, the same for every attempt, so a second submission is recognised.
    pub fn executor_name(&self) -> String {
        format!("spillway-{self}")
    }
}

impl Envelope {
    /// The W3C trace context (`traceparent`) of this delegation to `replica`: see
    /// [`JobId::traceparent`].
    pub fn traceparent(&self, replica: &str) -> String {
        self.job.traceparent(self.attempt, replica)
    }
}

impl JobId {
    /// A W3C trace context (`traceparent`) for attempt `attempt` of this job on `target`: the
    /// job id is the trace id (both are 16 bytes), so a job can be followed across tiers by its
    /// id in any tracing system or log; the parent id tells the attempts and targets apart.
    pub fn traceparent(&self, attempt: u32, target: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(self.to_string())
            .chain_update(attempt.to_be_bytes())
            .chain_update(target)
            .finalize();
        let mut parent = [0u8; 8];
        parent.copy_from_slice(&digest[..8]);
        // All zeros is W3C's invalid parent id.
        if parent == [0; 8] {
            parent[7] = 1;
        }
        format!("00-{self}-{}-01", hex::encode(parent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_carries_the_job_id_as_its_trace_id_and_tells_attempts_apart() {
        let job = JobId::derive("pi-1", "f", "in/a.txt", &[7; 32]);
        let first = job.traceparent(1, "endpoint:http://a");
        let parts: Vec<&str> = first.split('-').collect();
        assert_eq!(parts.len(), 4, "{first}");
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        assert_eq!(parts[1], job.to_string());
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_ne!(first, job.traceparent(1, "oscar:c/s"));
        assert_ne!(first, job.traceparent(2, "endpoint:http://a"));
    }

    #[test]
    fn an_upload_url_keeps_folders_and_encodes_the_rest_of_the_name() {
        let t = "http://c/v1/outputs/j/1/{name}?expires=9&signature=ab";
        assert_eq!(
            upload_url(t, "night/cam 1+2.jpg"),
            "http://c/v1/outputs/j/1/night/cam%201%2B2.jpg?expires=9&signature=ab"
        );
    }

    #[test]
    fn an_envelope_without_the_optional_fields_still_reads() {
        let report: ResultReport = serde_json::from_str(r#"{"status":"stopped"}"#).unwrap();
        assert_eq!(
            report,
            ResultReport::finished(ReportedStatus::Stopped, None)
        );
    }
}
