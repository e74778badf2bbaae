//! Load reports and what the coordinator concludes from them. Pure: the clock is a parameter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An agent's load, sent as one QUIC datagram every second and at once on a significant change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Increases with every report, so a reordered datagram never overwrites a newer one.
    pub seq: u64,
    /// The agent's wall clock when it sent the report (Unix ms), for staleness measurements.
    pub sent_at_ms: u64,
    pub queued: u32,
    pub running: u32,
    /// Age of the oldest queued job, 0 when nothing waits.
    pub oldest_queued_ms: u64,
    /// CPU use of the whole node, in tenths of a percent of all cores.
    pub cpu_permille: u16,
    pub memory_used: u64,
    pub memory_total: u64,
    pub functions: Vec<FunctionLoad>,
    /// MQTT messages refused since the agent started: on no function's topic, over the size
    /// limit.
    pub mqtt_unwanted: u64,
    pub mqtt_too_large: u64,
}

/// One function's share of a [`LoadReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLoad {
    pub name: String,
    pub free_slots: u32,
    pub queued: u32,
    pub running: u32,
    /// Recent mean run time, 0 while unknown.
    pub mean_run_ms: u32,
}

/// The payload a QUIC datagram can always carry (the IPv6 minimum MTU less QUIC overhead).
pub const DATAGRAM_BUDGET: usize = 1150;

impl LoadReport {
    /// Encodes the report for one datagram, dropping per-function entries from the end if the
    /// node runs so many functions that they do not fit (totals are always kept).
    pub fn to_datagram(&self, budget: usize) -> Vec<u8> {
        let mut report = self.clone();
        loop {
            let bytes = postcard::to_stdvec(&report).unwrap_or_default();
            if bytes.len() <= budget || report.functions.is_empty() {
                return bytes;
            }
            report.functions.pop();
        }
    }

    pub fn from_datagram(bytes: &[u8]) -> Result<Self, String> {
        match postcard::take_from_bytes(bytes) {
            Ok((report, [])) => Ok(report),
            Ok((_, rest)) => Err(format!(
                "malformed load report: {} bytes after its end",
                rest.len()
            )),
            Err(e) => Err(format!("malformed load report: {e}")),
        }
    }

    /// Whether `self` differs from `previous` enough to be worth sending before the next tick:
    /// a function gained or lost its last free slot, a queue started or emptied, or the queue
    /// moved by a quarter of its size (and by at least two jobs).
    pub fn differs_significantly(&self, previous: &LoadReport) -> bool {
        let queue_moved = {
            let (a, b) = (previous.queued as i64, self.queued as i64);
            let delta = (a - b).abs();
            delta >= 2 && delta * 4 >= a.min(b)
        };
        let emptied_or_started = (previous.queued == 0) != (self.queued == 0);
        let slots_flipped = self.functions.iter().any(|f| {
            previous
                .functions
                .iter()
                .find(|p| p.name == f.name)
                .is_none_or(|p| (p.free_slots == 0) != (f.free_slots == 0))
        }) || self.functions.len() != previous.functions.len();
        queue_moved || emptied_or_started || slots_flipped
    }
}

/// How the coordinator sees a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeHealth {
    /// Connected and reporting.
    Ready,
    /// Silent for longer than `suspect_after`: its load figures are doubtful.
    Suspect,
    /// Silent for longer than `down_after`, or never connected since the coordinator started.
    Down,
}

impl std::fmt::Display for NodeHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// When silence turns a node Suspect, then Down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub suspect_after: Duration,
    pub down_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(10),
        }
    }
}

impl Liveness {
    /// A node's health from the age of its last report (`None`: never heard from).
    pub fn health(&self, silent_for: Option<Duration>) -> NodeHealth {
        match silent_for {
            None => NodeHealth::Down,
            Some(age) if age > self.down_after => NodeHealth::Down,
            Some(age) if age > self.suspect_after => NodeHealth::Suspect,
            Some(_) => NodeHealth::Ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(queued: u32, free: &[(&str, u32)]) -> LoadReport {
        LoadReport {
            queued,
            functions: free
                .iter()
                .map(|(n, s)| FunctionLoad {
                    name: n.to_string(),
                    free_slots: *s,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn losing_the_last_free_slot_is_significant() {
        assert!(report(0, &[("f", 0)]).differs_significantly(&report(0, &[("f", 1)])));
        assert!(!report(0, &[("f", 1)]).differs_significantly(&report(0, &[("f", 2)])));
    }

    #[test]
    fn small_queue_wobble_is_not_significant_but_a_quarter_is() {
        assert!(!report(101, &[]).differs_significantly(&report(100, &[])));
        assert!(report(130, &[]).differs_significantly(&report(100, &[])));
        assert!(report(1, &[]).differs_significantly(&report(0, &[])));
    }

    #[test]
    fn a_report_with_many_functions_still_fits_one_datagram() {
        let names: Vec<String> = (0..200).map(|i| format!("function-number-{i}")).collect();
        let free: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 3)).collect();
        let mut r = report(7, &free);
        r.memory_total = u64::MAX;
        let bytes = r.to_datagram(DATAGRAM_BUDGET);
        assert!(bytes.len() <= DATAGRAM_BUDGET);
        let back = LoadReport::from_datagram(&bytes).unwrap();
        assert_eq!(back.queued, 7);
        assert!(!back.functions.is_empty() && back.functions.len() < 200);
    }

    #[test]
    fn silence_turns_a_node_suspect_then_down() {
        let l = Liveness::default();
        assert_eq!(
            l.health(Some(Duration::from_millis(900))),
            NodeHealth::Ready
        );
        assert_eq!(l.health(Some(Duration::from_secs(5))), NodeHealth::Suspect);
        assert_eq!(l.health(Some(Duration::from_secs(11))), NodeHealth::Down);
        assert_eq!(l.health(None), NodeHealth::Down);
    }
}
