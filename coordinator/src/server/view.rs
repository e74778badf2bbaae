//! The live view of the mesh: who is connected, each node's latest load report, and how stale
//! that knowledge is. Updated by every datagram, read by the API and (later) by placement.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spillway_proto::load::{Liveness, LoadReport, NodeHealth};
use spillway_proto::wire::NodeCondition;

#[derive(Debug)]
struct Live {
    report: Option<LoadReport>,
    /// What the agent last said keeps it from taking work (1.4 and later).
    condition: NodeCondition,
    /// When the last report (or the connection) was heard.
    heard_at: Instant,
    connection: Option<quinn::Connection>,
    /// The last report's number on the current connection: an agent numbers its reports from
    /// 1 each time it starts, so a restarted one (an upgrade, a crash) starts over.
    last_seq: u64,
}

#[derive(Debug)]
struct Inner {
    nodes: HashMap<String, Live>,
}

/// One node as the view sees it now.
#[derive(Debug, Clone)]
pub struct NodeLive {
    pub name: String,
    pub health: NodeHealth,
    pub connected: bool,
    pub silent_for: Option<Duration>,
    pub report: Option<LoadReport>,
    pub condition: NodeCondition,
}

#[derive(Debug)]
pub struct View {
    inner: Mutex<Inner>,
    liveness: Liveness,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl View {
    pub fn new(liveness: Liveness) -> Self {
        Self {
            inner: Mutex::new(Inner {
                nodes: HashMap::new(),
            }),
            liveness,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a harmful way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node's connection came up (replacing any older one).
    pub fn connected(&self, node: &str, connection: quinn::Connection) {
        let mut inner = self.lock();
        let live = inner.nodes.entry(node.to_owned()).or_insert(Live {
            report: None,
            condition: NodeCondition::default(),
            heard_at: Instant::now(),
            connection: None,
            last_seq: 0,
        });
        if let Some(old) = live.connection.replace(connection) {
            old.close(
                0u32.into(),
                b"replaced by a newer connection from the same node",
            );
        }
        live.heard_at = Instant::now();
        live.last_seq = 0;
    }

    /// A node's connection ended; its last report stays (aging) until it returns.
    /// Whether it was the node's current connection (not one a newer one replaced).
    pub fn disconnected(&self, node: &str, stable_id: usize) -> bool {
        let mut inner = self.lock();
        if let Some(live) = inner.nodes.get_mut(node)
            && live
                .connection
                .as_ref()
                .is_some_and(|c| c.stable_id() == stable_id)
        {
            live.connection = None;
            return true;
        }
        false
    }

    /// Applies a report unless a newer one already arrived. Returns how stale it was when
    /// applied (from the agent's clock to ours), or `None` when it was not.
    pub fn report(&self, node: &str, report: LoadReport) -> Option<Duration> {
        let now = Instant::now();
        let delay = Duration::from_millis(wall_ms().saturating_sub(report.sent_at_ms));
        let mut inner = self.lock();
        let live = inner.nodes.get_mut(node)?;
        if report.seq <= live.last_seq {
            return None;
        }
        live.last_seq = report.seq;
        live.report = Some(report);
        live.heard_at = now;
        Some(delay)
    }

    /// Records what a node says keeps it from taking work; returns what it said before.
    pub fn condition(&self, node: &str, condition: NodeCondition) -> NodeCondition {
        let mut inner = self.lock();
        match inner.nodes.get_mut(node) {
            Some(live) => std::mem::replace(&mut live.condition, condition),
            None => NodeCondition::default(),
        }
    }

    pub fn connection(&self, node: &str) -> Option<quinn::Connection> {
        self.lock()
            .nodes
            .get(node)
            .and_then(|l| l.connection.clone())
    }

    pub fn node(&self, name: &str) -> Option<NodeLive> {
        let inner = self.lock();
        inner.nodes.get(name).map(|l| self.describe(name, l))
    }

    pub fn snapshot(&self) -> Vec<NodeLive> {
        let inner = self.lock();
        let mut nodes: Vec<NodeLive> = inner
            .nodes
            .iter()
            .map(|(name, l)| self.describe(name, l))
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    fn describe(&self, name: &str, l: &Live) -> NodeLive {
        let silent_for = l.heard_at.elapsed();
        let health = match self.liveness.health(Some(silent_for)) {
            // A node that hung up is not Ready, however recently it spoke.
            NodeHealth::Ready if l.connection.is_none() => NodeHealth::Suspect,
            h => h,
        };
        NodeLive {
            name: name.to_owned(),
            health,
            connected: l.connection.is_some(),
            silent_for: Some(silent_for),
            report: l.report.clone(),
            condition: l.condition,
        }
    }
}
