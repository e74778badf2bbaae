//! What the coordinator exports on `GET /metrics` (OpenMetrics text, by prometheus-client):
//! counters with outcomes and reasons as labels, so an operator can tell a misconfigured agent
//! from an attack; histograms of job times and staleness; and, read from the view and the store
//! at each scrape, per node, function and tier gauges.
//!
//! Label values that come from members (function names in job reports) are bounded: past
//! [`MAX_FUNCTION_SERIES`] functions, the rest share the series `function="other"`.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use spillway_plumbing::metrics::{duration_histogram, gauge_family};

mod scrape;

pub use scrape::Scrape;

/// Distinct function names a histogram family keeps series for.
pub const MAX_FUNCTION_SERIES: usize = 256;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Every counter of the coordinator. The named fields are series of labelled families, made
/// once so that counting is one atomic add.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reports: Counter,
    pub reports_out_of_order: Counter,
    pub datagrams_malformed: Counter,
    pub frames_malformed: Counter,
    pub frames_refused: Counter,
    pub joins: Counter,
    pub joins_refused: Counter,
    pub certificate_renewals: Counter,
    pub certificate_renewals_refused: Counter,
    pub connections_refused: Counter,
    pub job_updates: Counter,
    pub api_unauthorized: Counter,
    pub api_forbidden: Counter,
    pub api_connections_refused: Counter,
    pub api_timeouts: Counter,
    pub handovers_accepted: Counter,
    pub handovers_declined: Counter,
    pub leases_expired: Counter,
    pub events_accepted: Counter,
    pub events_redelivered: Counter,
    pub events_malformed: Counter,
    pub events_unrouted: Counter,
    pub events_refused: Counter,
    /// Replica attempts by kind (`kubernetes`, `lambda`, `oscar`, `endpoint`) and outcome.
    replica_attempts: Family<Labels, Counter>,
    /// MQTT connections and packets the gateway refused, by reason.
    mqtt_refused: Family<Labels, Counter>,
    /// Delay from an agent sending a load report to the view holding it.
    pub staleness: Histogram,
    job_duration: Histograms,
    job_queue_wait: Histograms,
    /// Function names the histograms have series for.
    functions: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How a replica attempt went, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaOutcome {
    /// Submitted to the replica.
    Placed,
    /// Certainly not run there: moved on to the next target.
    FellThrough,
    /// Asked about a job whose submission went unanswered.
    Reconciled,
    Succeeded,
    /// Failed there, or may have run there without a result.
    Failed,
}

impl ReplicaOutcome {
    const ALL: [Self; 5] = [
        Self::Placed,
        Self::FellThrough,
        Self::Reconciled,
        Self::Succeeded,
        Self::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::FellThrough => "fell_through",
            Self::Reconciled => "reconciled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

pub fn inc(c: &Counter) {
    c.inc();
}

/// A counter family with one label, and its series made up front.
fn outcomes<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create_owned(&vec![(label, v.to_owned())]))
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

fn histograms(registry: &mut Registry, name: &str, help: &str) -> Histograms {
    let family = Histograms::new_with_constructor(duration_histogram);
    registry.register(name, help, family.clone());
    family
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        spillway_plumbing::metrics::register_build_info(&mut r, "coordinator");
        let [reports, reports_out_of_order, datagrams_malformed] = outcomes(
            &mut r,
            "spillway_load_reports",
            "Load report datagrams: applied to the view, older than one already applied, or not load reports",
            "outcome",
            ["applied", "out_of_order", "malformed"],
        );
        let [frames_malformed, frames_refused] = outcomes(
            &mut r,
            "spillway_frames_refused",
            "Member frames refused: malformed, oversized or unexpected; or well-formed but about jobs or blobs the member has no part in",
            "reason",
            ["malformed", "not_members_job"],
        );
        let [joins, joins_refused] = outcomes(
            &mut r,
            "spillway_joins",
            "Join attempts: accepted, or refused (bad, expired, revoked or reused token, taken name, rate limit, version)",
            "outcome",
            ["accepted", "refused"],
        );
        let [certificate_renewals, certificate_renewals_refused] = outcomes(
            &mut r,
            "spillway_certificate_renewals",
            "Node certificate renewals over the mesh: renewed, or refused (bad request, node removed, store error)",
            "outcome",
            ["renewed", "refused"],
        );
        let connections_refused = counter(
            &mut r,
            "spillway_connections_refused",
            "Mesh connections refused (unknown certificate, version)",
        );
        let job_updates = counter(
            &mut r,
            "spillway_job_updates",
            "Job state changes reported by agents",
        );
        let [
            api_unauthorized,
            api_forbidden,
            api_connections_refused,
            api_timeouts,
        ] = outcomes(
            &mut r,
            "spillway_api_refused",
            "API requests refused: no valid token, a scope that does not allow it, the connection limit reached, or cut off at the route's time limit",
            "reason",
            ["unauthorized", "forbidden", "connection_limit", "timeout"],
        );
        let [handovers_accepted, handovers_declined] = outcomes(
            &mut r,
            "spillway_handovers",
            "Offers of queued jobs from their origins: accepted by the coordinator, or declined (no target beat staying)",
            "outcome",
            ["accepted", "declined"],
        );
        let leases_expired = counter(
            &mut r,
            "spillway_leases_expired",
            "Peers whose jobs were placed again after they stayed away",
        );
        let [
            events_accepted,
            events_redelivered,
            events_malformed,
            events_unrouted,
            events_refused,
        ] = outcomes(
            &mut r,
            "spillway_bucket_events",
            "S3/MinIO bucket notification objects: accepted as jobs, redelivered (answered with their job), malformed JSON, taken by no function, refused (unsafe key, too large, not downloadable)",
            "outcome",
            [
                "accepted",
                "redelivered",
                "malformed",
                "unrouted",
                "refused",
            ],
        );
        let replica_attempts = Family::<Labels, Counter>::default();
        r.register(
            "spillway_replica_attempts",
            "Jobs on replicas outside the mesh, by kind and outcome",
            replica_attempts.clone(),
        );
        // Every kind and outcome from the start, so rates start from 0 rather than from nothing.
        for kind in ["kubernetes", "lambda", "oscar", "endpoint"] {
            for outcome in ReplicaOutcome::ALL {
                let _ = replica_attempts.get_or_create_owned(&vec![
                    ("kind", kind.to_owned()),
                    ("outcome", outcome.label().to_owned()),
                ]);
            }
        }
        let mqtt_refused = Family::<Labels, Counter>::default();
        r.register(
            "spillway_mqtt_refused",
            "MQTT connections and packets the broker's gateway refused, by reason",
            mqtt_refused.clone(),
        );
        // From 1 ms to 4 s: the target is a p99 under 1 s.
        let staleness = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.001, 2.0, 13,
        ));
        r.register(
            "spillway_view_staleness_seconds",
            "Delay from an agent sending a load report to the view holding it",
            staleness.clone(),
        );
        let job_duration = histograms(
            &mut r,
            "spillway_job_duration_seconds",
            "Run time of jobs agents finished, by function (as the agent that ran it measured)",
        );
        let job_queue_wait = histograms(
            &mut r,
            "spillway_job_queue_wait_seconds",
            "Time finished jobs waited from being queued to their last start, by function",
        );
        Self {
            registry: r,
            reports,
            reports_out_of_order,
            datagrams_malformed,
            frames_malformed,
            frames_refused,
            joins,
            joins_refused,
            certificate_renewals,
            certificate_renewals_refused,
            connections_refused,
            job_updates,
            api_unauthorized,
            api_forbidden,
            api_connections_refused,
            api_timeouts,
            handovers_accepted,
            handovers_declined,
            leases_expired,
            events_accepted,
            events_redelivered,
            events_malformed,
            events_unrouted,
            events_refused,
            replica_attempts,
            mqtt_refused,
            staleness,
            job_duration,
            job_queue_wait,
            functions: Default::default(),
        }
    }
}

impl Metrics {
    pub fn mqtt_refused(&self, reason: &'static str) {
        self.mqtt_refused
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Counts a replica attempt; `replica` is its id (`kind:…`), of which only the kind becomes
    /// a label (the rest may be a URL with credentials in it).
    pub fn replica(&self, replica: &str, outcome: ReplicaOutcome) {
        let kind = super::replicas::kind_of(replica).unwrap_or("unknown");
        self.replica_attempts
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.label().to_owned()),
            ])
            .inc();
    }

    /// Records a finished job's run time and wait (from the times its agent reported).
    pub fn job_finished(&self, function: &str, queued_ms: u64, started_ms: u64, ended_ms: u64) {
        let labels = self.function_labels(function);
        let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
        self.job_duration
            .get_or_create(&labels)
            .observe(seconds(started_ms, ended_ms));
        self.job_queue_wait
            .get_or_create(&labels)
            .observe(seconds(queued_ms, started_ms));
    }

    /// The `function` label, or `other` once [`MAX_FUNCTION_SERIES`] names have series.
    fn function_labels(&self, function: &str) -> Labels {
        let mut seen = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(function) || seen.len() < MAX_FUNCTION_SERIES {
            seen.insert(function.to_owned());
            vec![("function", function.to_owned())]
        } else {
            vec![("function", "other".to_owned())]
        }
    }

    /// The exposition: these counters and histograms, then the gauges read now.
    pub fn render(&self, scrape: Scrape) -> String {
        spillway_plumbing::metrics::encode_with(&self.registry, move |e| scrape.encode(e))
    }
}

/// Writes a gauge with one series per node.
fn per_node<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (String, V)>,
) -> Result<(), std::fmt::Error> {
    gauge_family(
        e,
        name,
        help,
        values.into_iter().map(|(n, v)| (vec![("node", n)], v)),
    )
}
