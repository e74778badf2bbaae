//! The async shell around `spillway_proto::link::Link`: it connects with mutual TLS, says
//! Hello, sends load reports as datagrams, job updates and deployment acks on the control
//! stream, applies deployments and answers requests. Decisions (when to connect, when to
//! report) are the state machine's; this file only carries them out.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use spillway_link::stream::{FrameReader, send};
use spillway_proto::JobId;
use spillway_proto::link::{Action, Input, Link, LinkConfig};
use spillway_proto::load::{DATAGRAM_BUDGET, LoadReport};
use spillway_proto::wire::{
    AgentFrame, COORDINATOR_SERVER_NAME, Capacity, CoordinatorFrame, DeployAck, GuestDone, Hello,
    JobPhase, JobUpdate, MAX_STREAM_FRAME, OfferReason, Outcome, PROTOCOL, Request,
};
use tokio::sync::{broadcast, mpsc};

use super::{handover, requests};
use crate::engine::{AgentHandle, Answer, JobEvent, MeshOut};
use crate::journal::{JobRecord, JobState};
use crate::scheduler::Demand;
use spillway_link::membership::{Membership, client_endpoint, resolve};

/// Jobs sent to the coordinator after every (re)connection, newest first.
const RESYNC_JOBS: usize = 500;

/// What the connection tasks report to the link loop, tagged with the attempt they belong to so
/// reports from an abandoned connection are ignored.
enum LinkEvent {
    Connected {
        generation: u64,
        conn: quinn::Connection,
        tx: quinn::SendStream,
    },
    Frame {
        generation: u64,
        frame: CoordinatorFrame,
    },
    Lost {
        generation: u64,
        reason: String,
    },
    Deployed {
        generation: u64,
        ack: DeployAck,
    },
    /// A frame for the control stream, built by a task (hand-overs upload blobs first).
    Send {
        generation: u64,
        frame: AgentFrame,
    },
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
    membership: Membership,
    agent: AgentHandle,
    capacity: Demand,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let config = agent.config().clone();
    let node = config.node_name.clone();
    let member_tls = match spillway_link::tls::member(
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
    let mut link = Link::new(LinkConfig::default(), Instant::now(), hasher.finish());
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<LinkEvent>();
    let mut jobs = agent.subscribe();
    let mut load = agent.load.clone();
    let mut generation = 0u64;
    let mut conn: Option<quinn::Connection> = None;
    let mut tx: Option<quinn::SendStream> = None;
    let mut deployed = super::deployment::load(&config.state_dir).map_or([0; 32], |d| d.digest());
    let mut last_sent = LoadReport::default();
    let mut seq = 0u64;
    let mut sys = sysinfo::System::new().ok();
    let mut was_steady = false;
    let (mesh_tx, mut mesh_rx) = mpsc::unbounded_channel::<MeshOut>();
    // Deployments are applied one after the other, in the order they came: two sent in quick
    // succession must not be applied (and acknowledged) the other way round.
    let (deploy_tx, mut deploy_rx) =
        mpsc::unbounded_channel::<(u64, spillway_proto::wire::Deployment)>();
    let deployer = {
        let (agent, events) = (agent.clone(), events_tx.clone());
        tokio::spawn(async move {
            while let Some((generation, d)) = deploy_rx.recv().await {
                if let Some(ack) = agent.deploy(d).await {
                    let _ = events.send(LinkEvent::Deployed { generation, ack });
                }
            }
        })
    };
    tokio::pin!(shutdown);

    // Actions the state machine asked for, from `poll` and from every `handle`.
    let mut actions: Vec<Action> = Vec::new();
    loop {
        actions.extend(link.poll(Instant::now()));
        actions.reverse();
        while let Some(action) = actions.pop() {
            match action {
                Action::Connect => {
                    generation += 1;
                    let (events, coordinator, tls, generation) = (
                        events_tx.clone(),
                        membership.coordinator.clone(),
                        member_tls.clone(),
                        generation,
                    );
                    tokio::spawn(async move {
                        let event = match connect(&coordinator, tls).await {
                            Ok((conn, tx, rx)) => {
                                spawn_reader(events.clone(), generation, rx);
                                LinkEvent::Connected {
                                    generation,
                                    conn,
                                    tx,
                                }
                            }
                            Err(reason) => LinkEvent::Lost { generation, reason },
                        };
                        let _ = events.send(event);
                    });
                }
                Action::SendHello => {
                    send_hello(&mut tx, &config, capacity, deployed, &mut link).await;
                }
                Action::SendReport => {
                    let mut report = load.borrow().clone();
                    seq += 1;
                    report.seq = seq;
                    report.sent_at_ms = crate::journal::now_ms();
                    if let Some(sys) = sys.as_mut() {
                        sys.refresh_cpu_usage();
                        sys.refresh_memory();
                        report.cpu_permille = (sys.global_cpu_usage() * 10.0) as u16;
                        report.memory_used = sys.used_memory();
                        report.memory_total = sys.total_memory();
                    }
                    if let Some(c) = &conn {
                        let budget = c
                            .max_datagram_size()
                            .unwrap_or(DATAGRAM_BUDGET)
                            .min(DATAGRAM_BUDGET);
                        let _ = c.send_datagram(report.to_datagram(budget).into());
                    }
                    last_sent = report;
                }
                Action::Close(reason) => {
                    if let Some(c) = conn.take() {
                        c.close(0u32.into(), reason.as_bytes());
                    }
                    tx = None;
                }
            }
        }
        if link.is_steady() != was_steady {
            was_steady = link.is_steady();
            if was_steady {
                tracing::info!(coordinator = %membership.coordinator, "linked to the coordinator");
                resync_jobs(&agent, tx.as_mut()).await;
                if let Some(c) = &conn {
                    resume_handovers(Connected::new(c, &agent, &events_tx, generation));
                }
                agent.set_mesh(Some(mesh_tx.clone()));
            } else {
                agent.set_mesh(None);
                tracing::warn!(coordinator = %membership.coordinator, "link to the coordinator lost ({}); working on alone and retrying", link.last_error().unwrap_or("?"));
            }
        }
        let wake = tokio::time::Instant::from_std(link.next_wakeup());
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(wake) => {}
            Some(event) = events_rx.recv() => match event {
                LinkEvent::Connected { generation: g, conn: c, tx: t } if g == generation => {
                    spawn_requests(c.clone(), agent.clone());
                    conn = Some(c);
                    tx = Some(t);
                    actions.extend(link.handle(Instant::now(), Input::Connected));
                }
                LinkEvent::Frame { generation: g, frame } if g == generation => match frame {
                    CoordinatorFrame::Welcome(w) => {
                        let interval = std::time::Duration::from_millis(w.report_interval_ms.into());
                        actions.extend(link.handle(Instant::now(), Input::Welcomed { report_interval: interval }));
                        last_sent = LoadReport::default();
                    }
                    CoordinatorFrame::Refused { reason } => {
                        tracing::error!("the coordinator refused this agent: {reason}");
                        actions.extend(link.handle(Instant::now(), Input::Refused(reason)));
                        if let Some(c) = conn.take() {
                            c.close(0u32.into(), b"refused");
                        }
                        tx = None;
                    }
                    CoordinatorFrame::Accepted(_)
                    | CoordinatorFrame::Declined { .. }
                    | CoordinatorFrame::Place(_)
                    | CoordinatorFrame::Deliver { .. }
                    | CoordinatorFrame::Return { .. }
                    | CoordinatorFrame::GuestAck(_) => {
                        if let Some(c) = &conn {
                            on_handover_frame(Connected::new(c, &agent, &events_tx, generation), frame);
                        }
                    }
                    CoordinatorFrame::Deploy(d) => {
                        let _ = deploy_tx.send((generation, d));
                    }
                },
                LinkEvent::Deployed { generation: g, ack } => {
                    deployed = ack.deployment;
                    if g == generation && let Some(t) = tx.as_mut() {
                        let _ = send(t, &AgentFrame::Deployed(ack)).await;
                    }
                }
                LinkEvent::Send { generation: g, frame } => {
                    // An offer leaves only if its job still waits for an answer, checked by the
                    // one task that writes the stream: an answer that arrived while its input was
                    // uploading (and was acknowledged) must not be followed by a stale offer.
                    let stale = matches!(&frame, AgentFrame::Offer(o) if !matches!(
                        agent.journal().get(o.id).ok().flatten().map(|r| r.state),
                        Some(JobState::Offered | JobState::Handed)
                    ));
                    if !stale && g == generation && link.is_steady() && let Some(t) = tx.as_mut() {
                        let _ = send(t, &frame).await;
                    }
                }
                LinkEvent::Lost { generation: g, reason } if g == generation => {
                    actions.extend(link.handle(Instant::now(), Input::Lost(reason)));
                    if let Some(c) = conn.take() {
                        c.close(0u32.into(), b"lost");
                    }
                    tx = None;
                }
                _ => {}
            },
            Some(out) = mesh_rx.recv() => {
                let MeshOut::Offer { record, reason, local_wait_ms, run_ms } = out;
                // Not linked: the job stays `Offered` and is offered again once the link is up.
                if link.is_steady() && let Some(c) = &conn {
                    let cx = Connected::new(c, &agent, &events_tx, generation);
                    tokio::spawn(async move {
                        match handover::offer(&cx.conn, &cx.agent, &record, reason, (local_wait_ms, run_ms)).await {
                            Ok(frame) => cx.send(frame),
                            Err(e) => tracing::warn!(job = %record.id.short(), "offer not sent ({e}); it is offered again after the next reconnection"),
                        }
                    });
                }
            }
            job = jobs.recv() => match job {
                Ok(event) => {
                    if link.is_steady() {
                        send_job(&agent, tx.as_mut(), &event).await;
                        if let (JobEvent::Finished { id, .. }, Some(c)) = (&event, &conn) {
                            send_guest_result(Connected::new(c, &agent, &events_tx, generation), *id);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            changed = load.changed() => {
                if changed.is_err() { break; }
                if load.borrow().differs_significantly(&last_sent) {
                    actions.extend(link.handle(Instant::now(), Input::LoadChanged));
                }
            }
        }
    }
    agent.set_mesh(None);
    deployer.abort();
    if let Some(c) = conn {
        c.close(0u32.into(), b"agent shutting down");
    }
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
        conn: &quinn::Connection,
        agent: &AgentHandle,
        events: &mpsc::UnboundedSender<LinkEvent>,
        generation: u64,
    ) -> Self {
        Self {
            conn: conn.clone(),
            agent: agent.clone(),
            events: events.clone(),
            generation,
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
            let offer = handover::offer(
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
        match handover::guest_result(&cx.conn, &cx.agent, id).await {
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
                        match handover::fetch_outputs(&cx.conn, agent, id, outputs).await {
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
                match handover::host(&cx.conn, agent, placement).await {
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

async fn send_hello(
    tx: &mut Option<quinn::SendStream>,
    config: &spillway_agent_config::AgentConfig,
    capacity: Demand,
    deployed: [u8; 32],
    link: &mut Link,
) {
    let hello = AgentFrame::Hello(Hello {
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
    });
    if let Some(t) = tx.as_mut()
        && let Err(e) = send(t, &hello).await
    {
        let _ = link.handle(Instant::now(), Input::Lost(e.to_string()));
    }
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
        .map_err(|e| format!("cannot connect to {coordinator}: {e}"))?;
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
            let config = config.clone();
            tokio::spawn(async move {
                let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
                let Ok(Some(req)) = reader.next::<Request>().await else {
                    return;
                };
                let answer = tokio::task::spawn_blocking(move || requests::answer(&config, req))
                    .await
                    .unwrap_or_else(|e| spillway_proto::wire::Response::Error(e.to_string()));
                if send(&mut tx, &answer).await.is_ok() {
                    let _ = tx.finish();
                }
            });
        }
    });
}

async fn send_job(agent: &AgentHandle, tx: Option<&mut quinn::SendStream>, event: &JobEvent) {
    let id = match event {
        JobEvent::Queued { id, .. }
        | JobEvent::Started { id, .. }
        | JobEvent::Finished { id, .. } => *id,
    };
    let (Some(tx), Ok(Some(record))) = (tx, agent.journal().get(id)) else {
        return;
    };
    let origin = agent.journal().guest(id).ok().flatten().map(|g| g.origin);
    let update = job_update(&record, &agent.config().data_root, origin);
    let _ = send(tx, &AgentFrame::Job(update)).await;
}

/// After a (re)connection the coordinator may have missed updates: send the recent jobs.
async fn resync_jobs(agent: &AgentHandle, tx: Option<&mut quinn::SendStream>) {
    let Some(tx) = tx else { return };
    let Ok(mut records) = agent.journal().all() else {
        return;
    };
    records.sort_by_key(|r| std::cmp::Reverse(r.queued_at_ms));
    records.truncate(RESYNC_JOBS);
    let root = agent.config().data_root.clone();
    for r in records.iter().rev() {
        let origin = agent.journal().guest(r.id).ok().flatten().map(|g| g.origin);
        if send(tx, &AgentFrame::Job(job_update(r, &root, origin)))
            .await
            .is_err()
        {
            return;
        }
    }
}
