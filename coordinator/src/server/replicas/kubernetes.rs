//! `type: kubernetes` replicas: one `batch/v1` Job per job, made through kube-rs.
//!
//! - The Job is named from the job id ([`JobId::executor_name`]), so a second submission is a
//!   `409 AlreadyExists`: the job is already there, not an error.
//! - An init container of the runner image copies the static `spillway-agent` into an
//!   `emptyDir`; the function's own image then runs it as its entrypoint (`run-job`, with the
//!   envelope in `SPILLWAY_ENVELOPE`), as OSCAR injects its supervisor, so any image works.
//! - `backoffLimit: 0`: Kubernetes never starts the job a second time behind our back.
//! - Status comes from a watch on the Job (one per attempt, resumed from its last
//!   `resourceVersion`), together with the runner's report through the callback, which carries
//!   the outputs. An ambiguous create is reconciled by a `GET` of the Job's name.
//!
//! [`JobId::executor_name`]: spillway_proto::JobId::executor_name

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use spillway_placement::delegation::{Found, Submitted};
use spillway_proto::FunctionDef;
use spillway_proto::envelope::Envelope;

use super::endpoint::Callbacks;
use super::kube_secrets::FunctionSecret;
use super::{Backend, BoxFut, error_chain};
use crate::config::KubeCluster;

/// Where the init container puts the runner, in the pod's shared `emptyDir`.
pub const RUNNER_DIR: &str = "/spillway";
const RUNNER_VOLUME: &str = "spillway-runner";
/// How long one watch request lasts before it is resumed (the API server's own limit is
/// minutes; shorter keeps a dead connection from hiding changes for long).
const WATCH_SECONDS: u32 = 240;

/// kube clients by cluster id, made once (reading a kubeconfig, starting a connection pool).
#[derive(Default)]
pub struct KubeClients {
    clients: tokio::sync::Mutex<HashMap<String, kube::Client>>,
}

impl std::fmt::Debug for KubeClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClients").finish_non_exhaustive()
    }
}

impl KubeClients {
    /// The client of cluster `id`: its `kubeconfig` (and `context`) when configured, else the
    /// kubeconfig kubectl would use, else the in-cluster service account.
    async fn get(
        &self,
        id: &str,
        cluster: &KubeCluster,
        timeout: Duration,
    ) -> Result<kube::Client, String> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(id) {
            return Ok(c.clone());
        }
        let options = KubeConfigOptions {
            context: cluster.context.clone(),
            ..Default::default()
        };
        let mut config = match &cluster.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    format!(
                        "cannot read the kubeconfig `{}` of [kubernetes.{id}]: {}; fix the file or the `kubeconfig` setting",
                        path.display(),
                        error_chain(&e)
                    )
                })?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| {
                        format!(
                            "the kubeconfig `{}` of [kubernetes.{id}] is unusable: {}",
                            path.display(),
                            error_chain(&e)
                        )
                    })?
            }
            None if cluster.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| {
                    format!(
                        "cannot load context {:?} of [kubernetes.{id}] from KUBECONFIG or ~/.kube/config: {}",
                        cluster.context,
                        error_chain(&e)
                    )
                })?,
            None => kube::Config::infer().await.map_err(|e| {
                format!(
                    "cluster `{id}` has no kubeconfig: set `kubeconfig` under [kubernetes.{id}] in the coordinator's config, set KUBECONFIG, or run the coordinator in the cluster ({})",
                    error_chain(&e)
                )
            })?,
        };
        config.connect_timeout = Some(timeout);
        let client = kube::Client::try_from(config).map_err(|e| {
            format!(
                "cannot make a client for cluster `{id}`: {}",
                error_chain(&e)
            )
        })?;
        clients.insert(id.to_owned(), client.clone());
        Ok(client)
    }
}

/// The Job a kubernetes replica makes for one job, and how it is watched.
pub struct KubernetesBackend {
    pub id: String,
    pub cluster_id: String,
    pub cluster: KubeCluster,
    pub namespace: String,
    /// The function's image (the replica's `image`, else the function's).
    pub image: String,
    /// The image the runner comes from (`[kubernetes.ID] runner_image`).
    pub runner_image: String,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub function: String,
    pub function_timeout: Option<Duration>,
    /// The function's secrets, as a Secret its Jobs read (`None` without secrets).
    pub secret: Option<FunctionSecret>,
    /// The longest one API request may take.
    pub timeout: Duration,
    pub clients: Arc<KubeClients>,
    pub callbacks: Arc<Callbacks>,
    /// What the watch last saw of the Job (`None` until it saw anything).
    watched: Arc<Mutex<Option<Seen>>>,
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl Drop for KubernetesBackend {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.get_mut().ok().and_then(Option::take) {
            w.abort();
        }
    }
}

/// The Job as the watch last saw it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Exists(JobPhase),
    Deleted,
}

/// What a Job's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobPhase {
    /// Created, pending or running.
    Active,
    Complete,
    Failed(String),
}

impl KubernetesBackend {
    /// The backend of a kubernetes replica of `def`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        cluster_id: &str,
        cluster: KubeCluster,
        namespace: Option<&str>,
        image: Option<&str>,
        def: &FunctionDef,
        timeout: Duration,
        clients: Arc<KubeClients>,
        callbacks: Arc<Callbacks>,
    ) -> Result<Self, String> {
        let image = image.or(def.image.as_deref()).ok_or_else(|| {
            format!(
                "replica `{id}` needs a container image: set `image` on the replica or on function `{}`",
                def.name
            )
        })?;
        let runner_image = cluster
            .runner_image
            .clone()
            .ok_or_else(|| crate::config::missing_runner_image(cluster_id))?;
        Ok(Self {
            id: id.to_owned(),
            cluster_id: cluster_id.to_owned(),
            namespace: namespace.unwrap_or(&cluster.namespace).to_owned(),
            cluster,
            image: image.to_owned(),
            runner_image,
            cpu: def.cpu.map(|c| c.0),
            memory: def.memory.map(|m| m.0),
            function: def.name.clone(),
            function_timeout: def.timeout,
            secret: FunctionSecret::of(def),
            timeout,
            clients,
            callbacks,
            watched: Arc::default(),
            watcher: Mutex::default(),
        })
    }

    async fn api(&self) -> Result<Api<Job>, String> {
        let client = self
            .clients
            .get(&self.cluster_id, &self.cluster, self.timeout)
            .await?;
        Ok(Api::namespaced(client, &self.namespace))
    }

    /// The Job for `envelope` (its manifest, as JSON).
    pub fn manifest(&self, envelope: &Envelope) -> Result<serde_json::Value, String> {
        let envelope_json = serde_json::to_string(envelope)
            .map_err(|e| format!("cannot encode the envelope: {e}"))?;
        let labels = serde_json::json!({
            "app.kubernetes.io/managed-by": "spillway",
            "spillway.io/function": label_value(&self.function),
        });
        let mut resources = serde_json::Map::new();
        if let Some(m) = self.cpu {
            resources.insert("cpu".into(), format!("{m}m").into());
        }
        if let Some(b) = self.memory {
            resources.insert("memory".into(), b.to_string().into());
        }
        let mut args = vec![format!("{RUNNER_DIR}/spillway-agent"), "run-job".to_owned()];
        if let Some(t) = self.function_timeout {
            args.push(format!("--timeout={}s", t.as_secs().max(1)));
        }
        let mut pod = serde_json::json!({
            "restartPolicy": "Never",
            "volumes": [{"name": RUNNER_VOLUME, "emptyDir": {}}],
            "initContainers": [{
                "name": "spillway-runner",
                "image": self.runner_image,
                "command": [self.cluster.runner_path, "install-runner", format!("{RUNNER_DIR}/spillway-agent")],
                "volumeMounts": [{"name": RUNNER_VOLUME, "mountPath": RUNNER_DIR}],
            }],
            "containers": [{
                "name": "function",
                "image": self.image,
                "command": args,
                "env": [
                    {"name": "SPILLWAY_ENVELOPE", "value": envelope_json},
                    {"name": "TRACEPARENT", "value": envelope.traceparent(&self.id)},
                ],
                "volumeMounts": [{"name": RUNNER_VOLUME, "mountPath": RUNNER_DIR}],
                "resources": {"requests": resources.clone(), "limits": resources},
            }],
        });
        if let Some(secret) = &self.secret {
            pod["containers"][0]["envFrom"] =
                serde_json::json!([{"secretRef": {"name": secret.name}}]);
        }
        if let Some(sa) = &self.cluster.service_account {
            pod["serviceAccountName"] = sa.as_str().into();
        }
        if !self.cluster.image_pull_secrets.is_empty() {
            pod["imagePullSecrets"] = self
                .cluster
                .image_pull_secrets
                .iter()
                .map(|name| serde_json::json!({ "name": name }))
                .collect();
        }
        if !self.cluster.node_selector.is_empty() {
            pod["nodeSelector"] = serde_json::json!(self.cluster.node_selector);
        }
        let mut spec = serde_json::json!({
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": self.cluster.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        });
        if let Some(t) = self.function_timeout {
            // The runner stops the function at its timeout; this bounds a pod that never starts
            // it (an image that cannot be pulled) or hangs in the runner.
            spec["activeDeadlineSeconds"] = (t.as_secs() + self.timeout.as_secs() + 60).into();
        }
        Ok(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": envelope.job.executor_name(),
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {
                    "spillway.io/job": envelope.job.to_string(),
                    "spillway.io/origin": envelope.origin,
                    "spillway.io/attempt": envelope.attempt.to_string(),
                    "spillway.io/traceparent": envelope.traceparent(&self.id),
                },
            },
            "spec": spec,
        }))
    }

    /// Starts watching the Job (once per attempt), from what `GET` showed.
    fn watch(&self, api: Api<Job>, name: String, from: String) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if watcher.is_some() {
            return;
        }
        let seen = self.watched.clone();
        let task = tokio::spawn(async move {
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(WATCH_SECONDS);
            let mut version = from;
            loop {
                let stream = match api.watch(&params, &version).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(job = %name, "cannot watch the Job: {}", error_chain(&e));
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (job, now) = match event {
                        Ok(WatchEvent::Added(j) | WatchEvent::Modified(j)) => {
                            let phase = phase(&j);
                            (j, Seen::Exists(phase))
                        }
                        Ok(WatchEvent::Deleted(j)) => (j, Seen::Deleted),
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        // 410 Gone: the version is too old; start again from now.
                        Ok(WatchEvent::Error(_)) | Err(_) => {
                            version = "0".into();
                            break;
                        }
                    };
                    if let Some(v) = job.metadata.resource_version {
                        version = v;
                    }
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                }
            }
        });
        *watcher = Some(task.abort_handle());
    }

    /// The Job's state: from the watch once it saw anything, else by `GET` (which starts it).
    async fn job_state(&self, envelope: &Envelope) -> Result<Seen, String> {
        if let Some(seen) = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(seen);
        }
        let api = self.api().await?;
        let name = envelope.job.executor_name();
        let got = tokio::time::timeout(self.timeout, api.get_opt(&name))
            .await
            .map_err(|_| format!("no answer within {}s", self.timeout.as_secs()))?
            .map_err(|e| error_chain(&e))?;
        Ok(match got {
            Some(job) => {
                let version = job.metadata.resource_version.clone().unwrap_or_default();
                self.watch(api, name, version);
                Seen::Exists(phase(&job))
            }
            None => Seen::Deleted,
        })
    }
}

/// What the Job's status conditions say (`Complete`/`Failed` with status `True`).
fn phase(job: &Job) -> JobPhase {
    let status = job.status.as_ref();
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return JobPhase::Complete,
            "Failed" | "FailureTarget" => {
                let why = [c.reason.as_deref(), c.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                return JobPhase::Failed(if why.is_empty() { "failed".into() } else { why });
            }
            _ => {}
        }
    }
    // Before the controller sets conditions: a pod's end is counted (backoffLimit is 0).
    match status {
        Some(s) if s.succeeded.unwrap_or(0) > 0 => JobPhase::Complete,
        Some(s) if s.failed.unwrap_or(0) > 0 => JobPhase::Failed("its pod failed".into()),
        _ => JobPhase::Active,
    }
}

/// The job's state from the Job and the runner's report: the report (which carries the
/// outputs, or says the runner stopped) is the result once the Job has ended; a Job that ended
/// without one ended before its runner could report.
fn combine(job: Seen, report: Found) -> Found {
    match job {
        _ if is_final(&report) => report,
        Seen::Deleted => Found::Absent,
        Seen::Exists(JobPhase::Active) => Found::Running,
        Seen::Exists(JobPhase::Complete) => Found::Finished {
            succeeded: false,
            detail: "the Job completed but its runner never reported (can the cluster reach the coordinator's `replicas.public_url`?)".into(),
        },
        Seen::Exists(JobPhase::Failed(why)) => Found::Finished {
            succeeded: false,
            detail: format!("the Job failed before its runner reported: {why}"),
        },
    }
}

/// Whether the runner's report ends the job (finished, or stopped at a time limit).
fn is_final(report: &Found) -> bool {
    matches!(report, Found::Finished { .. } | Found::Stopped(_))
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Whether kube's error means the request never reached the API server.
fn never_sent(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        let text = err.to_string();
        if text.contains("dns error") || text.contains("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}

impl Backend for KubernetesBackend {
    fn id(&self) -> &str {
        &self.id
    }

    fn submit<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Submitted> {
        Box::pin(async move {
            let api = match self.api().await {
                Ok(a) => a,
                Err(why) => return Submitted::NotSent(why),
            };
            let job: Job = match self
                .manifest(envelope)
                .and_then(|m| serde_json::from_value(m).map_err(|e| e.to_string()))
            {
                Ok(j) => j,
                Err(why) => return Submitted::Refused(format!("cannot build the Job: {why}")),
            };
            if let Some(secret) = &self.secret {
                let secrets: Api<Secret> =
                    Api::namespaced(api.clone().into_client(), &self.namespace);
                match tokio::time::timeout(self.timeout, secret.ensure(&secrets, &self.namespace))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(kube::Error::Api(s))) => {
                        return Submitted::Refused(format!(
                            "the API server refused Secret `{}` (the function's secrets) in namespace `{}`: {} {} ({}); the coordinator needs to create Secrets there",
                            secret.name, self.namespace, s.code, s.reason, s.message
                        ));
                    }
                    Ok(Err(e)) => return Submitted::NotSent(error_chain(&e)),
                    Err(_) => {
                        return Submitted::NotSent(format!(
                            "the API server gave no answer within {}s",
                            self.timeout.as_secs()
                        ));
                    }
                }
            }
            self.callbacks.submitting(envelope.job);
            let created =
                tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &job)).await;
            let name = envelope.job.executor_name();
            match created {
                Err(_) => Submitted::NoAnswer(format!(
                    "the API server gave no answer within {}s",
                    self.timeout.as_secs()
                )),
                Ok(Ok(made)) => {
                    let version = made.metadata.resource_version.unwrap_or_default();
                    self.callbacks.accepted(envelope.job);
                    self.watch(api, name, version);
                    Submitted::Accepted { done: false }
                }
                // Already submitted (by an attempt whose answer was lost): the same job.
                Ok(Err(kube::Error::Api(s))) if s.is_already_exists() => {
                    self.callbacks.accepted(envelope.job);
                    Submitted::Accepted { done: false }
                }
                Ok(Err(kube::Error::Api(s))) => Submitted::Refused(format!(
                    "the API server refused Job `{name}` in namespace `{}`: {} {} ({})",
                    self.namespace, s.code, s.reason, s.message
                )),
                Ok(Err(e)) if never_sent(&e) => Submitted::NotSent(error_chain(&e)),
                Ok(Err(e)) => Submitted::NoAnswer(error_chain(&e)),
            }
        })
    }

    fn status<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Found> {
        Box::pin(async move {
            let report = self.callbacks.found(envelope.job, self.timeout * 2);
            // The runner's final report is the result: no need to look at the Job.
            if is_final(&report) {
                return report;
            }
            match self.job_state(envelope).await {
                Ok(seen) => combine(seen, report),
                Err(why) => Found::Unknown(format!("cannot ask the API server: {why}")),
            }
        })
    }

    fn cancel<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move {
            let api = self.api().await?;
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            match api.delete(&envelope.job.executor_name(), &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                Err(e) => Err(error_chain(&e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "spillway-x"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_jobs_conditions_and_pod_counts_give_its_phase() {
        assert_eq!(phase(&job(serde_json::json!({}))), JobPhase::Active);
        assert_eq!(
            phase(&job(serde_json::json!({"active": 1}))),
            JobPhase::Active
        );
        assert_eq!(
            phase(&job(serde_json::json!({"succeeded": 1}))),
            JobPhase::Complete
        );
        let failed = phase(&job(serde_json::json!({"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}
        ]})));
        assert_eq!(
            failed,
            JobPhase::Failed(
                "DeadlineExceeded: Job was active longer than specified deadline".into()
            )
        );
        // A condition that is not (yet) true says nothing.
        assert_eq!(
            phase(&job(
                serde_json::json!({"conditions": [{"type": "Complete", "status": "False"}]})
            )),
            JobPhase::Active
        );
    }

    #[test]
    fn the_runners_report_is_the_result_and_a_silent_end_is_a_failure() {
        let ok = Found::Finished {
            succeeded: true,
            detail: String::new(),
        };
        assert_eq!(combine(Seen::Exists(JobPhase::Complete), ok.clone()), ok);
        // A report outlives its Job (ttlSecondsAfterFinished).
        assert_eq!(combine(Seen::Deleted, ok.clone()), ok);
        assert_eq!(combine(Seen::Deleted, Found::Running), Found::Absent);
        assert_eq!(
            combine(
                Seen::Exists(JobPhase::Active),
                Found::Unknown("no report".into())
            ),
            Found::Running
        );
        let silent = combine(Seen::Exists(JobPhase::Complete), Found::Running);
        assert!(
            matches!(silent, Found::Finished { succeeded: false, detail } if detail.contains("never reported"))
        );
        let oom = combine(
            Seen::Exists(JobPhase::Failed("BackoffLimitExceeded".into())),
            Found::Running,
        );
        assert!(
            matches!(oom, Found::Finished { succeeded: false, detail } if detail.contains("BackoffLimitExceeded"))
        );
        let stopped = Found::Stopped("deadline".into());
        assert_eq!(
            combine(Seen::Exists(JobPhase::Failed("x".into())), stopped.clone()),
            stopped
        );
    }

    #[test]
    fn label_values_are_kept_valid() {
        assert_eq!(label_value("fire-detection"), "fire-detection");
        assert_eq!(label_value("-a b/c-"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
