//! Delegation to an `endpoint` replica: `cargo bench -p spillway-coordinator --bench delegation [-- N]`.
//!
//! A real HTTP endpoint on loopback (axum, answers 200 at once) and N job envelopes, in one run,
//! side by side:
//! - `direct POST`: the same JSON posted by a bare HTTP client (the floor);
//! - `endpoint hop`: through the replica backend and the delegation state machine, as the
//!   coordinator sends it (headers, idempotency key, classification of the answer);
//! - `hop + ledger`: as above, plus the coordinator's durable hand-over records as the ledger
//!   persists them: the placement record is queued to the store's journal and the submission
//!   waits for its commit, then the result's record likewise. Records queued while a commit runs
//!   share the next one (group commit);
//! - `hop + ledger 1/fsync`: the same records with one commit in flight at a time, as the
//!   coordinator did when it committed each record under its hand-over lock (the baseline the
//!   group commit replaced).
//!
//! Latency is one job at a time (p50/p99); throughput is N jobs with 64 in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spillway_coordinator::server::replicas::Backend;
use spillway_coordinator::server::replicas::endpoint::{Callbacks, EndpointBackend};
use spillway_coordinator::server::store::Store;
use spillway_coordinator::server::store::{HandoverRow, RowState};
use spillway_placement::delegation::{Attempt, Next, ReconcilePolicy};
use spillway_proto::envelope::{ENVELOPE_VERSION, Envelope, InputRef};
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::Outcome;
use spillway_proto::{Event, FileEvent, JobId};

const IN_FLIGHT: usize = 64;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let url = endpoint().await;
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("bench.redb")).expect("store"));
        let http = reqwest_tls::Client::new();
        let backend = Arc::new(EndpointBackend {
            id: format!("endpoint:{url}"),
            url: url.clone(),
            headers: vec![("X-Api-Key".into(), "bench".into())],
            http: http.clone(),
            timeout: Duration::from_secs(5),
            callbacks: Arc::new(Callbacks::default()),
        });
        let modes = [
            "direct POST",
            "endpoint hop",
            "hop + ledger",
            "hop + ledger 1/fsync",
        ];
        let one_commit_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
        let mut figures = Vec::new();
        for (m, name) in modes.iter().enumerate() {
            let one = |i: usize| {
                let (http, url, backend, store) =
                    (http.clone(), url.clone(), backend.clone(), store.clone());
                let serial = (m == 3).then(|| one_commit_at_a_time.clone());
                async move { delegate(m, i, &http, &url, &backend, &store, serial).await }
            };
            // Warm up connections.
            for i in 0..50 {
                one(i).await;
            }
            let mut lat = Vec::with_capacity(1000);
            for i in 0..1000 {
                let t = Instant::now();
                one(1_000_000 + i).await;
                lat.push(t.elapsed());
            }
            lat.sort();
            let before = store.journal_stats();
            let t = Instant::now();
            let mut next = 0usize;
            let mut running = tokio::task::JoinSet::new();
            while next < n || !running.is_empty() {
                while next < n && running.len() < IN_FLIGHT {
                    running.spawn(one(2_000_000 + next));
                    next += 1;
                }
                running.join_next().await;
            }
            let rate = n as f64 / t.elapsed().as_secs_f64();
            let after = store.journal_stats();
            let (commits, records) = (after.0 - before.0, after.1 - before.1);
            let batching = if commits > 0 {
                format!(" ({records} records in {commits} commits)")
            } else {
                String::new()
            };
            let (p50, p99) = (lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
            println!(
                "{name:>20}: one at a time p50 {:.3} ms, p99 {:.3} ms; {n} jobs, {IN_FLIGHT} in flight: {rate:.0} jobs/s{batching}",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            figures.push((p50, rate));
        }
        let (direct, hop, ledger, serial) = (figures[0], figures[1], figures[2], figures[3]);
        println!(
            "\nadded latency per hop (p50): backend {:.3} ms over a bare POST, {:.3} ms with the ledger",
            (hop.0.as_secs_f64() - direct.0.as_secs_f64()) * 1e3,
            (ledger.0.as_secs_f64() - direct.0.as_secs_f64()) * 1e3
        );
        println!(
            "ratios: hop/direct rate {:.2}, ledger/direct rate {:.2}, group commit/1 per fsync rate {:.2}",
            hop.1 / direct.1,
            ledger.1 / direct.1,
            ledger.1 / serial.1
        );

    });
}

async fn delegate(
    mode: usize,
    i: usize,
    http: &reqwest_tls::Client,
    url: &str,
    backend: &EndpointBackend,
    store: &Store,
    serial: Option<Arc<tokio::sync::Mutex<()>>>,
) {
    let e = envelope(i);
    match mode {
        0 => {
            let r = http.post(url).json(&e).send().await.expect("post");
            assert!(r.status().is_success());
        }
        _ => {
            let id = e.job.to_string();
            let journaled = mode >= 2;
            if journaled {
                let row = row(
                    &e,
                    RowState::Placed {
                        peer: backend.id().to_owned(),
                    },
                );
                // The driver gets the placement only once its record is durable.
                record(store, &id, row, serial.as_deref()).await;
            }
            let mut a = Attempt::new(backend.id().to_owned(), ReconcilePolicy::default());
            let next = a.submitted(backend.submit(&e).await);
            assert!(
                matches!(
                    next,
                    Next::Finished {
                        succeeded: true,
                        ..
                    }
                ),
                "{next:?}"
            );
            if journaled {
                let done = row(
                    &e,
                    RowState::Finished(Outcome::Succeeded { outputs: vec![] }),
                );
                // The result is delivered to the origin only once its record is durable.
                record(store, &id, done, serial.as_deref()).await;
            }
        }
    }
}

/// Queues a hand-over record and waits until it is durable; with `serial`, no other record is
/// in flight meanwhile.
async fn record(
    store: &Store,
    id: &str,
    row: HandoverRow,
    serial: Option<&tokio::sync::Mutex<()>>,
) {
    let _one = match serial {
        Some(m) => Some(m.lock().await),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.queue_handovers(
        vec![(id.to_owned(), Some(row))],
        Box::new(move |written| {
            let _ = tx.send(written);
        }),
    );
    rx.await.expect("journal").expect("persist");
}

fn envelope(i: usize) -> Envelope {
    let key = ObjectKey::parse(&format!("in/frame-{i}.jpg")).expect("key");
    let job = JobId::derive("bench-node", "fire", key.as_str(), &[0; 32]);
    Envelope {
        spillway: ENVELOPE_VERSION,
        job,
        function: "fire".into(),
        origin: "bench-node".into(),
        hops: 1,
        attempt: 1,
        event: Event::File(FileEvent {
            bucket: "frames".into(),
            key,
            size: 1024,
            mtime_ns: 0,
            sha256: [0; 32],
        }),
        input: InputRef {
            name: format!("frame-{i}.jpg"),
            size: 1024,
            sha256: "00".repeat(32),
            url: "http://127.0.0.1:1/v1/blobs/00?expires=0&signature=00".into(),
        },
        callback: "http://127.0.0.1:1/v1/callbacks/00?expires=0&signature=00".into(),
        expires_at: 0,
        upload: None,
        script: None,
        variables: Default::default(),
    }
}

fn row(e: &Envelope, state: RowState) -> HandoverRow {
    HandoverRow {
        id: e.job,
        origin: e.origin.clone(),
        function: e.function.clone(),
        hops: 1,
        visited: vec![e.origin.clone()],
        attempt: 1,
        state,
        event: e.event.clone(),
        input: [0; 32],
        accepted_at_ms: 0,
    }
}

/// An endpoint that reads the envelope and answers 200, on a free loopback port.
async fn endpoint() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/jobs",
        post(|body: axum::body::Bytes| async move {
            assert!(!body.is_empty());
            axum::http::StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jobs")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
