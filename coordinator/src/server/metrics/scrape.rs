//! The gauges read at each scrape: per node and per function from the view's load reports, per
//! tier from the hand-over ledger, and certificates from the store.

use std::collections::BTreeMap;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use spillway_plumbing::metrics::gauge_family;

use super::per_node;
use crate::server::State;
use crate::server::store::NodeRecord;
use crate::server::view::NodeLive;

/// What one scrape reads, taken under each lock once and then encoded without any.
#[derive(Debug)]
pub struct Scrape {
    live: Vec<NodeLive>,
    records: Vec<NodeRecord>,
    /// The signing CA's fingerprint while a CA rotation is under way.
    rotating_to: Option<String>,
    /// Open hand-overs by where they are: `peer`, a replica kind, or `origin` (done, waiting
    /// for the origin to take the result or the job back).
    handovers: BTreeMap<String, u64>,
    blobs: usize,
    journal: (u64, u64),
}

impl Scrape {
    pub fn of(state: &State) -> Self {
        let trust = state.ca.trust();
        let (commits, records) = state.store.journal_stats();
        Self {
            live: state.view.snapshot(),
            records: state.store.nodes().unwrap_or_default(),
            rotating_to: trust
                .retiring
                .is_some()
                .then(|| hex::encode(trust.signing.fingerprint())),
            handovers: state.handovers_by_tier(),
            blobs: state.blobs.count(),
            journal: (commits, records),
        }
    }

    pub fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.nodes(e)?;
        self.functions(e)?;
        self.certificates(e)?;
        gauge_family(
            e,
            "spillway_handovers_open",
            "Handed-over jobs the coordinator answers for, by tier: on a peer, on a replica (by kind), or done and waiting for their origin",
            self.handovers
                .iter()
                .map(|(tier, n)| (vec![("tier", tier.clone())], *n)),
        )?;
        gauge_family(
            e,
            "spillway_blobs",
            "Inputs and outputs in the coordinator's blob store",
            [(Vec::<(&str, String)>::new(), self.blobs as u64)],
        )?;
        let (commits, records) = self.journal;
        for (name, help, v) in [
            (
                "spillway_handover_commits",
                "Durable commits of hand-over records (each may hold many)",
                commits,
            ),
            (
                "spillway_handover_records",
                "Hand-over records committed",
                records,
            ),
        ] {
            let metric = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(metric)?;
        }
        Ok(())
    }

    fn nodes(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut health: BTreeMap<String, u64> = ["Ready", "Suspect", "Down"]
            .into_iter()
            .map(|h| (h.to_owned(), 0))
            .collect();
        for n in &self.live {
            *health.entry(n.health.to_string()).or_default() += 1;
        }
        gauge_family(
            e,
            "spillway_nodes",
            "Nodes by health",
            health.into_iter().map(|(h, n)| (vec![("health", h)], n)),
        )?;
        let reports = || {
            self.live
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.report.as_ref()?)))
        };
        type Read = fn(&spillway_proto::load::LoadReport) -> f64;
        let from_reports: [(&str, &str, Read); 6] = [
            ("spillway_node_queued", "Jobs queued on a node", |r| {
                f64::from(r.queued)
            }),
            ("spillway_node_running", "Jobs running on a node", |r| {
                f64::from(r.running)
            }),
            (
                "spillway_node_oldest_wait_seconds",
                "How long the oldest queued job on a node has waited",
                |r| r.oldest_queued_ms as f64 / 1000.0,
            ),
            (
                "spillway_node_cpu_ratio",
                "CPU use of a node, as a share of all its cores",
                |r| f64::from(r.cpu_permille) / 1000.0,
            ),
            (
                "spillway_node_memory_used_bytes",
                "Memory in use on a node",
                |r| r.memory_used as f64,
            ),
            (
                "spillway_node_memory_total_bytes",
                "Memory of a node",
                |r| r.memory_total as f64,
            ),
        ];
        for (name, help, read) in from_reports {
            per_node(e, name, help, reports().map(|(n, r)| (n, read(r))))?;
        }
        per_node(
            e,
            "spillway_node_disk_full",
            "Whether a node's disk is under its [disk] min_free (1: it takes no new inputs)",
            self.live
                .iter()
                .map(|n| (n.name.clone(), u64::from(n.condition.disk_full))),
        )?;
        per_node(
            e,
            "spillway_node_cordoned",
            "Whether a node is cordoned (spillway cordon): it takes no work from other nodes",
            self.records
                .iter()
                .map(|n| (n.name.clone(), u64::from(n.cordoned))),
        )?;
        let mut refused = e.encode_descriptor(
            "spillway_mqtt_messages_refused",
            "MQTT messages an agent refused, by reason (as of its last load report)",
            None,
            MetricType::Counter,
        )?;
        for (node, r) in reports() {
            for (reason, n) in [
                ("unwanted_topic", r.mqtt_unwanted),
                ("too_large", r.mqtt_too_large),
            ] {
                let labels = vec![("node", node.clone()), ("reason", reason.to_owned())];
                ConstCounter::new(n).encode(refused.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn functions(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let loads = || {
            self.live.iter().flat_map(|n| {
                n.report.iter().flat_map(|r| r.functions.iter()).map(|f| {
                    (
                        vec![("node", n.name.clone()), ("function", f.name.clone())],
                        f,
                    )
                })
            })
        };
        spillway_plumbing::metrics::function_load_gauges(
            e,
            "spillway_function",
            "on a node",
            loads(),
        )?;
        Ok(())
    }

    /// When each node's certificate expires, for alerts well before a fleet drops off at once;
    /// and during a CA rotation, which nodes still depend on the old CA.
    fn certificates(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        per_node(
            e,
            "spillway_node_certificate_expiry_seconds",
            "When each node's certificate expires (seconds since the epoch)",
            self.records
                .iter()
                .map(|n| (n.name.clone(), n.cert_expires_at_ms / 1000)),
        )?;
        gauge_family(
            e,
            "spillway_ca_rotating",
            "Whether a mesh CA rotation is under way (spillway admin ca status)",
            [(
                Vec::<(&str, String)>::new(),
                u64::from(self.rotating_to.is_some()),
            )],
        )?;
        per_node(
            e,
            "spillway_node_on_old_ca",
            "During a CA rotation: 1 for a node whose certificate is from the old CA or that has not confirmed the new one",
            self.records.iter().filter_map(|n| {
                let signing = self.rotating_to.as_deref()?;
                let moved = n.issuer.as_deref() == Some(signing)
                    && n.trusted_cas.iter().any(|c| c == signing);
                Some((n.name.clone(), u64::from(!moved)))
            }),
        )
    }
}
