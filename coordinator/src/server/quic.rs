//! The QUIC endpoint: joins on certificate-less connections, member sessions on mutual-TLS ones.

use std::sync::Arc;
use std::time::Duration;

use spillway_api::events::FeedKind;
use spillway_link::identity::{fingerprint, valid_node_name};
use spillway_link::stream::{FrameReader, StreamError, send};
use spillway_link::tls::peer_fingerprint;
use spillway_link::token::JoinToken;
use spillway_proto::load::LoadReport;
use spillway_proto::wire::{
    AgentFrame, BlobRequest, BlobResponse, CoordinatorFrame, JoinReply, JoinRequest,
    MAX_BLOB_RANGE, MAX_JOIN_FRAME, MAX_STREAM_FRAME, PROTOCOL, Welcome,
};

use super::metrics::inc;
use super::store::{JobRow, NodeRecord, TokenCheck};
use super::{State, deploy, now_ms};

/// A peer gets this long to open its stream and say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the endpoint closes.
pub async fn serve(state: Arc<State>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%remote, "handshake failed: {e}");
                    inc(&state.metrics.connections_refused);
                    return;
                }
            };
            match peer_fingerprint(&conn) {
                None => join(&state, conn).await,
                Some(fp) => member(state, conn, fp).await,
            }
        });
    }
}

async fn join(state: &State, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let admitted = state
        .join_limit
        .lock()
        .map(|mut l| l.admit(remote.ip(), std::time::Instant::now()))
        .unwrap_or(false);
    if !admitted {
        inc(&state.metrics.joins_refused);
        tracing::warn!(%remote, "join refused: too many join attempts");
        // Closed without an answer: agents retry an unanswered join with backoff.
        conn.close(
            4u32.into(),
            b"too many join attempts from this address; try again in a few seconds",
        );
        return;
    }
    let request = async {
        let (send_half, recv) = conn.accept_bi().await.ok()?;
        let req = FrameReader::new(recv, MAX_JOIN_FRAME)
            .next::<JoinRequest>()
            .await;
        Some((send_half, req))
    };
    let Ok(Some((mut send_half, req))) = tokio::time::timeout(HELLO_TIMEOUT, request).await else {
        inc(&state.metrics.joins_refused);
        return;
    };
    let reply = match req {
        Ok(Some(req)) => decide_join(state, req, &remote.to_string()),
        Ok(None) => return,
        Err(e) => {
            inc(&state.metrics.frames_malformed);
            JoinReply::Refused {
                reason: format!("unreadable join request: {e}"),
            }
        }
    };
    match &reply {
        JoinReply::Granted { .. } => inc(&state.metrics.joins),
        JoinReply::Refused { reason } => {
            inc(&state.metrics.joins_refused);
            tracing::warn!(%remote, "join refused: {reason}");
        }
    }
    if send(&mut send_half, &reply).await.is_ok() {
        let _ = send_half.finish();
        // Let the agent read the reply and hang up first.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    }
}

fn decide_join(state: &State, req: JoinRequest, remote: &str) -> JoinReply {
    let refuse = |reason: String| JoinReply::Refused { reason };
    if let Err(e) = PROTOCOL.check_peer(req.version, "coordinator", "agent") {
        return refuse(e);
    }
    let token = match JoinToken::parse(&req.token) {
        Ok(t) => t,
        Err(e) => return refuse(e),
    };
    if !state.ca.trust().accepts_pin(&token.ca_pin) {
        return refuse(
            "this token was created by another coordinator, or before its mesh CA was rotated and the old one retired (its CA does not match): create a new one with `spillway token create`".into(),
        );
    }
    if !valid_node_name(&req.node) {
        return refuse(format!(
            "`{}` cannot be a node name: use letters, digits, `-` and `.` (set node_name in the agent config)",
            req.node
        ));
    }
    let hash = token.secret_hash();
    let now = now_ms();
    // The CSR is signed only for a token that admits this name.
    match state.store.check_join(&hash, &req.node, now) {
        Ok(TokenCheck::Valid) => {}
        Ok(other) => return refuse(token_refusal(other, &req.node)),
        Err(e) => return refuse(format!("the coordinator could not check the token: {e}")),
    }
    let lifetime = state.config.certificates.node_lifetime;
    let (cert_der, expires_ms, issuer) = match state.ca.sign_node(&req.node, &req.csr_der, lifetime)
    {
        Ok(c) => c,
        Err(e) => return refuse(e.to_string()),
    };
    let mut node = NodeRecord::joined(
        &req.node,
        hex::encode(fingerprint(&cert_der)),
        now,
        expires_ms,
    );
    node.issuer = Some(issuer);
    node.last_address = remote.to_owned();
    // Agents of 1.6 and later take every CA trusted during a rotation; older ones read one.
    let trust = state.ca.trust();
    let ca_der = if req.version.has(PROTOCOL.major, 6) {
        trust.bundle()
    } else {
        trust.signing.cert_der().to_vec()
    };
    match state.store.join(&hash, now, node) {
        Ok(TokenCheck::Valid) => {
            tracing::info!(node = %req.node, %remote, "node joined the mesh");
            state.feed.publish(
                FeedKind::Node,
                &req.node,
                "Joined",
                None,
                None,
                remote.to_string(),
            );
            // A node joining again may have been connected under its old certificate.
            if let Some(old) = state.view.connection(&req.node) {
                old.close(3u32.into(), b"joined again with a new certificate");
            }
            state.deployments.send_modify(|g| *g += 1);
            JoinReply::Granted { cert_der, ca_der }
        }
        Ok(other) => refuse(token_refusal(other, &req.node)),
        Err(e) => refuse(format!("the coordinator could not record the join: {e}")),
    }
}

/// What a node that tried to join is told about its token.
fn token_refusal(check: TokenCheck, node: &str) -> String {
    match check {
        TokenCheck::Unknown => {
            "unknown join token: create one on the coordinator with `spillway token create`".into()
        }
        TokenCheck::Expired => {
            "this join token has expired: create a new one with `spillway token create --ttl 1h`"
                .into()
        }
        TokenCheck::Revoked => {
            "this join token was revoked: ask the operator for a new one (`spillway token create`)"
                .into()
        }
        TokenCheck::Used(by) => format!(
            "this join token was already used (by node `{by}`); tokens are single-use: create a new one with `spillway token create`"
        ),
        TokenCheck::NameTaken => format!(
            "node `{node}` is already a member of this mesh; to join again under that name (new SD card, lost key), use a token made for it: `spillway token create --node {node}`, or pick another node_name"
        ),
        TokenCheck::OtherNode(bound) => format!(
            "this join token was made for node `{bound}`, not `{node}`; set node_name = \"{bound}\" or create a token for `{node}`"
        ),
        TokenCheck::Valid => String::new(),
    }
}

async fn member(state: Arc<State>, conn: quinn::Connection, fp: [u8; 32]) {
    let remote = conn.remote_address();
    let opened = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await;
    let Ok(Ok((mut tx, rx))) = opened else {
        return;
    };
    let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
    let record = match state.store.node_by_cert(&hex::encode(fp)) {
        Ok(Some(r)) => r,
        _ => {
            let reason = "this agent's certificate is not a member of the mesh (the node was removed, or it joined another coordinator): join again with `spillway-agent join --token …`";
            return refuse_member(&state, &conn, tx, reason.into()).await;
        }
    };
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next::<AgentFrame>()).await {
        Ok(Ok(Some(AgentFrame::Hello(h)))) => h,
        _ => {
            inc(&state.metrics.frames_malformed);
            conn.close(1u32.into(), b"expected Hello");
            return;
        }
    };
    if let Err(reason) = PROTOCOL.check_peer(hello.version, "coordinator", "agent") {
        tracing::warn!(node = %record.name, "{reason}");
        return refuse_member(&state, &conn, tx, reason).await;
    }
    let name = record.name.clone();
    let mut record = record;
    let connected_with = hex::encode(fp);
    // Renewal frames exist since 1.3; older agents are not asked.
    let renews = hello.version.major == PROTOCOL.major && hello.version.minor >= 3;
    let ended_at = spillway_link::tls::peer_certificate(&conn)
        .and_then(|der| super::ca::not_after_ms(&der))
        .filter(|end| *end < now_ms());
    if let Some(ended_at) = ended_at {
        // Renewal, within `[certificates] renew_expired`, and nothing else.
        return renew_late(
            &state,
            &conn,
            tx,
            reader,
            &name,
            &connected_with,
            ended_at,
            renews,
        )
        .await;
    }
    if record.previous_fingerprint.is_some() && record.fingerprint == connected_with {
        match state.store.adopt_cert(&name) {
            Ok(()) => {
                tracing::info!(node = %name, "node connected with its renewed certificate; the previous one is retired");
                record.previous_fingerprint = None;
            }
            Err(e) => tracing::error!(node = %name, "cannot retire the previous certificate: {e}"),
        }
    }
    let mut renew_check = tokio::time::interval(renew_check_period(&state));
    renew_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew_asked: Option<std::time::Instant> = None;
    // Labels and the cluster decide which functions (and secrets) a node receives: they are the
    // operator's (from the token or `spillway label node`). The agent's config only proposes.
    record.proposed_cluster_id = hello.cluster_id.clone();
    record.proposed_labels = hello.labels.clone();
    record.capacity = hello.capacity;
    record.agent_version = hello.agent_version.clone();
    record.arch = hello.arch.clone();
    record.last_seen_ms = now_ms();
    record.last_address = remote.to_string();
    if let Err(e) = state.store.put_node(&record) {
        tracing::error!(node = %name, "cannot record the node: {e}");
    }
    state.view.connected(&name, conn.clone());
    tracing::info!(node = %name, %remote, "node connected");
    state.feed.publish(
        FeedKind::Node,
        &name,
        "Connected",
        None,
        None,
        remote.to_string(),
    );
    let welcome = welcome(&state);
    let mut deployed = hello.deployment;
    let datagrams = tokio::spawn(read_reports(state.clone(), conn.clone(), name.clone()));
    let mut deploy_rx = state.deployments.subscribe();
    deploy_rx.mark_changed();
    // Upgrade orders (1.5 and later), each sent once per connection while it stands.
    let takes_upgrades = hello.version.has(PROTOCOL.major, 5);
    let mut upgrades_rx = state.upgrades.subscribe();
    upgrades_rx.mark_changed();
    let mut order_sent: Option<u64> = None;
    // The CAs to trust (1.6 and later): right after the welcome, so they come before any
    // upgrade order signed by a new CA, and again at every rotation or retirement.
    let takes_trust = hello.version.has(PROTOCOL.major, 6);
    let mut trust_rx = state.ca.subscribe();
    trust_rx.borrow_and_update();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
    let blobs = tokio::spawn(serve_blobs(state.clone(), conn.clone(), name.clone()));
    let mut session = 0;
    let trust = CoordinatorFrame::Trust {
        cas: state.ca.trust().cas(),
    };
    if send(&mut tx, &welcome).await.is_ok()
        && (!takes_trust || send(&mut tx, &trust).await.is_ok())
    {
        session = state.handover_session(&name, out_tx);
        loop {
            tokio::select! {
                frame = reader.next::<AgentFrame>() => match frame {
                    Ok(Some(AgentFrame::RenewCertificate { csr_der })) => {
                        // Signed only when asked: a member cannot make the CA sign (and the
                        // store commit) at its own pace.
                        let reply = if renew_asked.take().is_some() {
                            renew(&state, &name, &connected_with, &csr_der)
                        } else {
                            inc(&state.metrics.frames_refused);
                            CoordinatorFrame::RenewRefused { reason: "this node was not asked to renew its certificate".into() }
                        };
                        if send(&mut tx, &reply).await.is_err() { break control_lost(&conn); }
                    }
                    Ok(Some(frame)) => handle_frame(&state, &name, session, frame),
                    Ok(None) => break,
                    Err(StreamError::Frame(e)) => {
                        inc(&state.metrics.frames_malformed);
                        tracing::warn!(node = %name, "closing the connection: {e}");
                        conn.close(2u32.into(), b"malformed frame");
                        break;
                    }
                    // The peer hung up or the link died: not the peer's fault, nothing to count.
                    Err(_) => break,
                },
                Some(frame) = out_rx.recv() => {
                    if send(&mut tx, &frame).await.is_err() { break control_lost(&conn); }
                }
                _ = renew_check.tick(), if renews => {
                    let waiting = renew_asked.is_some_and(|at| at.elapsed() < RENEW_ANSWER_WAIT);
                    if !waiting && renewal_due(&state, &name, &connected_with) {
                        renew_asked = Some(std::time::Instant::now());
                        tracing::info!(node = %name, "asking the node to renew its certificate");
                        if send(&mut tx, &CoordinatorFrame::RenewCertificate).await.is_err() { break control_lost(&conn); }
                    }
                }
                changed = trust_rx.changed(), if takes_trust => {
                    if changed.is_err() { break; }
                    let cas = state.ca.trust().cas();
                    if send(&mut tx, &CoordinatorFrame::Trust { cas }).await.is_err() { break control_lost(&conn); }
                    // A rotation makes every certificate from the old CA due: check now, not
                    // at the next period (an hour with the default renew_before).
                    renew_check.reset_immediately();
                }
                changed = upgrades_rx.changed() => {
                    if changed.is_err() { break; }
                    let Some(order) = state.upgrades.order_for(&name) else { continue };
                    if order_sent == Some(order.rollout) { continue; }
                    order_sent = Some(order.rollout);
                    if takes_upgrades {
                        tracing::info!(node = %name, version = %order.version, "ordering an upgrade");
                        if send(&mut tx, &CoordinatorFrame::Upgrade(order)).await.is_err() { break control_lost(&conn); }
                    } else {
                        let reason = format!(
                            "its agent {} speaks protocol {}; upgrades over the mesh need 1.5 or later: upgrade it by hand once",
                            hello.agent_version, hello.version
                        );
                        state.upgrades.cannot_order(&state, &name, order.rollout, &reason);
                    }
                }
                changed = deploy_rx.changed() => {
                    if changed.is_err() { break; }
                    let node = state.store.node(&name).ok().flatten().unwrap_or_else(|| record.clone());
                    // A store that cannot be read must never look like "no functions": that
                    // would take every function off the node.
                    let functions = match state.store.functions() {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::error!(node = %name, "cannot read the functions to deploy ({e}); the node keeps what it runs");
                            continue;
                        }
                    };
                    let deployment = deploy::for_node(&node, &functions, state.config.oscar_minio.as_ref());
                    let digest = deployment.digest();
                    if digest != deployed {
                        tracing::info!(node = %name, functions = deployment.functions.len(), "deploying");
                        if send(&mut tx, &CoordinatorFrame::Deploy(deployment)).await.is_err() { break control_lost(&conn); }
                        deployed = digest;
                    }
                }
            }
        }
    }
    datagrams.abort();
    blobs.abort();
    state.handover_session_ended(&name, session);
    // A connection a newer one replaced ends without the node going anywhere.
    if state.view.disconnected(&name, conn.stable_id()) {
        state.feed.publish(
            FeedKind::Node,
            &name,
            "Disconnected",
            None,
            None,
            String::new(),
        );
    }
    if let Ok(Some(mut r)) = state.store.node(&name) {
        r.last_seen_ms = now_ms();
        let _ = state.store.put_node(&r);
    }
    tracing::info!(node = %name, "node disconnected: {}", conn.close_reason().map(|r| r.to_string()).unwrap_or_default());
}

/// How long an agent has to answer a renewal request before it is asked again.
const RENEW_ANSWER_WAIT: Duration = Duration::from_secs(60);

/// How often a connection checks whether its node's certificate is due: a quarter of the
/// renewal window, between a second and an hour.
fn renew_check_period(state: &State) -> Duration {
    (state.config.certificates.renew_before / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Whether the node connected with `connected_with` (hex) should renew: its certificate
/// expires within `[certificates] renew_before`, or it connected with the previous one (a
/// renewal it never stored), or during a CA rotation another CA than the new one issued it.
fn renewal_due(state: &State, name: &str, connected_with: &str) -> bool {
    let Ok(Some(node)) = state.store.node(name) else {
        return false;
    };
    let window = state.config.certificates.renew_before.as_millis() as u64;
    let trust = state.ca.trust();
    let under_old_ca = trust.retiring.is_some()
        && node.issuer.as_deref() != Some(hex::encode(trust.signing.fingerprint()).as_str());
    node.fingerprint != connected_with
        || node.cert_expires_at_ms.saturating_sub(now_ms()) < window
        || under_old_ca
}

/// Signs a renewal request from `name` (connected with `connected_with`), records the new
/// certificate durably, and only then answers with it.
fn renew(state: &State, name: &str, connected_with: &str, csr_der: &[u8]) -> CoordinatorFrame {
    let refused = |reason: String| {
        inc(&state.metrics.certificate_renewals_refused);
        tracing::warn!(node = %name, "certificate renewal refused: {reason}");
        CoordinatorFrame::RenewRefused { reason }
    };
    let lifetime = state.config.certificates.node_lifetime;
    let (cert_der, expires_at_ms, issuer) = match state.ca.sign_node(name, csr_der, lifetime) {
        Ok(c) => c,
        Err(e) => return refused(e.to_string()),
    };
    let renewed = hex::encode(fingerprint(&cert_der));
    match state
        .store
        .renew_cert(name, connected_with, &renewed, expires_at_ms, &issuer)
    {
        Ok(Some(_)) => {
            inc(&state.metrics.certificate_renewals);
            tracing::info!(node = %name, expires_at_ms, "node certificate renewed");
            CoordinatorFrame::Renewed {
                cert_der,
                expires_at_ms,
            }
        }
        Ok(None) => refused("the node is no longer a member".into()),
        Err(e) => refused(format!("cannot record the new certificate: {e}")),
    }
}

/// The agent stopped reading its control stream (or the link died mid-write): the session is
/// over, and the close says so, rather than the bare close of dropped handles.
fn control_lost(conn: &quinn::Connection) {
    conn.close(5u32.into(), b"the agent stopped reading its control stream");
}

/// The first frame a member gets once its Hello is taken.
fn welcome(state: &State) -> CoordinatorFrame {
    CoordinatorFrame::Welcome(Welcome {
        version: PROTOCOL,
        coordinator_version: env!("CARGO_PKG_VERSION").into(),
        report_interval_ms: state.config.report_interval.as_millis() as u32,
    })
}

/// A member back with a certificate that ended `ended_at` (ms). Within `[certificates]
/// renew_expired` of that end it is asked to renew at once and may do nothing else: no job is
/// placed on it, none of its frames is acted on, it is not counted connected, and once it has
/// its new certificate it connects again with it, as any member. Later than that, it is told
/// to join again.
#[allow(clippy::too_many_arguments)]
async fn renew_late(
    state: &State,
    conn: &quinn::Connection,
    mut tx: quinn::SendStream,
    mut reader: FrameReader,
    name: &str,
    connected_with: &str,
    ended_at: u64,
    renews: bool,
) {
    let ago = Duration::from_millis(now_ms().saturating_sub(ended_at) / 1000 * 1000);
    let window = state.config.certificates.renew_expired;
    if ago > window {
        let reason = format!(
            "this node's certificate ended {} ago, and the coordinator renews certificates only up to {} after their end (certificates.renew_expired): join again with a token made for this node (on the coordinator: spillway token create --node {name}; here: spillway-agent join --token …)",
            humantime::format_duration(ago),
            humantime::format_duration(window)
        );
        tracing::warn!(node = %name, "{reason}");
        inc(&state.metrics.certificate_renewals_refused);
        return refuse_member(state, conn, tx, reason).await;
    }
    if !renews {
        let reason = format!(
            "this node's certificate ended {} ago and this agent is too old to renew it over the mesh: upgrade it, or join again with a token made for it (spillway token create --node {name})",
            humantime::format_duration(ago)
        );
        return refuse_member(state, conn, tx, reason).await;
    }
    tracing::info!(node = %name, "node is back with a certificate that ended {} ago; renewing it before anything else (certificates.renew_expired)", humantime::format_duration(ago));
    let welcome = welcome(state);
    if send(&mut tx, &welcome).await.is_err()
        || send(&mut tx, &CoordinatorFrame::RenewCertificate)
            .await
            .is_err()
    {
        return;
    }
    let answered = tokio::time::timeout(RENEW_ANSWER_WAIT, async {
        loop {
            match reader.next::<AgentFrame>().await {
                Ok(Some(AgentFrame::RenewCertificate { csr_der })) => return Some(csr_der),
                // Reports, offers, results: not from a certificate that has ended.
                Ok(Some(_)) => inc(&state.metrics.frames_refused),
                Ok(None) | Err(_) => return None,
            }
        }
    })
    .await;
    let Ok(Some(csr_der)) = answered else {
        conn.close(3u32.into(), b"certificate ended: renewal not answered");
        return;
    };
    let reply = renew(state, name, connected_with, &csr_der);
    let _ = send(&mut tx, &reply).await;
    let _ = tx.finish();
    // The agent connects again with its new certificate; give it a moment to read the answer.
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
}

/// Records which CAs a node says it trusts (at most a bundle's worth; more is a hostile
/// agent's, and ignored): a rotation's old CA is retired only once every node trusts the new
/// one.
fn trusted(state: &State, node: &str, cas: &[[u8; 32]]) {
    if cas.len() > spillway_link::bundle::MAX_CAS {
        inc(&state.metrics.frames_refused);
        return;
    }
    let cas: Vec<String> = cas.iter().map(hex::encode).collect();
    match state.store.record_trust(node, &cas) {
        Ok(true) => {
            tracing::info!(node, cas = %cas.join(","), "node trusts the mesh CAs it was sent")
        }
        Ok(false) => {}
        Err(e) => tracing::error!(node, "cannot record which CAs the node trusts: {e}"),
    }
}

/// Tells a connected agent why it is refused (counted), and lets it hang up first.
async fn refuse_member(
    state: &State,
    conn: &quinn::Connection,
    mut tx: quinn::SendStream,
    reason: String,
) {
    inc(&state.metrics.connections_refused);
    let _ = send(&mut tx, &CoordinatorFrame::Refused { reason }).await;
    let _ = tx.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
}

fn handle_frame(state: &State, node: &str, session: u64, frame: AgentFrame) {
    match frame {
        AgentFrame::Offer(offer) => state.offer(node, session, offer),
        AgentFrame::GuestDone(done) => state.guest_done(node, session, done),
        AgentFrame::HandoverAck(id) => state.handover_ack(node, session, id),
        // A second Hello; a renewal request is answered by the session loop, never here.
        AgentFrame::Hello(_) | AgentFrame::RenewCertificate { .. } => {
            inc(&state.metrics.frames_malformed);
        }
        AgentFrame::Upgrade(report) => state.upgrades.report(state, node, &report),
        AgentFrame::Trusted { cas } => trusted(state, node, &cas),
        AgentFrame::Condition(condition) => {
            let was = state.view.condition(node, condition);
            if was.disk_full != condition.disk_full {
                if condition.disk_full {
                    tracing::warn!(
                        node,
                        free_mib = condition.disk_free_bytes >> 20,
                        "node's disk is nearly full: it takes no new inputs and no placements"
                    );
                } else {
                    tracing::info!(node, "node has room on disk again");
                }
            }
        }
        AgentFrame::Deployed(ack) => {
            if let Ok(Some(mut r)) = state.store.node(node) {
                r.running = ack.running;
                r.refused = ack.refused;
                if let Err(e) = state.store.put_node_deployment(&r) {
                    tracing::error!(node, "cannot record the deployment: {e}");
                }
            }
        }
        AgentFrame::Job(update) => {
            let existing = state.store.job_row(&update.id.to_string()).ok().flatten();
            // A member reports on its own jobs, and on jobs placed on it; never on another
            // node's (the first to report a job id owns its row).
            let allowed = match (&update.origin, &existing) {
                (Some(_), _) => state.was_placed_on(update.id, node),
                (None, Some(row)) => row.node == node,
                (None, None) => true,
            };
            if !allowed {
                inc(&state.metrics.frames_refused);
                tracing::warn!(node, job = %update.id, "refused a report on a job this node does not hold");
                return;
            }
            inc(&state.metrics.job_updates);
            let existing_phase = existing.as_ref().map(|r| r.update.phase);
            // Run times count once, from the report of the node that ran the job: a peer's
            // (with an origin), or the origin's own when no peer ran it.
            let newly_final = update.phase.is_final()
                && !existing.as_ref().is_some_and(|r| {
                    r.update.phase.is_final() || (update.origin.is_none() && r.ran_on.is_some())
                });
            if newly_final
                && let (Some(started), Some(finished)) =
                    (update.started_at_ms, update.finished_at_ms)
            {
                state.metrics.job_finished(
                    &update.function,
                    update.queued_at_ms,
                    started,
                    finished,
                );
            }
            // One row per job, under its origin: a peer's report of a job it ran for another
            // node only says where it ran (and stands in until the origin's own arrives).
            let row = match (update.origin.clone(), existing) {
                (Some(origin), Some(mut row)) => {
                    row.ran_on = Some(node.to_owned());
                    if row.node != origin {
                        row.node = origin;
                    }
                    row.updated_at_ms = now_ms();
                    row
                }
                (Some(origin), None) => JobRow {
                    node: origin,
                    update,
                    updated_at_ms: now_ms(),
                    ran_on: Some(node.to_owned()),
                },
                (None, existing) => JobRow {
                    node: node.to_owned(),
                    update,
                    updated_at_ms: now_ms(),
                    ran_on: existing.and_then(|r| r.ran_on),
                },
            };
            let phase_changed = existing_phase != Some(row.update.phase);
            if let Err(e) = state.store.put_jobs(std::slice::from_ref(&row)) {
                tracing::error!(node, "cannot record a job update: {e}");
            } else if phase_changed {
                let u = &row.update;
                let message = u.reason.clone().unwrap_or_else(|| {
                    row.ran_on
                        .as_ref()
                        .map(|r| format!("on {r}"))
                        .unwrap_or_default()
                });
                state.feed.publish(
                    FeedKind::Job,
                    &u.id.to_string(),
                    &u.phase.to_string(),
                    Some(&row.node),
                    Some(&u.function),
                    message,
                );
            }
        }
    }
}

/// Serves the blob streams a member opens after its control stream: inputs it offers, inputs
/// of jobs placed on it, outputs it produced and outputs it receives.
async fn serve_blobs(state: Arc<State>, conn: quinn::Connection, node: String) {
    while let Ok((mut tx, rx)) = conn.accept_bi().await {
        let (state, node) = (state.clone(), node.clone());
        tokio::spawn(async move {
            // A blob frame is buffered whole: only a few at once, from all members together.
            let Ok(_permit) = state.blob_frames.acquire().await else {
                return;
            };
            let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
            let request = match reader.next::<BlobRequest>().await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    inc(&state.metrics.frames_malformed);
                    tracing::debug!("unreadable blob request: {e}");
                    return;
                }
            };
            let allowed = match &request {
                BlobRequest::Get(digest) => state.member_may_read(&node, digest),
                // Ranges serve upgrades: the binary of the order that stands for this node.
                BlobRequest::GetRange { digest, .. } => state
                    .upgrades
                    .order_for(&node)
                    .is_some_and(|o| o.sha256 == *digest),
                BlobRequest::Put(_) => true,
            };
            if !allowed {
                inc(&state.metrics.frames_refused);
                tracing::warn!(node = %node, "refused a blob the node has no job for");
                let answer =
                    BlobResponse::Error("this node has no job that needs this blob".to_owned());
                if send(&mut tx, &answer).await.is_ok() {
                    let _ = tx.finish();
                }
                return;
            }
            let blobs = state.blobs.clone();
            let answer = tokio::task::spawn_blocking(move || match request {
                BlobRequest::Put(bytes) => blobs
                    .put(&bytes)
                    .map(BlobResponse::Stored)
                    .unwrap_or_else(|e| {
                        BlobResponse::Error(format!("the coordinator cannot store the blob: {e}"))
                    }),
                BlobRequest::Get(digest) => blobs
                    .get(&digest)
                    .map(BlobResponse::Blob)
                    .unwrap_or_else(BlobResponse::Error),
                BlobRequest::GetRange {
                    digest,
                    offset,
                    len,
                } => blobs
                    .get_range(&digest, offset, len.min(MAX_BLOB_RANGE))
                    .map(BlobResponse::Blob)
                    .unwrap_or_else(BlobResponse::Error),
            })
            .await
            .unwrap_or_else(|e| BlobResponse::Error(e.to_string()));
            if send(&mut tx, &answer).await.is_ok() {
                let _ = tx.finish();
            }
        });
    }
}

async fn read_reports(state: Arc<State>, conn: quinn::Connection, node: String) {
    while let Ok(bytes) = conn.read_datagram().await {
        match LoadReport::from_datagram(&bytes) {
            Ok(report) => {
                if let Some(stale) = state.view.report(&node, report) {
                    inc(&state.metrics.reports);
                    state.metrics.staleness.observe(stale.as_secs_f64());
                } else {
                    inc(&state.metrics.reports_out_of_order);
                }
            }
            Err(e) => {
                inc(&state.metrics.datagrams_malformed);
                tracing::debug!(%node, "{e}");
            }
        }
    }
}
