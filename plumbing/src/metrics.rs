//! `/metrics` for the agent and the coordinator: prometheus-client's registry, encoded as
//! OpenMetrics text (what Prometheus asks for first), and a small listener of its own so a
//! scraper needs no API token and never competes with the API's connection limit.
//!
//! The listener is plain HTTP, like every Prometheus exporter's: bind it to loopback or to the
//! network the scraper is on. It answers `GET /metrics` and nothing else, takes a few
//! connections at once and cuts off a client that trickles its request in.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use prometheus_client;

/// What a scrape answers with (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes served at once; more connections wait for the kernel's backlog.
const MAX_CONNECTIONS: usize = 4;

/// How long a scraper may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `spillway_build_info{component,version,target}`: which build answers, for dashboards
/// that span an upgrade.
pub fn register_build_info(registry: &mut Registry, component: &'static str) {
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    registry.register(
        "spillway_build",
        "The build of this process",
        Info::new(vec![
            ("component", component.to_owned()),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("target", target),
        ]),
    );
}

/// Buckets for durations from 5 ms to about 20 minutes (job run times, waits): a factor of 2.5
/// between neighbours keeps each histogram to 14 series.
pub fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.5, 14,
    ))
}

/// The registry's metrics, then those `now` writes from values read at this scrape, as one
/// OpenMetrics exposition.
pub fn encode_with<F>(registry: &Registry, now: F) -> String
where
    F: Fn(&mut DescriptorEncoder) -> Result<(), std::fmt::Error> + Send + Sync + 'static,
{
    let mut read_now = Registry::default();
    read_now.register_collector(Box::new(FnCollector(now)));
    let mut text = String::new();
    let encoded = prometheus_client::encoding::text::encode_registry(&mut text, registry)
        .and_then(|()| prometheus_client::encoding::text::encode(&mut text, &read_now));
    if let Err(e) = encoded {
        tracing::warn!("metrics: a collector failed: {e}");
    }
    text
}

/// Writes one gauge family from values read at scrape time (per node, per function): each
/// `(labels, value)` pair is one series.
pub fn gauge_family<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The gauges of a load report's per-function entries, named `{prefix}_queued`, `_running`,
/// `_free_slots` and `_mean_run_seconds`; `series` gives each entry with its labels (an agent's
/// own `function`, or the coordinator's `node` and `function`). `whose` ends each help text
/// ("here", "on a node").
pub fn function_load_gauges<'a, L: EncodeLabelSet + Clone>(
    encoder: &mut DescriptorEncoder,
    prefix: &str,
    whose: &str,
    series: impl Iterator<Item = (L, &'a spillway_proto::load::FunctionLoad)> + Clone,
) -> Result<(), std::fmt::Error> {
    type Read = fn(&spillway_proto::load::FunctionLoad) -> f64;
    let gauges: [(&str, &str, Read); 4] = [
        ("queued", "Jobs of a function queued", |f| {
            f64::from(f.queued)
        }),
        ("running", "Jobs of a function running", |f| {
            f64::from(f.running)
        }),
        ("free_slots", "Slots free for a function", |f| {
            f64::from(f.free_slots)
        }),
        (
            "mean_run_seconds",
            "A function's recent mean run time (0 while unknown)",
            |f| f64::from(f.mean_run_ms) / 1000.0,
        ),
    ];
    for (name, help, read) in gauges {
        gauge_family(
            encoder,
            &format!("{prefix}_{name}"),
            &format!("{help} {whose}"),
            series.clone().map(|(labels, f)| (labels, read(f))),
        )?;
    }
    Ok(())
}

/// A [`Collector`] made of a closure, for gauges whose values live elsewhere (a view, a load
/// report) and are read only when scraped.
pub struct FnCollector<F>(pub F);

impl<F> std::fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut DescriptorEncoder) -> Result<(), std::fmt::Error> + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        (self.0)(&mut encoder)
    }
}

/// Serves `GET /metrics` on `listener` with whatever `render` returns, until the task is
/// dropped.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("cannot accept a metrics connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &*render)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics connection ended: {e}");
            }
            drop(permit);
        });
    }
}

fn answer(
    req: &Request<Incoming>,
    render: &(dyn Fn() -> String + Send + Sync),
) -> Response<String> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, render()),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "not found: this listener serves GET /metrics only\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: this listener serves GET /metrics only\n".to_owned(),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let content_type = if status == StatusCode::OK {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn outcomes_are_labels_of_one_counter_and_the_text_ends_with_eof() {
        let mut registry = Registry::default();
        let jobs = Family::<Vec<(&'static str, String)>, Counter>::default();
        registry.register("spillway_jobs", "Jobs by outcome", jobs.clone());
        jobs.get_or_create(&vec![("outcome", "succeeded".into())])
            .inc();
        jobs.get_or_create(&vec![("outcome", "failed".into())])
            .inc_by(2);
        register_build_info(&mut registry, "test");
        let text = encode_with(&registry, |_| Ok(()));
        assert!(
            text.contains("spillway_jobs_total{outcome=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("spillway_jobs_total{outcome=\"failed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("spillway_build_info{component=\"test\""),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn label_values_from_nodes_are_escaped_not_trusted() {
        let text = encode_with(&Registry::default(), |e| {
            gauge_family(
                e,
                "spillway_node_queued",
                "Queued jobs",
                [(vec![("node", "evil\"} 1\nx{a=\"")], 3u64)],
            )
        });
        assert!(
            text.contains(r#"spillway_node_queued{node="evil\"} 1\nx{a=\""} 3"#),
            "{text}"
        );
    }
}
