//! A load generator that speaks the real protocol over real QUIC as N simulated agents: each
//! joins with its own token and key, holds a mutual-TLS connection, says Hello and sends a load
//! report datagram every interval. Used by the mesh benchmark (`cargo bench --bench mesh`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spillway_link::membership::Membership;
use spillway_link::membership::request_membership;
use spillway_link::stream::{FrameReader, send};
use spillway_proto::load::{DATAGRAM_BUDGET, FunctionLoad, LoadReport};
use spillway_proto::wire::{
    AgentFrame, COORDINATOR_SERVER_NAME, Capacity, CoordinatorFrame, Hello, MAX_STREAM_FRAME,
    PROTOCOL,
};
use tokio::task::JoinSet;

/// Joins `tokens.len()` simulated nodes (`sim-0`, `sim-1`, …), `parallel` at a time.
pub async fn enroll(
    coordinator: SocketAddr,
    tokens: Vec<String>,
    parallel: usize,
) -> Result<Vec<Membership>, String> {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire().await;
            request_membership(&format!("sim-{i}"), &coordinator.to_string(), &token)
                .await
                .map(|m| (i, m))
                .map_err(|e| format!("sim-{i}: {e}"))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| e.to_string())??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

/// What a fleet run did.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub reports: AtomicU64,
    /// Why the first simulated agent that failed did.
    pub first_error: std::sync::Mutex<Option<String>>,
}

/// Connects every member (spread over `sockets` UDP sockets) and reports every `interval`
/// until `until`. Returns once all simulated agents have stopped.
pub async fn run_fleet(
    coordinator: SocketAddr,
    members: Vec<Membership>,
    sockets: usize,
    interval: Duration,
    ramp_per_sec: u32,
    until: Instant,
    stats: Arc<FleetStats>,
) {
    let endpoints: Vec<quinn::Endpoint> = (0..sockets.max(1))
        .filter_map(|_| quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).ok())
        .collect();
    let n = members.len().max(1);
    let mut set = JoinSet::new();
    let start = tokio::time::Instant::now();
    for (i, m) in members.into_iter().enumerate() {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let stats = stats.clone();
        // Connections ramp up at `ramp_per_sec`; reports are spread evenly over the interval.
        let connect_at = start + Duration::from_secs_f64(i as f64 / f64::from(ramp_per_sec.max(1)));
        let phase = interval.mul_f64(i as f64 / n as f64);
        set.spawn(async move {
            tokio::time::sleep_until(connect_at).await;
            match simulate(endpoint, coordinator, m, phase, interval, until, &stats).await {
                Ok(()) => {}
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = stats.first_error.lock() {
                        first.get_or_insert(e);
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}

async fn simulate(
    endpoint: quinn::Endpoint,
    coordinator: SocketAddr,
    m: Membership,
    phase: Duration,
    interval: Duration,
    until: Instant,
    stats: &FleetStats,
) -> Result<(), String> {
    let tls =
        spillway_link::tls::member(&m.ca_der, m.cert_der, m.key_der).map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(tls, coordinator, COORDINATOR_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, rx) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = AgentFrame::Hello(Hello {
        version: PROTOCOL,
        agent_version: "loadgen".into(),
        cluster_id: None,
        labels: Default::default(),
        capacity: Capacity {
            cpu_millis: 4000,
            memory_bytes: 1 << 30,
        },
        deployment: [0; 32],
        arch: "sim".into(),
    });
    send(&mut tx, &hello).await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(rx, MAX_STREAM_FRAME);
    match reader.next::<CoordinatorFrame>().await {
        Ok(Some(CoordinatorFrame::Welcome(_))) => {}
        other => return Err(format!("no welcome: {other:?}")),
    }
    stats.connected.fetch_add(1, Ordering::Relaxed);
    // Deployments may follow; read and drop them so the stream never backs up.
    tokio::spawn(async move { while let Ok(Some(_)) = reader.next::<CoordinatorFrame>().await {} });
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(interval);
    let mut seq = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        seq += 1;
        let report = LoadReport {
            seq,
            sent_at_ms: spillway_plumbing::now_ms(),
            queued: (seq % 7) as u32,
            running: 1,
            oldest_queued_ms: 0,
            cpu_permille: 250,
            memory_used: 300 << 20,
            memory_total: 1 << 30,
            functions: vec![FunctionLoad {
                name: "fire-detection".into(),
                free_slots: 2,
                queued: (seq % 7) as u32,
                running: 1,
                mean_run_ms: 1200,
            }],
            ..LoadReport::default()
        };
        if conn
            .send_datagram(report.to_datagram(DATAGRAM_BUDGET).into())
            .is_err()
        {
            return Err("connection lost".into());
        }
        stats.reports.fetch_add(1, Ordering::Relaxed);
    }
    conn.close(0u32.into(), b"loadgen done");
    Ok(())
}
