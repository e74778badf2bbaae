//! The coordinator's QUIC endpoint against misbehaving peers, over real sockets on loopback:
//! tokens that must not work, certificates that must not connect, versions that must be
//! refused, and garbage that must not crash anything.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use spillway_coordinator::config::CoordinatorConfig;
use spillway_coordinator::server::{Coordinator, State};
use spillway_link::membership::{self as mesh, JoinError, Membership};
use spillway_link::stream::{FrameReader, send};
use spillway_proto::wire::{
    AgentFrame, COORDINATOR_SERVER_NAME, CoordinatorFrame, MAX_STREAM_FRAME, PROTOCOL, Version,
};

struct Running {
    _dir: tempfile::TempDir,
    state: Arc<State>,
    quic: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn coordinator() -> Running {
    coordinator_with(|_| {}).await
}

/// A coordinator on loopback with its defaults changed by `tune`.
async fn coordinator_with(tune: impl FnOnce(&mut CoordinatorConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig {
        state_dir: dir.path().join("coordinator"),
        quic_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..CoordinatorConfig::default()
    };
    tune(&mut config);
    let c = Coordinator::start(config).await.unwrap();
    let (state, quic) = (c.state.clone(), c.quic_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(c.run(async {
        let _ = stopped.await;
    }));
    Running {
        _dir: dir,
        state,
        quic,
        _stop: stop,
    }
}

async fn join(c: &Running, node: &str, token: &str) -> Result<Membership, JoinError> {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.keep();
    mesh::join(&state_dir, node, &c.quic.to_string(), token).await
}

fn refused(r: Result<Membership, JoinError>) -> String {
    match r {
        Err(JoinError::Refused(reason)) => reason,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the join succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_joins_one_node_once() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(60, "test").unwrap();
    join(&c, "pi-1", &token).await.unwrap();
    let reason = refused(join(&c, "pi-2", &token).await);
    assert!(reason.contains("already used (by node `pi-1`)"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_unknown_tokens_are_refused_with_the_way_out() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(0, "already expired").unwrap();
    let reason = refused(join(&c, "pi-1", &token).await);
    assert!(
        reason.contains("expired") && reason.contains("spillway token create"),
        "{reason}"
    );
    // Right CA pin, secret never issued.
    let (real, _) = c.state.create_token(60, "").unwrap();
    let forged = format!(
        "spw1.{}.{}",
        "ab".repeat(16),
        real.rsplit('.').next().unwrap()
    );
    let reason = refused(join(&c, "pi-1", &forged).await);
    assert!(reason.contains("unknown join token"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_coordinator_does_not_even_get_past_tls() {
    let (a, b) = (coordinator().await, coordinator().await);
    let (token_of_b, _) = b.state.create_token(60, "").unwrap();
    // The token pins B's CA; A presents its own, so the agent refuses to talk to A at all.
    match join(&a, "pi-1", &token_of_b).await {
        Err(JoinError::Connect { message, .. }) => {
            assert!(message.contains("does not match the token"), "{message}")
        }
        other => panic!("expected a TLS refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_names_and_malformed_tokens_are_refused() {
    let c = coordinator().await;
    let err = join(&c, "pi-1", "not-a-token").await.unwrap_err();
    assert!(err.to_string().contains("spw1."), "{err}");
    let (token, _) = c.state.create_token(60, "").unwrap();
    let err = join(&c, "bad name", &token).await.unwrap_err();
    assert!(err.to_string().contains("cannot be a node name"), "{err}");
}

async fn member_connection(c: &Running, m: &Membership) -> quinn::Connection {
    common::member_connection(c.quic, m).await
}

/// A member's control stream, both halves: like a real agent, a test keeps reading it (a member
/// that stops reading is disconnected once the coordinator writes to it).
struct Control {
    tx: quinn::SendStream,
    _rx: FrameReader,
}

async fn say_hello(conn: &quinn::Connection, version: Version) -> (Control, CoordinatorFrame) {
    let (mut tx, rx) = conn.open_bi().await.unwrap();
    send(&mut tx, &common::hello(version)).await.unwrap();
    let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
    let frame = tokio::time::timeout(Duration::from_secs(5), reader.next::<CoordinatorFrame>())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (Control { tx, _rx: reader }, frame)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_major_version_is_refused_naming_both() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(60, "").unwrap();
    let m = join(&c, "pi-1", &token).await.unwrap();
    let conn = member_connection(&c, &m).await;
    let (_, frame) = say_hello(
        &conn,
        Version {
            major: PROTOCOL.major + 1,
            minor: 0,
        },
    )
    .await;
    let CoordinatorFrame::Refused { reason } = frame else {
        panic!("expected a refusal, got {frame:?}");
    };
    assert!(
        reason.contains(&PROTOCOL.to_string()) && reason.contains("2.0"),
        "{reason}"
    );
}

/// A coordinator whose certificates last 20 s and renew in their last 19 s.
async fn short_lived() -> Running {
    coordinator_with(|c| {
        c.certificates.node_lifetime = Duration::from_secs(20);
        c.certificates.renew_before = Duration::from_secs(19);
    })
    .await
}

/// The next frame on `reader` that is not a deployment or the CAs to trust (sent on every
/// connection), within `within`.
async fn next_but_deploys(reader: &mut FrameReader, within: Duration) -> Option<CoordinatorFrame> {
    tokio::time::timeout(within, async {
        loop {
            match reader.next::<CoordinatorFrame>().await {
                Ok(Some(CoordinatorFrame::Deploy(_) | CoordinatorFrame::Trust { .. })) => continue,
                Ok(other) => return other,
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_nobody_asked_for_is_refused_and_signs_nothing() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(60, "").unwrap();
    let m = join(&c, "pi-1", &token).await.unwrap();
    let conn = member_connection(&c, &m).await;
    let (mut tx, rx) = conn.open_bi().await.unwrap();
    send(&mut tx, &common::hello(PROTOCOL)).await.unwrap();
    let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
    let welcome = next_but_deploys(&mut reader, Duration::from_secs(5)).await;
    assert!(
        matches!(welcome, Some(CoordinatorFrame::Welcome(_))),
        "{welcome:?}"
    );
    let (_, csr_der) = spillway_link::identity::new_request("pi-1").unwrap();
    send(&mut tx, &AgentFrame::RenewCertificate { csr_der })
        .await
        .unwrap();
    let answer = next_but_deploys(&mut reader, Duration::from_secs(5)).await;
    let Some(CoordinatorFrame::RenewRefused { reason }) = answer else {
        panic!("expected a refusal, got {answer:?}");
    };
    assert!(reason.contains("not asked to renew"), "{reason}");
    let node = c.state.store.node("pi-1").unwrap().unwrap();
    assert_eq!(node.renewals, 0);
    assert_eq!(
        node.fingerprint,
        hex::encode(spillway_link::identity::fingerprint(&m.cert_der))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agents_that_speak_1_3_are_asked_to_renew() {
    let c = short_lived().await;
    for (minor, asked) in [(2, false), (3, true)] {
        let (conn, _tx, mut reader) = joined_and_said_hello(&c, minor).await;
        let welcome = next_but_deploys(&mut reader, Duration::from_secs(5)).await;
        assert!(
            matches!(welcome, Some(CoordinatorFrame::Welcome(_))),
            "{welcome:?}"
        );
        // Due a second after joining; checked every 4.75 s.
        let frame = next_but_deploys(&mut reader, Duration::from_secs(8)).await;
        assert_eq!(
            matches!(frame, Some(CoordinatorFrame::RenewCertificate)),
            asked,
            "1.{minor}: {frame:?}"
        );
        conn.close(0u32.into(), b"done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cas_to_trust_follow_the_welcome_for_1_6_agents_and_a_rotation_sends_them_again() {
    let c = coordinator().await;
    for (minor, sent) in [(5, false), (6, true)] {
        let (conn, _tx, mut reader) = joined_and_said_hello(&c, minor).await;
        assert!(matches!(
            next_frame(&mut reader).await,
            Some(CoordinatorFrame::Welcome(_))
        ));
        // Before anything else (a deployment, an upgrade order the new CA signed).
        let frame = next_frame(&mut reader).await;
        assert_eq!(
            matches!(&frame, Some(CoordinatorFrame::Trust { cas }) if *cas == vec![c.state.ca.cert_der()]),
            sent,
            "1.{minor}: {frame:?}"
        );
        if sent {
            c.state.ca.rotate().unwrap();
            let frame = next_but_deploys_or_renewals(&mut reader).await;
            let Some(CoordinatorFrame::Trust { cas }) = frame else {
                panic!("no CAs after the rotation: {frame:?}");
            };
            assert_eq!(cas.len(), 2, "the new CA and the old one");
            assert_eq!(cas[0], c.state.ca.cert_der(), "the signing CA first");
        }
        conn.close(0u32.into(), b"done");
    }
}

/// A new node `pi-MINOR` joined, connected and said hello speaking 1.MINOR: its connection,
/// and both halves of its control stream.
async fn joined_and_said_hello(
    c: &Running,
    minor: u16,
) -> (quinn::Connection, quinn::SendStream, FrameReader) {
    let (token, _) = c.state.create_token(60, "").unwrap();
    let m = join(c, &format!("pi-{minor}"), &token).await.unwrap();
    let conn = member_connection(c, &m).await;
    let (mut tx, rx) = conn.open_bi().await.unwrap();
    let version = Version {
        major: PROTOCOL.major,
        minor,
    };
    send(&mut tx, &common::hello(version)).await.unwrap();
    (conn, tx, FrameReader::new(rx, MAX_STREAM_FRAME))
}

/// The next frame, within 5 s.
async fn next_frame(reader: &mut FrameReader) -> Option<CoordinatorFrame> {
    tokio::time::timeout(Duration::from_secs(5), reader.next::<CoordinatorFrame>())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

/// The next frame that is not a deployment or a renewal request, within 5 s.
async fn next_but_deploys_or_renewals(reader: &mut FrameReader) -> Option<CoordinatorFrame> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.next::<CoordinatorFrame>().await {
                Ok(Some(CoordinatorFrame::Deploy(_) | CoordinatorFrame::RenewCertificate)) => {
                    continue;
                }
                Ok(other) => return other,
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_cannot_connect_again() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(60, "").unwrap();
    let m = join(&c, "pi-1", &token).await.unwrap();
    assert!(c.state.store.remove_node("pi-1").unwrap());
    let conn = member_connection(&c, &m).await;
    let (_, frame) = say_hello(&conn, PROTOCOL).await;
    let CoordinatorFrame::Refused { reason } = frame else {
        panic!("expected a refusal, got {frame:?}");
    };
    assert!(reason.contains("join again"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let (a, b) = (coordinator().await, coordinator().await);
    let (token, _) = b.state.create_token(60, "").unwrap();
    let of_b = join(&b, "pi-1", &token).await.unwrap();
    // Trust A's CA (so the client side is happy) but present B's certificate.
    let tls =
        spillway_link::tls::member(&a.state.ca.cert_der(), of_b.cert_der, of_b.key_der).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let result = async {
        let conn = endpoint
            .connect_with(tls, a.quic, COORDINATOR_SERVER_NAME)?
            .await?;
        // TLS 1.3 client auth completes after the client's Finished: the refusal closes the
        // connection as soon as we use it.
        let (mut tx, rx) = conn.open_bi().await?;
        send(&mut tx, &common::hello(PROTOCOL)).await?;
        let frame = FrameReader::new(rx, MAX_STREAM_FRAME)
            .next::<CoordinatorFrame>()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(frame)
    }
    .await;
    assert!(
        result.is_err(),
        "the coordinator accepted a foreign certificate: {result:?}"
    );
    assert_eq!(a.state.view.snapshot().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_frames_are_counted_and_survived() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(60, "").unwrap();
    let m = join(&c, "pi-1", &token).await.unwrap();
    let conn = member_connection(&c, &m).await;
    let (mut control, frame) = say_hello(&conn, PROTOCOL).await;
    assert!(matches!(frame, CoordinatorFrame::Welcome(_)), "{frame:?}");
    for junk in [&b"\xff\xff\xff"[..], b"", &[7u8; 900]] {
        conn.send_datagram(junk.to_vec().into()).unwrap();
    }
    let counted = async {
        while c.state.metrics.datagrams_malformed.get() != 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), counted)
        .await
        .expect("three malformed datagrams counted");
    // A frame announcing 4 GiB: refused before anything is buffered.
    control
        .tx
        .write_all(&[0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "an oversized frame should close the connection"
    );
    assert_eq!(c.state.metrics.frames_malformed.get(), 1);
    assert!(
        c.state
            .render_metrics()
            .contains("spillway_frames_refused_total{reason=\"malformed\"} 1"),
        "{}",
        c.state.render_metrics()
    );
    // Still serving: a well-behaved connection gets its Welcome.
    let conn = member_connection(&c, &m).await;
    let (_, frame) = say_hello(&conn, PROTOCOL).await;
    assert!(matches!(frame, CoordinatorFrame::Welcome(_)), "{frame:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_less_client_can_only_join() {
    let c = coordinator().await;
    let (token, _) = c.state.create_token(60, "").unwrap();
    let tls = spillway_link::tls::joining(token_pin(&token)).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(tls, c.quic, COORDINATOR_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    // A Hello instead of a JoinRequest: read as a join request, refused, nothing joined.
    let (mut tx, rx) = conn.open_bi().await.unwrap();
    send(&mut tx, &common::hello(PROTOCOL)).await.unwrap();
    let _ = tx.finish();
    let reply = FrameReader::new(rx, MAX_STREAM_FRAME)
        .next::<spillway_proto::wire::JoinReply>()
        .await;
    assert!(
        !matches!(
            reply,
            Ok(Some(spillway_proto::wire::JoinReply::Granted { .. }))
        ),
        "{reply:?}"
    );
    assert!(c.state.store.nodes().unwrap().is_empty());
}

fn token_pin(token: &str) -> [u8; 16] {
    spillway_link::token::JoinToken::parse(token)
        .unwrap()
        .ca_pin
}

/// A job update from a member, as its agent sends it.
fn job_update(id: spillway_proto::JobId, origin: Option<&str>) -> spillway_proto::wire::AgentFrame {
    spillway_proto::wire::AgentFrame::Job(spillway_proto::wire::JobUpdate {
        id,
        function: "f".into(),
        phase: spillway_proto::wire::JobPhase::Succeeded,
        input: Some("in/x".into()),
        outputs: vec![],
        reason: None,
        attempt: 1,
        queued_at_ms: 1,
        started_at_ms: None,
        finished_at_ms: None,
        origin: origin.map(str::to_owned),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_report_on_or_read_the_blobs_of_jobs_it_does_not_hold() {
    use spillway_proto::wire::{BlobRequest, BlobResponse};
    let c = coordinator().await;
    let (t1, _) = c.state.create_token(60, "").unwrap();
    let (t2, _) = c.state.create_token(60, "").unwrap();
    let owner = join(&c, "pi-1", &t1).await.unwrap();
    let other = join(&c, "pi-2", &t2).await.unwrap();
    let owner_conn = member_connection(&c, &owner).await;
    let (mut owner, _) = say_hello(&owner_conn, PROTOCOL).await;
    let other_conn = member_connection(&c, &other).await;
    let (mut other, _) = say_hello(&other_conn, PROTOCOL).await;

    // pi-1 reports its job; pi-2 then claims it, and claims to have run it for pi-1.
    let id = spillway_proto::JobId::from_bytes([9; 16]);
    send(&mut owner.tx, &job_update(id, None)).await.unwrap();
    let recorded = || c.state.store.job_row(&id.to_string()).unwrap();
    for _ in 0..100 {
        if recorded().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recorded().unwrap().node, "pi-1");
    send(&mut other.tx, &job_update(id, None)).await.unwrap();
    send(&mut other.tx, &job_update(id, Some("pi-1")))
        .await
        .unwrap();
    let refused = async {
        while c.state.metrics.frames_refused.get() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("both reports refused");
    let row = recorded().unwrap();
    assert_eq!((row.node.as_str(), row.ran_on.as_deref()), ("pi-1", None));

    // pi-1 stores a blob; pi-2 has no job that needs it and cannot read it.
    let put = spillway_link::stream::request::<_, BlobResponse>(
        &owner_conn,
        &BlobRequest::Put(b"pi-1's input".to_vec()),
        MAX_STREAM_FRAME,
    )
    .await
    .unwrap();
    let BlobResponse::Stored(digest) = put else {
        panic!("{put:?}")
    };
    let got = spillway_link::stream::request::<_, BlobResponse>(
        &other_conn,
        &BlobRequest::Get(digest),
        MAX_STREAM_FRAME,
    )
    .await
    .unwrap();
    assert!(
        matches!(&got, BlobResponse::Error(e) if e.contains("no job that needs this blob")),
        "{got:?}"
    );
}
