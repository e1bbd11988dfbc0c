//! Prometheus metrics: one registry per process, served as text at `GET /metrics`.
//!
//! Why one global registry: every adapter records into it (HTTP and gRPC, the SQLite writer
//! thread, the shutdown coordinator), and threading a handle through all of them would put an
//! observability concern into every signature. The core does not: it counts through the
//! [`OrderMetrics`] port, which [`Prometheus`] implements over this registry. The
//! `prometheus-client` types are cheap to update (an atomic, or a short lock for histograms) and
//! each label set is created once, on first use.
//!
//! Label values come from closed sets (route templates, gRPC methods that exist, status names),
//! never from client input, so no request can make the series grow without bound.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::OrderStatus;
use crate::port::{OrderMetrics, StoreMetrics};

/// The core's [`OrderMetrics`] and the stores' [`StoreMetrics`], recorded into this process's
/// registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prometheus;

impl OrderMetrics for Prometheus {
    fn transitions(&self, from: Option<OrderStatus>, to: OrderStatus, n: u64) {
        metrics().transitions(from, to, n);
    }

    fn processor_lag(&self, waited: Duration) {
        metrics().processor_lag(waited);
    }
}

impl StoreMetrics for Prometheus {
    fn commit(&self, backend: &'static str, writes: usize, took: Duration) {
        metrics().db_commit(backend, writes, took);
    }
}

/// Latency buckets in seconds, 250 µs to 10 s: a durable create takes 1–5 ms here, a request
/// stuck behind a slow disk or a timeout lands in the top buckets.
const LATENCY_BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Writes per group commit: 1 when idle, up to the writer's batch limit under load.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Seconds from an order's creation to the processor's decision.
const LAG_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_BUCKETS)
}

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

/// Labels of one gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    protocol: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    phase: String,
    component: String,
    outcome: &'static str,
}

type Seconds = Gauge<f64, AtomicU64>;

/// The process's metrics. Reach them through [`metrics`].
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// The two series of each label set of `http_requests` and `http_duration`, looked up
    /// once: the families hash their labels with SipHash under a lock each, twice per
    /// request; here it is one lookup with a fast hash (docs/performance.md).
    http_series: RwLock<HashMap<HttpLabels, (Counter, Histogram), foldhash::fast::FixedState>>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_duration: Family<GrpcLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<ProtocolLabels, Gauge>,
    /// The two series of `in_flight`, looked up once: every request moves one of them.
    in_flight_by_api: [Gauge; 2],
    rejected: Family<RejectionLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    processor_lag: Histogram,
    db_batch: Family<BackendLabels, Histogram, fn() -> Histogram>,
    db_commit: Family<BackendLabels, Histogram, fn() -> Histogram>,
    draining: Gauge,
    /// Log lines dropped because stdout fell behind, brought up to date at each scrape.
    log_dropped: Counter,
    phase_budget: Family<PhaseLabels, Seconds>,
    component_took: Family<ComponentLabels, Seconds>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The REST API (axum).
    Rest,
    /// The gRPC API (tonic).
    Grpc,
}

impl Api {
    const ALL: [Api; 2] = [Api::Rest, Api::Grpc];

    fn label(self) -> &'static str {
        match self {
            Api::Rest => "http",
            Api::Grpc => "grpc",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a request was answered without reaching its handler, or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The concurrency limit was reached: shed with 503 / RESOURCE_EXHAUSTED.
    Overloaded,
    /// The request outlived its timeout: 504 / DEADLINE_EXCEEDED.
    TimedOut,
    /// No valid API key: 401 / UNAUTHENTICATED.
    Unauthenticated,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::Overloaded => "overloaded",
            Rejection::TimedOut => "timed_out",
            Rejection::Unauthenticated => "unauthenticated",
        }
    }
}

/// Counts a request in flight for as long as it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    fn new() -> Self {
        let in_flight: Family<ProtocolLabels, Gauge> = Family::default();
        let in_flight_by_api =
            Api::ALL.map(|api| in_flight.get_or_create_owned(&ProtocolLabels { protocol: api.label() }));
        let mut m = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            http_series: RwLock::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram),
            in_flight,
            in_flight_by_api,
            rejected: Family::default(),
            transitions: Family::default(),
            processor_lag: Histogram::new(LAG_BUCKETS),
            db_batch: Family::new_with_constructor(batch_histogram),
            db_commit: Family::new_with_constructor(latency_histogram),
            draining: Gauge::default(),
            log_dropped: Counter::default(),
            phase_budget: Family::default(),
            component_took: Family::default(),
            registry: Registry::with_prefix("stockorder"),
        };
        m.register_requests();
        m.register_orders();
        m.register_process();
        m
    }

    /// The requests' series: answered, latency, in flight, rejected, by API.
    fn register_requests(&mut self) {
        self.registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            self.http_requests.clone(),
        );
        self.registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency, from the request's arrival to the end of its answer",
            Unit::Seconds,
            self.http_duration.clone(),
        );
        self.registry.register(
            "grpc_requests",
            "gRPC calls answered, by method and status code",
            self.grpc_requests.clone(),
        );
        self.registry.register_with_unit(
            "grpc_request_duration",
            "gRPC call latency, from the call's arrival to the end of its answer",
            Unit::Seconds,
            self.grpc_duration.clone(),
        );
        self.registry.register(
            "requests_in_flight",
            "Requests being handled now, by protocol",
            self.in_flight.clone(),
        );
        self.registry.register(
            "requests_rejected",
            "Requests refused or cut short by a limit: overloaded (concurrency limit), timed_out, unauthenticated",
            self.rejected.clone(),
        );
    }

    /// The orders' and the database's series.
    fn register_orders(&mut self) {
        self.registry.register(
            "order_transitions",
            "Order status changes written to the database; `from` is NEW for a created order",
            self.transitions.clone(),
        );
        self.registry.register_with_unit(
            "processor_lag",
            "Time from an order's creation to the processor's decision on it",
            Unit::Seconds,
            self.processor_lag.clone(),
        );
        self.registry.register(
            "db_batch_size",
            "Writes committed per database transaction (group commit)",
            self.db_batch.clone(),
        );
        self.registry.register_with_unit(
            "db_commit_duration",
            "Time to apply and commit one write transaction, fsync included",
            Unit::Seconds,
            self.db_commit.clone(),
        );
    }

    /// The process's own series: shutdown and logging.
    fn register_process(&mut self) {
        self.registry.register(
            "shutdown_draining",
            "1 once shutdown has started (readiness off), 0 before",
            self.draining.clone(),
        );
        self.registry.register(
            "log_lines_dropped",
            "Log lines dropped because the queue to stdout was full (logging never blocks a request)",
            self.log_dropped.clone(),
        );
        self.registry.register_with_unit(
            "shutdown_phase_budget",
            "Longest each shutdown phase may take, as configured",
            Unit::Seconds,
            self.phase_budget.clone(),
        );
        self.registry.register_with_unit(
            "shutdown_component_duration",
            "How long each component took to stop, by phase and outcome; set as each stops",
            Unit::Seconds,
            self.component_took.clone(),
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        // Two scrapes at once must not both add the same drops.
        static CATCHING_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CATCHING_UP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dropped = crate::telemetry::dropped_lines();
        let counted = self.log_dropped.get();
        if dropped > counted {
            self.log_dropped.inc_by(dropped - counted);
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoding error would be a bug in a label type.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Marks a request of `api` in flight until the returned guard drops.
    pub fn in_flight(&self, api: Api) -> InFlight {
        let gauge = self.in_flight_by_api[api.index()].clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// Records one answered HTTP request. `route` is the route template, not the path.
    pub fn http_request(&self, method: &'static str, route: &'static str, status: u16, took: Duration) {
        let labels = HttpLabels { method, route, status };
        let record = |(count, duration): &(Counter, Histogram)| {
            count.inc();
            duration.observe(took.as_secs_f64());
        };
        // A poisoned lock only means a panic while it was held; the map is whole.
        if let Some(series) = self.http_series.read().unwrap_or_else(|p| p.into_inner()).get(&labels) {
            return record(series);
        }
        let series = (
            self.http_requests.get_or_create_owned(&labels),
            self.http_duration.get_or_create_owned(&labels),
        );
        record(&series);
        self.http_series
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels, series);
    }

    /// Records one answered gRPC call. `method` is the full path of a method that exists.
    pub fn grpc_request(&self, method: &'static str, code: tonic::Code, took: Duration) {
        let labels = GrpcLabels {
            method,
            code: code_name(code),
        };
        self.grpc_requests.get_or_create(&labels).inc();
        self.grpc_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts a request refused or cut short by a limit.
    pub fn rejected(&self, api: Api, why: Rejection) {
        self.rejected
            .get_or_create(&RejectionLabels {
                protocol: api.label(),
                reason: why.label(),
            })
            .inc();
    }

    /// Counts `n` orders moved from `from` (`None`: just created) to `to`.
    pub fn transitions(&self, from: Option<OrderStatus>, to: OrderStatus, n: u64) {
        if n == 0 {
            return;
        }
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.map_or("NEW", OrderStatus::as_str),
                to: to.as_str(),
            })
            .inc_by(n);
    }

    /// Records how long an order waited for the processor's decision.
    pub fn processor_lag(&self, waited: Duration) {
        self.processor_lag.observe(waited.as_secs_f64());
    }

    /// Records one committed write transaction of `writes` writes on `backend`.
    pub fn db_commit(&self, backend: &'static str, writes: usize, took: Duration) {
        let labels = BackendLabels { backend };
        self.db_batch.get_or_create(&labels).observe(writes as f64);
        self.db_commit.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Sets the configured budget of a shutdown phase.
    pub fn shutdown_phase_budget(&self, phase: &str, budget: Duration) {
        self.phase_budget
            .get_or_create(&PhaseLabels {
                phase: phase.to_owned(),
            })
            .set(budget.as_secs_f64());
    }

    /// Marks the start of the shutdown.
    pub fn shutdown_started(&self) {
        self.draining.set(1);
    }

    /// Records how one component's stop went.
    pub fn shutdown_entry(&self, entry: &phased_shutdown::Entry) {
        self.component_took
            .get_or_create(&ComponentLabels {
                phase: entry.phase.clone(),
                component: entry.component.clone(),
                outcome: if entry.outcome.is_clean() { "stopped" } else { "unclean" },
            })
            .set(entry.took.as_secs_f64());
    }
}

/// The name of a gRPC status code as gRPC documents it (`OK`, `NOT_FOUND`, …).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_described_and_labelled() {
        let m = Metrics::new();
        m.http_request("GET", "/api/orders/{id}", 200, Duration::from_millis(2));
        m.grpc_request(
            "/stockorder.StockOrderService/GetOrder",
            tonic::Code::NotFound,
            Duration::from_millis(1),
        );
        m.transitions(None, OrderStatus::Pending, 3);
        m.transitions(Some(OrderStatus::Pending), OrderStatus::Filled, 0);
        m.db_commit("sqlite", 17, Duration::from_millis(3));
        let _guard = m.in_flight(Api::Rest);
        m.shutdown_entry(&phased_shutdown::Entry::new(
            "http server",
            "stop servers",
            Duration::ZERO,
            Duration::from_millis(12),
            phased_shutdown::Outcome::Stopped,
        ));
        let text = m.render();
        for line in [
            "# TYPE stockorder_http_requests counter",
            r#"stockorder_http_requests_total{method="GET",route="/api/orders/{id}",status="200"} 1"#,
            r#"stockorder_http_request_duration_seconds_bucket{le="0.0025",method="GET",route="/api/orders/{id}",status="200"} 1"#,
            r#"stockorder_grpc_requests_total{method="/stockorder.StockOrderService/GetOrder",code="NOT_FOUND"} 1"#,
            r#"stockorder_order_transitions_total{from="NEW",to="PENDING"} 3"#,
            r#"stockorder_db_batch_size_sum{backend="sqlite"} 17.0"#,
            r#"stockorder_requests_in_flight{protocol="http"} 1"#,
            r#"stockorder_shutdown_component_duration_seconds{phase="stop servers",component="http server",outcome="stopped"} 0.012"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(r#"to="FILLED""#), "a zero count creates no series");
        drop(_guard);
        assert!(
            m.render()
                .contains(r#"stockorder_requests_in_flight{protocol="http"} 0"#)
        );
    }
}
