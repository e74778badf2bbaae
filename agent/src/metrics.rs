//! What an agent exports on its opt-in `[metrics] listen` (OpenMetrics text, by
//! prometheus-client): jobs by function and outcome, histograms of run time, queue wait and
//! event-to-start, and, read at each scrape, its load per function, the link, and how often it
//! made its state durable.
//!
//! Function names here come from this node's own deployment, so their number is bounded by it.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use spillway_plumbing::metrics::{duration_histogram, gauge_family};
use spillway_proto::Event;

use crate::engine::AgentHandle;
use crate::journal::{JobRecord, JobState};

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    jobs: Family<Labels, Counter>,
    duration: Histograms,
    queue_wait: Histograms,
    event_to_start: Histograms,
    /// 1 while the link to the coordinator is up.
    pub link_up: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut r = Registry::default();
        spillway_plumbing::metrics::register_build_info(&mut r, "agent");
        let jobs = Family::<Labels, Counter>::default();
        r.register(
            "spillway_agent_jobs",
            "Jobs this node finished, by function and outcome (succeeded, failed)",
            jobs.clone(),
        );
        let mut histograms = |name: &str, help: &str| {
            let family = Histograms::new_with_constructor(duration_histogram);
            r.register(name, help, family.clone());
            family
        };
        let duration = histograms(
            "spillway_agent_job_duration_seconds",
            "Run time of finished jobs (their last run), by function",
        );
        let queue_wait = histograms(
            "spillway_agent_job_queue_wait_seconds",
            "Time from a job being queued (on its origin, for jobs placed here) to its first start here, by function",
        );
        let event_to_start = histograms(
            "spillway_agent_job_event_to_start_seconds",
            "Time from a job's input appearing (a file's modification time, an MQTT message's arrival) to its first start here, by function",
        );
        let link_up = Gauge::default();
        r.register(
            "spillway_agent_link_up",
            "Whether the link to the coordinator is up (0: standalone or retrying)",
            link_up.clone(),
        );
        Self {
            registry: r,
            jobs,
            duration,
            queue_wait,
            event_to_start,
            link_up,
        }
    }
}

fn seconds(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / 1000.0
}

impl AgentMetrics {
    /// A run started, as journaled: its first start counts towards the waits.
    pub fn started(&self, record: &JobRecord) {
        let Some(started) = record.started_at_ms.filter(|_| record.attempt <= 1) else {
            return;
        };
        let labels = vec![("function", record.function.clone())];
        self.queue_wait
            .get_or_create(&labels)
            .observe(seconds(record.queued_at_ms, started));
        let appeared_ms = match &record.event {
            Event::File(f) => u64::try_from(f.mtime_ns / 1_000_000).ok(),
            Event::FileAgain(w) => u64::try_from(w.file.mtime_ns / 1_000_000).ok(),
            // A message is queued as it arrives.
            Event::Mqtt(_) => Some(record.queued_at_ms),
        };
        if let Some(appeared) = appeared_ms {
            self.event_to_start
                .get_or_create(&labels)
                .observe(seconds(appeared, started));
        }
    }

    /// A job's end is journaled.
    pub fn ended(&self, record: &JobRecord) {
        let outcome = match record.state {
            JobState::Succeeded { .. } => "succeeded",
            JobState::Failed { .. } => "failed",
            _ => return,
        };
        self.jobs
            .get_or_create(&vec![
                ("function", record.function.clone()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        if let (Some(started), Some(finished)) = (record.started_at_ms, record.finished_at_ms) {
            self.duration
                .get_or_create(&vec![("function", record.function.clone())])
                .observe(seconds(started, finished));
        }
    }

    /// The exposition: these counters and histograms, then what `agent` says now.
    pub fn render(&self, agent: &AgentHandle) -> String {
        let load = agent.load.borrow().clone();
        let disk_full = agent.disk_full();
        let syncs = agent.disk_syncs();
        let node = agent.config().node_name.clone();
        spillway_plumbing::metrics::encode_with(&self.registry, move |e| {
            encode_load(e, &node, &load, disk_full, syncs)
        })
    }
}

fn encode_load(
    e: &mut DescriptorEncoder,
    node: &str,
    load: &spillway_proto::load::LoadReport,
    disk_full: bool,
    syncs: crate::engine::DiskSyncs,
) -> Result<(), std::fmt::Error> {
    let this = || vec![("node", node.to_owned())];
    for (name, help, value) in [
        (
            "spillway_agent_queued",
            "Jobs queued on this node",
            f64::from(load.queued),
        ),
        (
            "spillway_agent_running",
            "Jobs running on this node",
            f64::from(load.running),
        ),
        (
            "spillway_agent_oldest_wait_seconds",
            "How long the oldest queued job has waited",
            load.oldest_queued_ms as f64 / 1000.0,
        ),
        (
            "spillway_agent_disk_full",
            "Whether the disk is under [disk] min_free (1: no new inputs are taken)",
            f64::from(u8::from(disk_full)),
        ),
    ] {
        gauge_family(e, name, help, [(this(), value)])?;
    }
    spillway_plumbing::metrics::function_load_gauges(
        e,
        "spillway_agent_function",
        "here",
        load.functions
            .iter()
            .map(|f| (vec![("function", f.name.clone())], f)),
    )?;
    let mut refused = e.encode_descriptor(
        "spillway_agent_mqtt_messages_refused",
        "MQTT messages refused, by reason: on no function's topic, or over [mqtt] max_payload",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in [
        ("unwanted_topic", load.mqtt_unwanted),
        ("too_large", load.mqtt_too_large),
    ] {
        ConstCounter::new(n)
            .encode(refused.encode_family(&vec![("reason", reason.to_owned())])?)?;
    }
    let mut durable = e.encode_descriptor(
        "spillway_agent_durable_syncs",
        "Durable commits of the journal and syncs of the MQTT inbox: what reaches the disk's cache flush",
        None,
        MetricType::Counter,
    )?;
    for (kind, n) in [
        ("journal", syncs.journal.durable_commits),
        ("filesystem", syncs.filesystem),
    ] {
        ConstCounter::new(n).encode(durable.encode_family(&vec![("kind", kind.to_owned())])?)?;
    }
    Ok(())
}
