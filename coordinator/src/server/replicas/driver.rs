//! Runs each placement on a replica: builds the [`Envelope`], submits it through the replica's
//! [`Backend`], and feeds every answer to the sans-IO [`Attempt`], whose verdict goes back to the
//! hand-over ledger (finished, moved on, or failed). The ledger holds the lease: an attempt
//! whose lease moved on (a result arrived, the job was placed elsewhere) stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spillway_placement::delegation::{Attempt, Found, Next, ReconcilePolicy};
use spillway_proto::JobId;
use spillway_proto::envelope::Envelope;
use spillway_proto::wire::Outcome;
use tokio::sync::mpsc;

use super::endpoint::Callbacks;
use super::{Backend, backend_for};
use crate::server::State;
use crate::server::metrics::ReplicaOutcome;

/// A placement for the driver.
#[derive(Debug, Clone)]
pub struct Placed {
    pub id: JobId,
    pub replica: String,
    pub attempt: u32,
    /// After a coordinator restart: the submission may have happened, so ask before sending.
    pub resume: bool,
}

/// The driver's handle in the coordinator's state.
#[derive(Debug)]
pub struct Delegations {
    tx: mpsc::UnboundedSender<Placed>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Placed>>>,
    pub callbacks: Arc<Callbacks>,
    pub http: reqwest_tls::Client,
    /// Clients of the `[kubernetes.*]` clusters, made on first use.
    pub kube: Arc<super::kubernetes::KubeClients>,
    /// How often an accepted job is asked about while it runs.
    pub poll: Duration,
}

impl Delegations {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = mpsc::unbounded_channel();
        // The system's CAs verify replicas' HTTPS. A host without them (a minimal root, a
        // container without ca-certificates) still serves: only HTTPS replicas fail, saying why.
        let http = reqwest_tls::Client::builder()
            .connect_timeout(timeout)
            .build()
            .or_else(|e| {
                tracing::warn!(
                    "cannot read the system's CA certificates ({e}): HTTPS to replicas will fail verification until the ca-certificates package is installed"
                );
                reqwest_tls::Client::builder()
                    .connect_timeout(timeout)
                    .tls_certs_only(Vec::new())
                    .build()
            })
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            callbacks: Arc::default(),
            http,
            kube: Arc::default(),
            poll: Duration::from_millis(500),
        })
    }

    /// Queues a placement whose record is already durable (a lease resumed after a restart).
    pub fn place(&self, placed: Placed) {
        let _ = self.tx.send(placed);
    }

    /// Where placements go, for sending them once their hand-over record is durable.
    pub fn placer(&self) -> mpsc::UnboundedSender<Placed> {
        self.tx.clone()
    }
}

/// Runs placements as they come, each on its own task. Started once with the coordinator.
pub async fn run(state: Arc<State>) {
    let Some(mut rx) = state
        .delegations
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    // Placements a previous run left on replicas: their submissions may have happened.
    for (id, replica, attempt) in state.replica_leases() {
        state.delegations.place(Placed {
            id,
            replica,
            attempt,
            resume: true,
        });
    }
    while let Some(placed) = rx.recv().await {
        tokio::spawn(attempt(state.clone(), placed));
    }
}

async fn attempt(state: Arc<State>, placed: Placed) {
    let Placed {
        id,
        replica,
        attempt,
        resume,
    } = placed;
    let Some((def, envelope)) = state.replica_envelope(id, &replica, attempt) else {
        return;
    };
    let backend: Arc<dyn Backend> =
        match backend_for(&def, &replica, &state.config, &state.delegations) {
            Ok(b) => b,
            Err(why) => {
                tracing::warn!(job = %id.short(), replica = %replica, "{why}");
                state.replica_lost(id, &replica, attempt, &why);
                return;
            }
        };
    let timeout = state.config.replicas.timeout;
    // A job that does not finish within its function's timeout (or an hour) after it was
    // accepted is given up on: the replica may be running it still, so it is not sent elsewhere.
    let wait_limit = def.timeout.unwrap_or(Duration::from_secs(3600)) + timeout * 2;
    let mut a = Attempt::new(replica.clone(), ReconcilePolicy::default());
    let mut next = if resume {
        a.maybe_sent = true;
        Next::Reconcile { after_ms: 0 }
    } else {
        state.metrics.replica(&replica, ReplicaOutcome::Placed);
        tracing::info!(job = %id.short(), replica = %replica, attempt, "job placed on a replica");
        let answer = backend.submit(&envelope).await;
        tracing::debug!(job = %id.short(), replica = %replica, ?answer, "replica answered");
        a.submitted(answer)
    };
    let mut accepted_at: Option<Instant> = None;
    loop {
        if !state.replica_holds(id, &replica, attempt) {
            return;
        }
        match next {
            Next::Finished { succeeded, detail } => {
                let outcome = if succeeded {
                    state.metrics.replica(&replica, ReplicaOutcome::Succeeded);
                    match state.replica_outputs(id) {
                        Ok(outputs) => Outcome::Succeeded { outputs },
                        Err(why) => Outcome::Failed {
                            reason: format!("on `{replica}`: {why}"),
                        },
                    }
                } else {
                    state.metrics.replica(&replica, ReplicaOutcome::Failed);
                    tracing::warn!(job = %id.short(), replica = %replica, "the job failed there: {detail}");
                    Outcome::Failed {
                        reason: format!("on `{replica}`: {detail}"),
                    }
                };
                tracing::info!(job = %id.short(), replica = %replica, succeeded, "replica finished the job");
                state.replica_done(id, &replica, outcome);
                return;
            }
            Next::GiveUp(why) => {
                state.metrics.replica(&replica, ReplicaOutcome::Failed);
                tracing::warn!(job = %id.short(), replica = %replica, "{why}");
                state.replica_done(id, &replica, Outcome::Failed { reason: why });
                return;
            }
            Next::Elsewhere(why) => {
                state.metrics.replica(&replica, ReplicaOutcome::FellThrough);
                tracing::warn!(job = %id.short(), replica = %replica, "{why}; trying the next target");
                state.replica_lost(id, &replica, attempt, &why);
                return;
            }
            Next::Reconcile { after_ms } => {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                state.metrics.replica(&replica, ReplicaOutcome::Reconciled);
                let found = settled(&state, id, timeout, backend.status(&envelope).await);
                tracing::debug!(job = %id.short(), replica = %replica, ?found, "reconciled");
                next = a.reconciled(found);
            }
            Next::Wait => {
                let since = *accepted_at.get_or_insert_with(Instant::now);
                if since.elapsed() > wait_limit {
                    next = Next::GiveUp(format!(
                        "`{replica}` took the job but gave no result within {}s; it may still run there, so it was not sent elsewhere",
                        wait_limit.as_secs()
                    ));
                    continue;
                }
                tokio::time::sleep(state.delegations.poll).await;
                next = match backend.status(&envelope).await {
                    // A job the replica took and then lost sight of may have run: not moved.
                    Found::Absent => Next::GiveUp(format!(
                        "`{replica}` took the job and then no longer knew it; it may have run there, so it was not sent elsewhere"
                    )),
                    Found::Unknown(why) => {
                        tracing::debug!(job = %id.short(), replica = %replica, "status unknown: {why}");
                        Next::Wait
                    }
                    found => a.reconciled(found),
                };
            }
        }
    }
}

/// An answer of "never heard of it" that comes before an unanswered request can have ended
/// (twice the request timeout after it was sent) proves nothing: the request may still be on
/// its way.
fn settled(state: &State, id: JobId, timeout: Duration, found: Found) -> Found {
    match found {
        Found::Absent
            if state
                .delegations
                .callbacks
                .since_submitted(id)
                .is_some_and(|since| since < timeout * 2) =>
        {
            Found::Unknown("not known there yet, but the request may still be on its way".into())
        }
        other => other,
    }
}

impl State {
    /// The outputs a replica's executor uploaded for the job, checked against the blob store.
    fn replica_outputs(&self, id: JobId) -> Result<Vec<(String, [u8; 32])>, String> {
        self.delegations
            .callbacks
            .outputs(id)
            .into_iter()
            .map(|o| {
                let digest = super::super::blobs::parse_digest(&o.sha256)
                    .ok_or_else(|| format!("output `{}` has no valid SHA-256", o.name))?;
                if self.blobs.size(&digest).is_none() {
                    return Err(format!(
                        "output `{}` was reported but never uploaded",
                        o.name
                    ));
                }
                Ok((o.name, digest))
            })
            .collect()
    }

    /// The envelope for a job placed on `replica` with lease `attempt`, and its function; `None`
    /// when the lease is no longer that.
    pub fn replica_envelope(
        &self,
        id: JobId,
        replica: &str,
        attempt: u32,
    ) -> Option<(spillway_proto::FunctionDef, Envelope)> {
        let (function, origin, hops, event, input) = self.replica_job(id, replica, attempt)?;
        let record = self.store.function(&function).ok().flatten()?;
        let base = self.public_url();
        let expires_at =
            super::super::now_ms() / 1000 + self.config.replicas.url_ttl.as_secs().max(60);
        let digest = hex::encode(input);
        let input_path = format!("/v1/blobs/{digest}");
        let callback_path = format!("/v1/callbacks/{id}/{attempt}");
        let upload_prefix = format!("/v1/outputs/{id}/{attempt}/");
        let envelope = Envelope {
            spillway: spillway_proto::envelope::ENVELOPE_VERSION,
            job: id,
            function,
            origin,
            hops,
            attempt,
            input: spillway_proto::envelope::InputRef {
                name: event.file_name().to_owned(),
                size: self.blobs.size(&input).unwrap_or(0),
                sha256: digest,
                url: format!(
                    "{base}{input_path}?{}",
                    self.presigner.query("GET", &input_path, expires_at)
                ),
            },
            event,
            callback: format!(
                "{base}{callback_path}?{}",
                self.presigner.query("POST", &callback_path, expires_at)
            ),
            expires_at,
            upload: Some(format!(
                "{base}{upload_prefix}{{name}}?{}",
                self.presigner.query("PUT", &upload_prefix, expires_at)
            )),
            script: record.script_text(),
            variables: record.def.environment.clone().into_iter().collect(),
        };
        Some((record.def, envelope))
    }

    /// The coordinator's API as replicas reach it.
    pub fn public_url(&self) -> String {
        self.config
            .replicas
            .public_url
            .clone()
            .unwrap_or_else(|| self.api_url())
    }
}
