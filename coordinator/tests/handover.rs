//! The hand-over protocol against a real coordinator over real QUIC on loopback, driven frame by
//! frame from the test so the awkward moments happen exactly when we want: an answer lost with
//! its connection, a coordinator restarted while a peer holds a lease.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spillway_coordinator::config::{CoordinatorConfig, PlacementSettings};
use spillway_coordinator::server::{Coordinator, State};
use spillway_link::membership::{self as mesh, Membership};
use spillway_link::stream::{FrameReader, request, send};
use spillway_proto::load::{DATAGRAM_BUDGET, FunctionLoad, LoadReport};
use spillway_proto::wire::{
    AgentFrame, BlobRequest, BlobResponse, CoordinatorFrame, DeployAck, GuestDone,
    MAX_STREAM_FRAME, Offer, OfferReason, Outcome, PROTOCOL,
};
use spillway_proto::{Event, FileEvent, ObjectKey};

struct Running {
    state: Arc<State>,
    quic: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, quic: SocketAddr) -> Running {
    start_with(dir, quic, PlacementSettings::default()).await
}

async fn start_with(dir: &Path, quic: SocketAddr, placement: PlacementSettings) -> Running {
    let config = CoordinatorConfig {
        state_dir: dir.join("coordinator"),
        quic_listen: quic,
        http_listen: "127.0.0.1:0".parse().unwrap(),
        placement,
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::start(config).await.unwrap();
    let (state, quic) = (c.state.clone(), c.quic_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(c.run(async {
        let _ = stopped.await;
    }));
    Running {
        state,
        quic,
        stop,
        done,
    }
}

/// One side of a member connection, speaking the protocol as an agent would.
struct Member {
    conn: quinn::Connection,
    tx: quinn::SendStream,
    frames: FrameReader,
}

async fn connect(quic: SocketAddr, m: &Membership) -> Member {
    let conn = common::member_connection(quic, m).await;
    let (mut tx, rx) = conn.open_bi().await.unwrap();
    send(&mut tx, &common::hello(PROTOCOL)).await.unwrap();
    let mut member = Member {
        conn,
        tx,
        frames: FrameReader::new(rx, MAX_STREAM_FRAME),
    };
    assert!(matches!(
        member.next().await,
        Some(CoordinatorFrame::Welcome(_))
    ));
    member
}

impl Member {
    async fn next(&mut self) -> Option<CoordinatorFrame> {
        tokio::time::timeout(Duration::from_secs(5), self.frames.next())
            .await
            .ok()?
            .ok()?
    }

    /// The next frame that is not a deployment, waiting as long as it takes.
    async fn next_handover_within(&mut self) -> Option<CoordinatorFrame> {
        loop {
            match self.frames.next().await.ok()? {
                Some(CoordinatorFrame::Deploy(_) | CoordinatorFrame::Trust { .. }) => continue,
                other => return other,
            }
        }
    }

    /// The next frame that is not a deployment or the CAs to trust (a coordinator sends both on
    /// every connection).
    async fn next_handover(&mut self) -> Option<CoordinatorFrame> {
        loop {
            match self.next().await? {
                CoordinatorFrame::Deploy(_) | CoordinatorFrame::Trust { .. } => continue,
                other => return Some(other),
            }
        }
    }

    async fn send(&mut self, frame: AgentFrame) {
        send(&mut self.tx, &frame).await.unwrap();
    }

    async fn put(&self, bytes: &[u8]) -> [u8; 32] {
        match request(
            &self.conn,
            &BlobRequest::Put(bytes.to_vec()),
            MAX_STREAM_FRAME,
        )
        .await
        .unwrap()
        {
            BlobResponse::Stored(d) => d,
            other => panic!("{other:?}"),
        }
    }

    async fn get(&self, digest: [u8; 32]) -> Vec<u8> {
        match request(&self.conn, &BlobRequest::Get(digest), MAX_STREAM_FRAME)
            .await
            .unwrap()
        {
            BlobResponse::Blob(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// Runs `f` with free slots, as far as the coordinator can tell.
    async fn offer_slots(&mut self, free_slots: u32, seq: u64) {
        self.send(AgentFrame::Deployed(DeployAck {
            deployment: [1; 32],
            running: vec!["f".into()],
            refused: vec![],
        }))
        .await;
        let report = LoadReport {
            seq,
            functions: vec![FunctionLoad {
                name: "f".into(),
                free_slots,
                queued: 0,
                running: 0,
                mean_run_ms: 100,
            }],
            ..LoadReport::default()
        };
        self.conn
            .send_datagram(report.to_datagram(DATAGRAM_BUDGET).into())
            .unwrap();
    }
}

fn offer(input: [u8; 32]) -> Offer {
    offer_of("in/cam.jpg", input)
}

fn offer_of(key: &str, input: [u8; 32]) -> Offer {
    let event = Event::File(FileEvent {
        bucket: "frames".into(),
        key: ObjectKey::parse(key).unwrap(),
        size: 5,
        mtime_ns: 1,
        sha256: input,
    });
    Offer {
        id: event.job_id("origin", "f"),
        function: "f".into(),
        event,
        input,
        input_bytes: 5,
        reason: OfferReason::Rescheduler,
        queued_at_ms: 0,
        local_wait_ms: 0,
        run_ms: 0,
    }
}

/// A member that runs `f` with `free_slots`, once the coordinator's view shows it.
async fn ready_peer(c: &Running, m: &Membership, name: &str, free_slots: u32) -> Member {
    let mut peer = connect(c.quic, m).await;
    peer.offer_slots(free_slots, 1).await;
    until("the peer's slots are known", || {
        c.state.view.node(name).is_some_and(|n| n.report.is_some())
    })
    .await;
    peer
}

async fn members(c: &Running, names: &[&str]) -> Vec<Membership> {
    let mut out = Vec::new();
    for name in names {
        let (token, _) = c.state.create_token(60, "").unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        out.push(
            mesh::join(&dir, name, &c.quic.to_string(), &token)
                .await
                .unwrap(),
        );
    }
    out
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// Open hand-overs (every tier) and blobs kept, in the words of `/metrics` before it had tiers.
fn open(c: &Running) -> String {
    let handovers: u64 = c.state.handovers_by_tier().values().sum();
    format!(
        "spillway_handovers_open {handovers}\nspillway_blobs {}\n",
        c.state.blobs.count()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_with_its_connection_is_given_again_and_the_job_is_placed_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let m = members(&c, &["origin", "peer"]).await;
    let mut peer = ready_peer(&c, &m[1], "peer", 2).await;

    let mut origin = connect(c.quic, &m[0]).await;
    let input = origin.put(b"image").await;
    let offer = offer(input);
    origin.send(AgentFrame::Offer(offer.clone())).await;
    // The coordinator takes the job; the origin's connection dies before it hears so.
    until("the job is accepted", || {
        open(&c).contains("spillway_handovers_open 1")
    })
    .await;
    origin.conn.close(0u32.into(), b"cut");
    let Some(CoordinatorFrame::Place(p)) = peer.next_handover().await else {
        panic!("the peer got no placement");
    };
    assert_eq!((p.id, p.attempt, p.hops), (offer.id, 1, 1));
    assert_eq!(p.visited, ["origin", "peer"]);
    assert_eq!(peer.get(p.input).await, b"image");

    // Reconnected, the origin offers again: it is told the job is taken, and nothing is placed
    // a second time.
    let mut origin = connect(c.quic, &m[0]).await;
    origin.send(AgentFrame::Offer(offer.clone())).await;
    assert_eq!(
        origin.next_handover().await,
        Some(CoordinatorFrame::Accepted(offer.id))
    );
    assert!(
        peer.next_handover().await.is_none(),
        "placed twice on the peer"
    );

    // The peer's result reaches the origin; once the origin has it, the coordinator forgets it.
    let output = peer.put(b"FIRE").await;
    peer.send(AgentFrame::GuestDone(GuestDone {
        id: offer.id,
        attempt: 1,
        outcome: Outcome::Succeeded {
            outputs: vec![("out/cam.txt".into(), output)],
        },
    }))
    .await;
    assert_eq!(
        peer.next_handover().await,
        Some(CoordinatorFrame::GuestAck(offer.id))
    );
    let Some(CoordinatorFrame::Deliver { id, outcome }) = origin.next_handover().await else {
        panic!("no delivery");
    };
    assert_eq!(id, offer.id);
    assert_eq!(
        outcome,
        Outcome::Succeeded {
            outputs: vec![("out/cam.txt".into(), output)]
        }
    );
    assert_eq!(origin.get(output).await, b"FIRE");
    origin.send(AgentFrame::HandoverAck(offer.id)).await;
    until("the coordinator lets go", || {
        open(&c).contains("spillway_handovers_open 0") && open(&c).contains("spillway_blobs 0")
    })
    .await;
    // A late duplicate result is acknowledged and changes nothing.
    peer.send(AgentFrame::GuestDone(GuestDone {
        id: offer.id,
        attempt: 1,
        outcome: Outcome::Failed {
            reason: "late".into(),
        },
    }))
    .await;
    assert_eq!(
        peer.next_handover().await,
        Some(CoordinatorFrame::GuestAck(offer.id))
    );
    assert!(origin.next_handover().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_nobody_can_take_is_declined_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let m = members(&c, &["origin", "busy"]).await;
    let mut busy = connect(c.quic, &m[1]).await;
    busy.offer_slots(0, 1).await;
    let mut origin = connect(c.quic, &m[0]).await;
    let input = origin.put(b"image").await;
    // The origin would start it at once (its run takes as long as the busy peer's): waiting for
    // the peer's slot cannot beat that.
    let offer = Offer {
        local_wait_ms: 0,
        run_ms: 100,
        ..offer(input)
    };
    origin.send(AgentFrame::Offer(offer.clone())).await;
    let Some(CoordinatorFrame::Declined { id, reason }) = origin.next_handover().await else {
        panic!("expected a refusal");
    };
    assert_eq!(id, offer.id);
    assert!(reason.contains("predicted to finish it sooner"), "{reason}");
    assert!(open(&c).contains("spillway_handovers_open 0"));
    // Dropped right after the answer leaves (blobs go only behind the messages queued before).
    until("the input of a declined offer is not kept", || {
        open(&c).contains("spillway_blobs 0")
    })
    .await;
    assert!(busy.next_handover().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_still_owns_what_it_accepted_and_places_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let quic = c.quic;
    let m = members(&c, &["origin", "peer"]).await;
    let mut peer = ready_peer(&c, &m[1], "peer", 1).await;
    let mut origin = connect(quic, &m[0]).await;
    let offer = offer(origin.put(b"image").await);
    origin.send(AgentFrame::Offer(offer.clone())).await;
    assert_eq!(
        origin.next_handover().await,
        Some(CoordinatorFrame::Accepted(offer.id))
    );
    assert!(matches!(
        peer.next_handover().await,
        Some(CoordinatorFrame::Place(_))
    ));

    // The coordinator goes down and comes back on the same state and address.
    let _ = c.stop.send(());
    let _ = c.done.await;
    drop(c.state);
    let c = start(dir.path(), quic).await;
    assert!(
        open(&c).contains("spillway_handovers_open 1"),
        "{}",
        open(&c)
    );
    // The peer reconnects: its lease is repeated, with the input still there.
    let mut peer = connect(quic, &m[1]).await;
    let Some(CoordinatorFrame::Place(p)) = peer.next_handover().await else {
        panic!("the lease was not repeated after the restart");
    };
    assert_eq!((p.id, p.attempt), (offer.id, 1));
    assert_eq!(peer.get(p.input).await, b"image");
    // A re-offer from the origin is still answered from the ledger.
    let mut origin = connect(quic, &m[0]).await;
    origin.send(AgentFrame::Offer(offer.clone())).await;
    assert_eq!(
        origin.next_handover().await,
        Some(CoordinatorFrame::Accepted(offer.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stays_away_loses_all_its_leases_at_once_and_the_jobs_go_home() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let m = members(&c, &["origin", "peer"]).await;
    let mut peer = ready_peer(&c, &m[1], "peer", 2).await;
    let mut origin = connect(c.quic, &m[0]).await;
    let mut ids = Vec::new();
    for key in ["in/a.jpg", "in/b.jpg"] {
        let offer = offer_of(key, origin.put(key.as_bytes()).await);
        origin.send(AgentFrame::Offer(offer.clone())).await;
        assert_eq!(
            origin.next_handover().await,
            Some(CoordinatorFrame::Accepted(offer.id))
        );
        assert!(matches!(
            peer.next_handover().await,
            Some(CoordinatorFrame::Place(_))
        ));
        ids.push(offer.id);
    }
    // The peer goes; past the grace period (3 s) both jobs come back: no other peer can take
    // them. The peer is counted once, not once per job.
    peer.conn.close(0u32.into(), b"gone");
    let mut returned = Vec::new();
    for _ in 0..2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), origin.next_handover_within())
            .await
            .unwrap();
        let Some(CoordinatorFrame::Return { id, reason }) = frame else {
            panic!("expected a return, got {frame:?}");
        };
        assert!(reason.contains("no other peer"), "{reason}");
        returned.push(id);
        origin.send(AgentFrame::HandoverAck(id)).await;
    }
    returned.sort();
    ids.sort();
    assert_eq!(returned, ids);
    let metrics = c.state.render_metrics();
    assert!(
        metrics.contains("spillway_leases_expired_total 1\n"),
        "{metrics}"
    );
    until("the coordinator lets go", || {
        open(&c).contains("spillway_handovers_open 0") && open(&c).contains("spillway_blobs 0")
    })
    .await;
}

/// Applies `f` with one Lambda replica (1 GiB, so a job is predicted to bill 2 GB-s: the
/// placement core's 1 s default run plus `[placement] lambda_start`'s 1 s).
fn apply_lambda_function(c: &Running) {
    let text = "functions:\n  oscar:\n  - edge:\n      name: f\n      runtime: process\n      script: f.sh\n      memory: 1Gi\n      replicas:\n      - {type: lambda, function_name: fire, region: us-east-1}\n";
    let mut files = std::collections::BTreeMap::new();
    files.insert("f.sh".to_owned(), "IyEvYmluL3NoCg==".to_owned());
    let req = spillway_api::ApplyRequest {
        file: "f.yaml".into(),
        text: text.into(),
        files,
    };
    c.state.apply_functions(&req).unwrap();
}

/// A coordinator with `placement` and [`apply_lambda_function`] applied, and an origin linked.
async fn lambda_origin(dir: &Path, placement: PlacementSettings) -> (Running, Member) {
    let c = start_with(dir, "127.0.0.1:0".parse().unwrap(), placement).await;
    apply_lambda_function(&c);
    let m = members(&c, &["origin"]).await;
    let origin = connect(c.quic, &m[0]).await;
    (c, origin)
}

/// The coordinator's answer about `id`, skipping frames about other jobs.
async fn answer_about(origin: &mut Member, id: spillway_proto::JobId) -> CoordinatorFrame {
    loop {
        let frame = origin.next_handover().await.expect("an answer");
        let about = match &frame {
            CoordinatorFrame::Accepted(j) => *j == id,
            CoordinatorFrame::Declined { id: j, .. } => *j == id,
            _ => false,
        };
        if about {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_is_used_only_within_the_hourly_budget_and_the_cost_bound() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one job's 2 GB-s in the hour, not two.
    let budget = PlacementSettings {
        elastic_budget_gb_s_per_hour: Some(3.0),
        ..PlacementSettings::default()
    };
    let (c, mut origin) = lambda_origin(dir.path(), budget).await;
    let first = offer_of("in/1.jpg", origin.put(b"one").await);
    origin.send(AgentFrame::Offer(first.clone())).await;
    assert_eq!(
        answer_about(&mut origin, first.id).await,
        CoordinatorFrame::Accepted(first.id),
        "within the budget, Lambda takes the job"
    );
    let second = offer_of("in/2.jpg", origin.put(b"two").await);
    origin.send(AgentFrame::Offer(second.clone())).await;
    let CoordinatorFrame::Declined { reason, .. } = answer_about(&mut origin, second.id).await
    else {
        panic!("the second job would pass the hourly budget: it must stay home");
    };
    assert!(reason.contains("predicted to finish it sooner"), "{reason}");
    let _ = c.stop.send(());
    let _ = c.done.await;

    // A cost bound below one job's price keeps Lambda out altogether.
    let dir = tempfile::tempdir().unwrap();
    let bound = PlacementSettings {
        cost_bound_usd: Some(0.000_01),
        ..PlacementSettings::default()
    };
    let (_c, mut origin) = lambda_origin(dir.path(), bound).await;
    let offer = offer_of("in/1.jpg", origin.put(b"one").await);
    origin.send(AgentFrame::Offer(offer.clone())).await;
    assert!(
        matches!(
            answer_about(&mut origin, offer.id).await,
            CoordinatorFrame::Declined { .. }
        ),
        "2 GB-s at $0.0000166667 is $0.000033, over the $0.00001 bound"
    );
}
