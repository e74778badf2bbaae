//! Counters the coordinator exports on `GET /metrics` (Prometheus text format). Every counter
//! here is incremented somewhere; refusals are counted by reason so an operator can tell a
//! misconfigured agent from an attack.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::view::View;

#[derive(Debug, Default)]
pub struct Metrics {
    pub reports: AtomicU64,
    pub reports_out_of_order: AtomicU64,
    pub datagrams_malformed: AtomicU64,
    pub frames_malformed: AtomicU64,
    pub frames_refused: AtomicU64,
    pub joins: AtomicU64,
    pub joins_refused: AtomicU64,
    pub certificate_renewals: AtomicU64,
    pub certificate_renewals_refused: AtomicU64,
    pub connections_refused: AtomicU64,
    pub job_updates: AtomicU64,
    pub api_unauthorized: AtomicU64,
    pub api_forbidden: AtomicU64,
    pub api_connections_refused: AtomicU64,
    pub api_timeouts: AtomicU64,
    pub handovers_accepted: AtomicU64,
    pub handovers_declined: AtomicU64,
    pub leases_expired: AtomicU64,
    pub events_accepted: AtomicU64,
    pub events_redelivered: AtomicU64,
    pub events_malformed: AtomicU64,
    pub events_unrouted: AtomicU64,
    pub events_refused: AtomicU64,
    pub replica_placements: AtomicU64,
    pub replica_fallthroughs: AtomicU64,
    pub replica_reconciles: AtomicU64,
    pub replica_succeeded: AtomicU64,
    pub replica_failed: AtomicU64,
    /// MQTT connections and packets the gateway refused, by reason.
    mqtt_refused: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn mqtt_refused(&self, reason: &'static str) {
        let mut m = self.mqtt_refused.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(reason).or_default();
        *n = n.saturating_add(1);
    }

    pub fn render(&self, view: &View) -> String {
        let mut out = String::new();
        let counters = [
            (
                "spillway_load_reports_total",
                "Load reports applied to the view",
                &self.reports,
            ),
            (
                "spillway_load_reports_out_of_order_total",
                "Load reports older than one already applied",
                &self.reports_out_of_order,
            ),
            (
                "spillway_datagrams_malformed_total",
                "Datagrams that were not load reports",
                &self.datagrams_malformed,
            ),
            (
                "spillway_frames_malformed_total",
                "Stream frames refused (malformed, oversized, unexpected)",
                &self.frames_malformed,
            ),
            (
                "spillway_api_forbidden_total",
                "API requests refused because the token's scope does not allow them",
                &self.api_forbidden,
            ),
            (
                "spillway_api_connections_refused_total",
                "API connections dropped because the connection limit was reached",
                &self.api_connections_refused,
            ),
            (
                "spillway_api_timeouts_total",
                "API requests cut off at their route's time limit",
                &self.api_timeouts,
            ),
            (
                "spillway_frames_refused_total",
                "Well-formed member frames refused: reports on jobs or reads of blobs the member has no job for",
                &self.frames_refused,
            ),
            (
                "spillway_joins_total",
                "Agents that joined with a token",
                &self.joins,
            ),
            (
                "spillway_joins_refused_total",
                "Join attempts refused (bad, expired, revoked or reused token, taken name, rate limit, version)",
                &self.joins_refused,
            ),
            (
                "spillway_certificate_renewals_total",
                "Node certificates renewed over the mesh",
                &self.certificate_renewals,
            ),
            (
                "spillway_certificate_renewals_refused_total",
                "Certificate renewals refused (bad request, node removed, store error)",
                &self.certificate_renewals_refused,
            ),
            (
                "spillway_connections_refused_total",
                "Connections refused (unknown certificate, version)",
                &self.connections_refused,
            ),
            (
                "spillway_job_updates_total",
                "Job state changes reported by agents",
                &self.job_updates,
            ),
            (
                "spillway_api_unauthorized_total",
                "API requests without a valid token",
                &self.api_unauthorized,
            ),
            (
                "spillway_handovers_accepted_total",
                "Jobs origins handed over to the coordinator",
                &self.handovers_accepted,
            ),
            (
                "spillway_replica_placements_total",
                "Jobs placed on replicas outside the mesh (endpoints, OSCAR clusters)",
                &self.replica_placements,
            ),
            (
                "spillway_replica_fallthroughs_total",
                "Replica attempts that certainly did not run the job and moved it on",
                &self.replica_fallthroughs,
            ),
            (
                "spillway_replica_reconciles_total",
                "Times a replica was asked about a job whose submission went unanswered",
                &self.replica_reconciles,
            ),
            (
                "spillway_replica_succeeded_total",
                "Jobs replicas finished successfully",
                &self.replica_succeeded,
            ),
            (
                "spillway_replica_failed_total",
                "Jobs that failed on a replica, or may have run there without a result",
                &self.replica_failed,
            ),
            (
                "spillway_handovers_declined_total",
                "Offers declined (no peer had a free slot)",
                &self.handovers_declined,
            ),
            (
                "spillway_leases_expired_total",
                "Peers whose jobs were placed again after they stayed away",
                &self.leases_expired,
            ),
            (
                "spillway_bucket_events_total",
                "Objects of S3/MinIO bucket notifications turned into jobs",
                &self.events_accepted,
            ),
            (
                "spillway_bucket_events_redelivered_total",
                "Bucket notifications seen before (same sequencer): answered with their job, not run again",
                &self.events_redelivered,
            ),
            (
                "spillway_bucket_events_malformed_total",
                "Bucket notifications refused as malformed JSON",
                &self.events_malformed,
            ),
            (
                "spillway_bucket_events_unrouted_total",
                "Objects in bucket notifications that no function takes",
                &self.events_unrouted,
            ),
            (
                "spillway_bucket_events_refused_total",
                "Objects refused: unsafe key, too large, or not downloadable",
                &self.events_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP spillway_nodes Nodes by health\n# TYPE spillway_nodes gauge"
        );
        for (health, n) in view.health_counts() {
            let _ = writeln!(out, "spillway_nodes{{health=\"{health}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP spillway_mqtt_messages_refused_total MQTT messages an agent refused, by reason (as of its last load report)\n# TYPE spillway_mqtt_messages_refused_total counter"
        );
        for node in view.snapshot() {
            let Some(r) = &node.report else { continue };
            for (reason, n) in [
                ("unwanted_topic", r.mqtt_unwanted),
                ("too_large", r.mqtt_too_large),
            ] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "spillway_mqtt_messages_refused_total{{node=\"{}\",reason=\"{reason}\"}} {n}",
                        node.name
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP spillway_mqtt_refused_total MQTT connections and packets the broker's gateway refused, by reason\n# TYPE spillway_mqtt_refused_total counter"
        );
        for (reason, n) in self
            .mqtt_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "spillway_mqtt_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let (p50, p99) = view.staleness();
        let _ = writeln!(
            out,
            "# HELP spillway_view_staleness_seconds Delay from an agent sending a load report to the view holding it (last 10-20 s)\n# TYPE spillway_view_staleness_seconds summary"
        );
        for (q, v) in [("0.5", p50), ("0.99", p99)] {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "spillway_view_staleness_seconds{{quantile=\"{q}\"}} {:.3}",
                    v.as_secs_f64()
                );
            }
        }
        out
    }
}
