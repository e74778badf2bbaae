//! The async shell around `spillway_proto::uplink::Link`: it connects with mutual TLS, says
//! Hello, sends load reports as datagrams, job updates and deployment acks on the control
//! stream, applies deployments and answers requests. Decisions (when to connect, when to
//! report, which connection counts, when the link is usable, which deployment goes next) are
//! the state machine's; this file only carries them out. Each connection has its own task,
//! which owns the control stream's writing half, and a reader task.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use spillway_link::stream::{FrameReader, send};
use spillway_proto::JobId;
use spillway_proto::load::{DATAGRAM_BUDGET, LoadReport};
use spillway_proto::uplink::{Action, Input, Link, LinkConfig};
use spillway_proto::wire::{
    AgentFrame, COORDINATOR_SERVER_NAME, Capacity, CoordinatorFrame, DeployAck, GuestDone, Hello,
    JobPhase, JobUpdate, MAX_STREAM_FRAME, OfferReason, Outcome, PROTOCOL, Request,
};
use tokio::sync::{broadcast, mpsc};

use super::{requests, transfers};
use crate::engine::{AgentHandle, Answer, JobEvent, MeshOut};
use crate::journal::{JobRecord, JobState};
use crate::scheduler::Demand;
use spillway_link::membership::{Membership, client_endpoint, resolve};

/// Jobs sent to the coordinator after every (re)connection, newest first.
const RESYNC_JOBS: usize = 500;

/// What the connection tasks report to the link loop, tagged with the attempt they belong to so
/// the state machine can ignore reports from an abandoned connection.
enum LinkEvent {
    /// Connected; `out` feeds the connection's control stream (its task ends when the loop
    /// drops it).
    Connected {
        generation: u64,
        conn: quinn::Connection,
        out: mpsc::UnboundedSender<AgentFrame>,
    },
    Frame {
        generation: u64,
        frame: CoordinatorFrame,
    },
    Lost {
        generation: u64,
        reason: String,
    },
    Deployed(DeployAck),
    /// A frame for the control stream, built by a task (hand-overs upload blobs first).
    Send {
        generation: u64,
        frame: AgentFrame,
    },
}

/// The connection in use: what the loop needs to reach its task.
struct Current {
    generation: u64,
    conn: quinn::Connection,
    out: mpsc::UnboundedSender<AgentFrame>,
}

/// The journal record of a job as the mesh sees it.
/// `origin` names the node a guest job was run for.
pub fn job_update(
    record: &JobRecord,
    data_root: &std::path::Path,
    origin: Option<String>,
) -> JobUpdate {
    let (phase, outputs, reason) = match &record.state {
        JobState::Queued => (JobPhase::Queued, vec![], None),
        JobState::Running => (JobPhase::Running, vec![], None),
        JobState::Ran { .. } => (JobPhase::Delivering, vec![], None),
        JobState::Succeeded { outputs } => (
            JobPhase::Succeeded,
            outputs
                .iter()
                .map(|o| {
                    std::path::Path::new(o)
                        .strip_prefix(data_root)
                        .map_or_else(|_| o.clone(), |p| p.display().to_string())
                })
                .collect(),
            None,
        ),
        JobState::Failed { reason } => (JobPhase::Failed, vec![], Some(reason.clone())),
        JobState::Offered | JobState::Handed => (JobPhase::Handed, vec![], None),
    };
    let input = Some(record.event.source());
    JobUpdate {
        id: record.id,
        function: record.function.clone(),
        phase,
        input,
        outputs,
        reason,
        attempt: record.attempt,
        queued_at_ms: record.queued_at_ms,
        started_at_ms: record.started_at_ms,
        finished_at_ms: record.finished_at_ms,
        origin,
    }
}

/// Keeps this agent linked to its coordinator until `shutdown` resolves. Never fails: a
/// coordinator that is away is retried with backoff while the agent works on.
pub async fn run(
    mut membership: Membership,
    agent: AgentHandle,
    capacity: Demand,
    restart: Option<crate::upgrade::RestartRequest>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let config = agent.config().clone();
    let mut upgrades = super::upgrades::Upgrades::new(config.state_dir.clone(), restart);
    let node = config.node_name.clone();
    // The key of a certificate renewal under way, with the connection it was asked on.
    let mut renewal: Option<(u64, rcgen::KeyPair)> = None;
    // The link was closed on purpose, to connect again with a renewed certificate.
    let mut closed_to_renew = false;
    // Why linking fails, as last logged (each new reason is logged once).
    let mut failing_since: Option<String> = None;
    let mut member_tls = match spillway_link::tls::member(
        &membership.ca_der,
        membership.cert_der.clone(),
        membership.key_der.clone(),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "the saved mesh identity is unusable ({e}); running standalone. Join again with `spillway-agent join`"
            );
            return shutdown.await;
        }
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut hasher);
    let deployed = super::deployment::load(&config.state_dir).map_or([0; 32], |d| d.digest());
    let mut link = Link::new(
        LinkConfig::default(),
        Instant::now(),
        hasher.finish(),
        deployed,
    );
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<LinkEvent>();
    let mut jobs = agent.subscribe();
    let mut load = agent.load.clone();
    let mut condition = agent.condition.clone();
    // Whether the coordinator reads `Condition` frames (1.4 and later), from its `Welcome`.
    let mut takes_condition = false;
    // Whether it orders upgrades and reads their reports (1.5 and later).
    let mut takes_upgrades = false;
    let mut current: Option<Current> = None;
    let mut reports = Reports::default();
    let (mesh_tx, mut mesh_rx) = mpsc::unbounded_channel::<MeshOut>();
    tokio::pin!(shutdown);

    // Actions the state machine asked for, from `poll` and from every `handle`.
    let mut actions: Vec<Action> = Vec::new();
    loop {
        actions.extend(link.poll(Instant::now()));
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Connect { generation } => {
                    let (coordinator, tls) = (membership.coordinator.clone(), member_tls.clone());
                    tokio::spawn(connection(generation, coordinator, tls, events_tx.clone()));
                }
                Action::SendHello { deployed } => {
                    if let Some(c) = &current {
                        let _ = c.out.send(hello(&config, capacity, deployed));
                    }
                }
                Action::SendReport => {
                    if let Some(c) = &current {
                        reports.send(&c.conn, load.borrow().clone());
                    }
                }
                Action::Close(reason) => {
                    if let Some(c) = current.take() {
                        c.conn.close(0u32.into(), reason.as_bytes());
                    }
                }
                Action::Linked => {
                    failing_since = None;
                    tracing::info!(coordinator = %membership.coordinator, "linked to the coordinator");
                    if let Some(c) = &current {
                        resync_jobs(&agent, &c.out);
                        resume_handovers(Connected::new(c, &agent, &events_tx));
                        if takes_condition {
                            let _ = c
                                .out
                                .send(AgentFrame::Condition(*condition.borrow_and_update()));
                        }
                    }
                    // A binary on trial is committed by the link, whoever the coordinator is.
                    let report = upgrades.linked();
                    if let (Some(c), Some(report), true) = (&current, report, takes_upgrades) {
                        let _ = c.out.send(report);
                    }
                    agent.set_mesh(Some(mesh_tx.clone()));
                }
                Action::Unlinked(reason) => {
                    agent.set_mesh(None);
                    if std::mem::take(&mut closed_to_renew) {
                        tracing::info!(coordinator = %membership.coordinator, "linking again with the renewed certificate");
                    } else {
                        tracing::warn!(coordinator = %membership.coordinator, "link to the coordinator lost ({reason}); working on alone and retrying");
                    }
                }
                Action::Apply(deployment) => {
                    let (agent, events) = (agent.clone(), events_tx.clone());
                    tokio::spawn(async move {
                        if let Some(ack) = agent.deploy(*deployment).await {
                            let _ = events.send(LinkEvent::Deployed(ack));
                        }
                    });
                }
                Action::SendDeployAck(ack) => {
                    if let Some(c) = &current {
                        let _ = c.out.send(AgentFrame::Deployed(ack));
                    }
                }
            }
        }
        let wake = tokio::time::Instant::from_std(link.next_wakeup());
        let trial_ends = upgrades.trial_ends().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(wake) => {}
            () = async { tokio::time::sleep_until(trial_ends.unwrap_or(wake)).await }, if trial_ends.is_some() => {
                upgrades.trial_failed();
            }
            Some(event) = events_rx.recv() => {
                let now = Instant::now();
                match event {
                    LinkEvent::Connected { generation, conn, out } => {
                        let acts = link.handle(now, Input::Connected { generation });
                        // Only the attempt the machine waits for is kept; dropping any other
                        // ends its task, which closes it.
                        if acts.iter().any(|a| matches!(a, Action::SendHello { .. })) {
                            spawn_requests(conn.clone(), agent.clone());
                            current = Some(Current { generation, conn, out });
                        }
                        actions.extend(acts);
                    }
                    LinkEvent::Frame { generation, frame } => match frame {
                        CoordinatorFrame::Welcome(w) => {
                            takes_condition = w.version.has(PROTOCOL.major, 4);
                            takes_upgrades = w.version.has(PROTOCOL.major, 5);
                            let report_interval = std::time::Duration::from_millis(w.report_interval_ms.into());
                            actions.extend(link.handle(now, Input::Welcomed { generation, report_interval }));
                            reports.last_sent = LoadReport::default();
                        }
                        CoordinatorFrame::Refused { reason } => {
                            if generation == link.generation() {
                                tracing::error!("the coordinator refused this agent: {reason}");
                            }
                            actions.extend(link.handle(now, Input::Refused { generation, reason }));
                        }
                        CoordinatorFrame::Deploy(d) => {
                            let deployment = Box::new(d);
                            actions.extend(link.handle(now, Input::Deployment { generation, deployment }));
                        }
                        CoordinatorFrame::RenewCertificate => {
                            if let Some(c) = current.as_ref().filter(|c| c.generation == generation) {
                                match spillway_link::identity::new_request(&node) {
                                    Ok((key, csr_der)) => {
                                        renewal = Some((generation, key));
                                        let _ = c.out.send(AgentFrame::RenewCertificate { csr_der });
                                    }
                                    Err(e) => tracing::warn!("cannot make a key to renew this node's certificate: {e}"),
                                }
                            }
                        }
                        CoordinatorFrame::Renewed { cert_der, expires_at_ms } => {
                            let key = renewal.take().filter(|(g, _)| *g == generation).map(|(_, k)| k);
                            match key.map(|k| adopt_renewal(&config.state_dir, &membership, cert_der, &k)) {
                                Some(Ok((renewed, tls))) => {
                                    membership = renewed;
                                    member_tls = tls;
                                    tracing::info!(expires_at_ms, "certificate renewed; connecting again with it");
                                    // The coordinator retires the old certificate once this
                                    // one connects.
                                    if let Some(c) = current.as_ref().filter(|c| c.generation == generation) {
                                        closed_to_renew = true;
                                        c.conn.close(0u32.into(), b"certificate renewed");
                                    }
                                }
                                Some(Err(why)) => tracing::warn!("keeping the current certificate: {why}"),
                                None => tracing::warn!("a renewed certificate arrived that this agent did not ask for on this connection; ignored"),
                            }
                        }
                        CoordinatorFrame::Upgrade(order) => {
                            if let Some(c) = current.as_ref().filter(|c| c.generation == generation) {
                                let cx = Connected::new(c, &agent, &events_tx);
                                tracing::info!(version = %order.version, "the coordinator orders an upgrade");
                                upgrades.order(c.conn.clone(), membership.ca_der.clone(), order, move |f| cx.send(f));
                            }
                        }
                        CoordinatorFrame::Trust { cas } => {
                            if let Some(c) = current.as_ref().filter(|c| c.generation == generation) {
                                let presented = spillway_link::tls::peer_chain(&c.conn);
                                match super::trust::adopt(&config.state_dir, &membership, &cas, &presented) {
                                    Ok(super::trust::Adopted::Changed(next, tls)) => {
                                        tracing::info!(cas = cas.len(), "the mesh CAs changed (a CA rotation); trusting the ones the coordinator sent");
                                        membership = next;
                                        member_tls = tls;
                                    }
                                    Ok(super::trust::Adopted::Unchanged) => {}
                                    Err(why) => tracing::warn!("keeping the CAs this node trusts; the coordinator sent others: {why}"),
                                }
                                let cas = super::trust::fingerprints(&membership.ca_der);
                                let _ = c.out.send(AgentFrame::Trusted { cas });
                            }
                        }
                        CoordinatorFrame::RenewRefused { reason } => {
                            renewal = None;
                            tracing::warn!("the coordinator refused to renew this node's certificate: {reason}");
                        }
                        CoordinatorFrame::Accepted(_)
                        | CoordinatorFrame::Declined { .. }
                        | CoordinatorFrame::Place(_)
                        | CoordinatorFrame::Deliver { .. }
                        | CoordinatorFrame::Return { .. }
                        | CoordinatorFrame::GuestAck(_) => {
                            if let Some(c) = current.as_ref().filter(|c| c.generation == generation) {
                                on_handover_frame(Connected::new(c, &agent, &events_tx), frame);
                            }
                        }
                    },
                    LinkEvent::Deployed(ack) => actions.extend(link.handle(now, Input::Deployed(ack))),
                    LinkEvent::Send { generation, frame } => {
                        // An offer leaves only if its job still waits for an answer, checked by
                        // the one task that feeds the stream: an answer that arrived while its
                        // input was uploading (and was acknowledged) must not be followed by a
                        // stale offer.
                        let stale = matches!(&frame, AgentFrame::Offer(o) if !matches!(
                            agent.journal().get(o.id).ok().flatten().map(|r| r.state),
                            Some(JobState::Offered | JobState::Handed)
                        ));
                        if !stale
                            && link.is_steady()
                            && let Some(c) = current.as_ref().filter(|c| c.generation == generation)
                        {
                            let _ = c.out.send(frame);
                        }
                    }
                    LinkEvent::Lost { generation, reason } => {
                        // Attempts that fail before linking say why, once per reason: a node
                        // the coordinator no longer trusts must not fail in silence.
                        if !link.is_steady() && generation == link.generation() && failing_since.as_deref() != Some(reason.as_str()) {
                            tracing::warn!(coordinator = %membership.coordinator, "cannot link to the coordinator: {reason}; retrying with backoff");
                            failing_since = Some(reason.clone());
                        }
                        actions.extend(link.handle(now, Input::Lost { generation, reason }));
                    }
                }
            }
            Some(out) = mesh_rx.recv() => {
                let MeshOut::Offer { record, reason, local_wait_ms, run_ms } = out;
                // Not linked: the job stays `Offered` and is offered again once the link is up.
                if link.is_steady() && let Some(c) = &current {
                    let cx = Connected::new(c, &agent, &events_tx);
                    tokio::spawn(async move {
                        match transfers::offer(&cx.conn, &cx.agent, &record, reason, (local_wait_ms, run_ms)).await {
                            Ok(frame) => cx.send(frame),
                            Err(e) => tracing::warn!(job = %record.id.short(), "offer not sent ({e}); it is offered again after the next reconnection"),
                        }
                    });
                }
            }
            job = jobs.recv() => match job {
                Ok(event) => {
                    if link.is_steady() && let Some(c) = &current {
                        send_job(&agent, &c.out, &event);
                        if let JobEvent::Finished { id, .. } = &event {
                            send_guest_result(Connected::new(c, &agent, &events_tx), *id);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            changed = condition.changed() => {
                if changed.is_err() { break; }
                let now = *condition.borrow_and_update();
                if takes_condition && link.is_steady() && let Some(c) = &current {
                    let _ = c.out.send(AgentFrame::Condition(now));
                }
            }
            changed = load.changed() => {
                if changed.is_err() { break; }
                if load.borrow().differs_significantly(&reports.last_sent) {
                    actions.extend(link.handle(Instant::now(), Input::LoadChanged));
                }
            }
        }
    }
    agent.set_mesh(None);
    if let Some(c) = current {
        c.conn.close(0u32.into(), b"agent shutting down");
    }
}

/// Checks a renewed certificate (it must certify the key this agent made for it, and make a
/// working client configuration), then stores it with that key; the membership and client
/// configuration to connect with from now on.
fn adopt_renewal(
    state_dir: &std::path::Path,
    current: &Membership,
    cert_der: Vec<u8>,
    key: &rcgen::KeyPair,
) -> Result<(Membership, quinn::ClientConfig), String> {
    use rcgen::PublicKeyData;
    if !spillway_link::membership::certifies(&cert_der, &key.subject_public_key_info()) {
        return Err("the renewed certificate is not for the key this agent sent".into());
    }
    let renewed = Membership {
        cert_der,
        key_der: key.serialize_der(),
        ..current.clone()
    };
    let tls = spillway_link::tls::member(
        &renewed.ca_der,
        renewed.cert_der.clone(),
        renewed.key_der.clone(),
    )
    .map_err(|e| format!("the renewed certificate is unusable: {e}"))?;
    renewed
        .save_renewed(state_dir)
        .map_err(|e| format!("cannot store the renewed certificate: {e}"))?;
    Ok((renewed, tls))
}

/// Load reports, sent as datagrams: numbered, stamped, with this machine's CPU and memory.
#[derive(Default)]
struct Reports {
    seq: u64,
    last_sent: LoadReport,
    sys: Option<sysinfo::System>,
}

impl Reports {
    fn send(&mut self, conn: &quinn::Connection, mut report: LoadReport) {
        self.seq += 1;
        report.seq = self.seq;
        report.sent_at_ms = crate::journal::now_ms();
        if self.sys.is_none() {
            self.sys = sysinfo::System::new().ok();
        }
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            report.cpu_permille = (sys.global_cpu_usage() * 10.0) as u16;
            report.memory_used = sys.used_memory();
            report.memory_total = sys.total_memory();
        }
        let budget = conn
            .max_datagram_size()
            .unwrap_or(DATAGRAM_BUDGET)
            .min(DATAGRAM_BUDGET);
        let _ = conn.send_datagram(report.to_datagram(budget).into());
        self.last_sent = report;
    }
}

/// One connection attempt: connects, then writes the control stream from `out` until the loop
/// lets go of it or the stream breaks. Its reader is a task of its own.
async fn connection(
    generation: u64,
    coordinator: String,
    tls: quinn::ClientConfig,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let (conn, mut tx, rx) = match connect(&coordinator, tls).await {
        Ok(connected) => connected,
        Err(reason) => {
            let _ = events.send(LinkEvent::Lost { generation, reason });
            return;
        }
    };
    spawn_reader(events.clone(), generation, rx);
    let (out, mut frames) = mpsc::unbounded_channel();
    let connected = LinkEvent::Connected {
        generation,
        conn: conn.clone(),
        out,
    };
    if events.send(connected).is_err() {
        return conn.close(0u32.into(), b"agent shutting down");
    }
    while let Some(frame) = frames.recv().await {
        if let Err(e) = send(&mut tx, &frame).await {
            let reason = format!("cannot write to the coordinator: {e}");
            let _ = events.send(LinkEvent::Lost { generation, reason });
            break;
        }
    }
    conn.close(0u32.into(), b"closed");
}

/// What a hand-over task needs of the connection it was started on.
#[derive(Clone)]
struct Connected {
    conn: quinn::Connection,
    agent: AgentHandle,
    events: mpsc::UnboundedSender<LinkEvent>,
    generation: u64,
}

impl Connected {
    fn new(
        current: &Current,
        agent: &AgentHandle,
        events: &mpsc::UnboundedSender<LinkEvent>,
    ) -> Self {
        Self {
            conn: current.conn.clone(),
            agent: agent.clone(),
            events: events.clone(),
            generation: current.generation,
        }
    }

    /// Queues a frame for this connection's control stream (dropped if the connection is gone).
    fn send(&self, frame: AgentFrame) {
        let _ = self.events.send(LinkEvent::Send {
            generation: self.generation,
            frame,
        });
    }
}

/// After a (re)connection: offers still unanswered, and jobs handed over whose result has not
/// arrived, are offered again (the coordinator answers from its ledger); guest results not yet
/// acknowledged are sent again.
fn resume_handovers(cx: Connected) {
    tokio::spawn(async move {
        // `Handed` jobs too: the coordinator answers from its ledger, and one that lost its
        // state takes them anew instead of leaving them waiting forever.
        let offered: Vec<JobRecord> = cx
            .agent
            .journal()
            .unfinished()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| matches!(r.state, JobState::Offered | JobState::Handed))
            .collect();
        for record in offered {
            // No prediction after a reconnection: only a free slot elsewhere takes a new one.
            let offer = transfers::offer(
                &cx.conn,
                &cx.agent,
                &record,
                OfferReason::Rescheduler,
                (0, 0),
            );
            match offer.await {
                Ok(frame) => cx.send(frame),
                Err(e) => tracing::warn!(job = %record.id.short(), "offer not sent again: {e}"),
            }
        }
        for (id, _) in cx.agent.journal().guests().unwrap_or_default() {
            send_guest_result(cx.clone(), id);
        }
    });
}

/// Sends a guest job's result once it is final (outputs uploaded first).
fn send_guest_result(cx: Connected, id: JobId) {
    tokio::spawn(async move {
        match transfers::guest_result(&cx.conn, &cx.agent, id).await {
            Ok(Some(frame)) => cx.send(frame),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %id.short(), "result not sent ({e}); sent again after the next reconnection")
            }
        }
    });
}

/// The coordinator's hand-over messages: answers to this node's offers, placements of other
/// nodes' jobs, acknowledgements. Each runs as its own task (they may move files).
fn on_handover_frame(cx: Connected, frame: CoordinatorFrame) {
    tokio::spawn(async move {
        let agent = &cx.agent;
        let ack = |id| cx.send(AgentFrame::HandoverAck(id));
        match frame {
            CoordinatorFrame::Accepted(id) => {
                agent.answer(id, Answer::Accepted).await;
            }
            CoordinatorFrame::Declined { id, reason } => {
                agent.answer(id, Answer::Declined(reason)).await;
            }
            CoordinatorFrame::Return { id, reason }
                if agent.answer(id, Answer::Returned(reason.clone())).await =>
            {
                ack(id);
            }
            CoordinatorFrame::Deliver { id, outcome } => {
                let answer = match outcome {
                    Outcome::Succeeded { outputs } => {
                        match transfers::fetch_outputs(&cx.conn, agent, id, outputs).await {
                            Ok(a) => a,
                            Err(e) => {
                                tracing::warn!(job = %id.short(), "cannot fetch the outputs of a job run elsewhere ({e}); asking again after the next reconnection");
                                return;
                            }
                        }
                    }
                    Outcome::Failed { reason } => Answer::Failed(reason),
                };
                if agent.answer(id, answer).await {
                    ack(id);
                }
            }
            CoordinatorFrame::Place(placement) => {
                let id = placement.id;
                match transfers::host(&cx.conn, agent, placement).await {
                    Ok(_) => send_guest_result(cx.clone(), id),
                    Err(reason) => {
                        tracing::warn!(job = %id.short(), "cannot take a placed job: {reason}");
                        cx.send(AgentFrame::GuestDone(GuestDone {
                            id,
                            attempt: 0,
                            outcome: Outcome::Failed { reason },
                        }));
                    }
                }
            }
            CoordinatorFrame::GuestAck(id) => agent.guest_acknowledged(id),
            _ => {}
        }
    });
}

fn hello(
    config: &spillway_agent_config::AgentConfig,
    capacity: Demand,
    deployed: [u8; 32],
) -> AgentFrame {
    AgentFrame::Hello(Hello {
        version: PROTOCOL,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        cluster_id: config.cluster_id.clone(),
        labels: config.labels.clone(),
        capacity: Capacity {
            cpu_millis: capacity.cpu.0,
            memory_bytes: capacity.memory.0,
        },
        deployment: deployed,
        arch: std::env::consts::ARCH.into(),
    })
}

async fn connect(
    coordinator: &str,
    tls: quinn::ClientConfig,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), String> {
    let addr = resolve(coordinator).await.map_err(|e| e.to_string())?;
    let endpoint = client_endpoint(&addr).map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(tls, addr, COORDINATOR_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| {
            super::trust::explain_connect_error(&format!("cannot connect to {coordinator}: {e}"))
        })?;
    let (tx, rx) = conn.open_bi().await.map_err(|e| e.to_string())?;
    Ok((conn, tx, rx))
}

fn spawn_reader(events: mpsc::UnboundedSender<LinkEvent>, generation: u64, rx: quinn::RecvStream) {
    tokio::spawn(async move {
        let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
        loop {
            let event = match reader.next::<CoordinatorFrame>().await {
                Ok(Some(frame)) => LinkEvent::Frame { generation, frame },
                Ok(None) => LinkEvent::Lost {
                    generation,
                    reason: "the coordinator closed the link".into(),
                },
                Err(e) => LinkEvent::Lost {
                    generation,
                    reason: e.to_string(),
                },
            };
            let last = matches!(event, LinkEvent::Lost { .. });
            if events.send(event).is_err() || last {
                return;
            }
        }
    });
}

/// Answers the coordinator's requests, each on its own stream.
fn spawn_requests(conn: quinn::Connection, agent: AgentHandle) {
    let config = Arc::new(agent.config().clone());
    tokio::spawn(async move {
        while let Ok((mut tx, rx)) = conn.accept_bi().await {
            let (config, agent) = (config.clone(), agent.clone());
            tokio::spawn(async move {
                let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
                let Ok(Some(req)) = reader.next::<Request>().await else {
                    return;
                };
                let answer = tokio::task::spawn_blocking(move || {
                    requests::answer(&config, agent.journal(), req)
                })
                .await
                .unwrap_or_else(|e| spillway_proto::wire::Response::Error(e.to_string()));
                if send(&mut tx, &answer).await.is_ok() {
                    let _ = tx.finish();
                }
            });
        }
    });
}

fn send_job(agent: &AgentHandle, out: &mpsc::UnboundedSender<AgentFrame>, event: &JobEvent) {
    let id = match event {
        JobEvent::Queued { id, .. }
        | JobEvent::Started { id, .. }
        | JobEvent::Finished { id, .. } => *id,
    };
    let Ok(Some(record)) = agent.journal().get(id) else {
        return;
    };
    let origin = agent.journal().guest(id).ok().flatten().map(|g| g.origin);
    let update = job_update(&record, &agent.config().data_root, origin);
    let _ = out.send(AgentFrame::Job(update));
}

/// After a (re)connection the coordinator may have missed updates: send the recent jobs.
fn resync_jobs(agent: &AgentHandle, out: &mpsc::UnboundedSender<AgentFrame>) {
    // Through the journal's indexes: what is under way and what ended last, never every job.
    let (Ok(mut records), Ok(ended)) = (
        agent.journal().unfinished(),
        agent.journal().recently_finished(RESYNC_JOBS),
    ) else {
        return;
    };
    records.extend(ended);
    records.sort_by_key(|r| std::cmp::Reverse(r.queued_at_ms));
    records.truncate(RESYNC_JOBS);
    let root = agent.config().data_root.clone();
    for r in records.iter().rev() {
        let origin = agent.journal().guest(r.id).ok().flatten().map(|g| g.origin);
        if out
            .send(AgentFrame::Job(job_update(r, &root, origin)))
            .is_err()
        {
            return;
        }
    }
}
