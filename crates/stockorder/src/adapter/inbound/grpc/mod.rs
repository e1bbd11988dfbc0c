//! The gRPC adapter (tonic): `stockorder.StockOrderService` (docs/api.md) over any
//! [`OrderService`], plus the standard health and reflection services, so stock tools (grpcurl,
//! grpc_health_probe, Kubernetes gRPC probes) work with no `.proto` on their side.

mod codec;
mod convert;
mod error;
mod framing;
mod protocol;
mod service;

use std::convert::Infallible;
use std::sync::Arc;

use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::adapter::inbound::middleware::access_log::LogResponse;
use crate::adapter::inbound::middleware::admission::{AdmissionLayer, Limits};
use crate::adapter::inbound::middleware::observe::ObserveLayer;
use crate::adapter::inbound::middleware::request_id;
use crate::port::OrderService;

pub use codec::StrictCodec;
pub use framing::{MAX_MESSAGE_BYTES, UnaryFraming};
pub use protocol::Grpc;
pub use service::{GrpcOrders, OrderEvents};

/// The code generated from `proto/stock_order.proto`, shared by the server, the clients and the
/// load generator.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("stockorder");
}

/// The compiled descriptors of `stock_order.proto` and its imports, embedded at build time.
/// Reflection serves them; a client can resolve every message without a local proto.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stockorder_descriptor");

/// The fully qualified name of the order service, as health checks and reflection name it.
pub const SERVICE_NAME: &str = "stockorder.StockOrderService";

/// Why the gRPC services could not be assembled.
#[derive(Debug, thiserror::Error)]
#[error("the embedded gRPC descriptor set is unusable: {0}")]
pub struct DescriptorError(#[from] tonic_reflection::server::Error);

/// Every service the gRPC port serves, and the health handle that reports on them.
pub struct GrpcServices {
    /// Orders, health, reflection v1 and v1alpha, ready to hand to a tonic server.
    pub routes: Routes,
    /// Flips `grpc.health.v1.Health` between SERVING and NOT_SERVING: the gRPC face of readiness.
    pub health: Health,
}

/// Builds the services over `service`. The application calls [`Health::set`] when the port
/// starts serving and again when it starts draining; until the first call only the overall
/// status `""` is known (SERVING, tonic's default).
pub fn services<S: OrderService>(service: Arc<S>) -> Result<GrpcServices, DescriptorError> {
    // v1 for current clients, v1alpha for grpcurl releases before 1.8.8 and older tooling.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let routes = Routes::new(UnaryFraming::new(GrpcOrders::new(service).into_server()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(GrpcServices {
        routes,
        health: Health(reporter),
    })
}

/// `routes` behind the same stack as the REST API's (see `http::router_with`), inner to outer:
/// limits, metrics, the log span, the request id. Every call is logged at info, like an HTTP
/// request (path, gRPC status, latency). A non-OK status is usually the client's mistake, so
/// "failures" stay at debug; storage errors are logged at error where they happen.
pub fn server_with(
    routes: Routes,
    limits: &Limits,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::http::Response<
        impl hyper::body::Body<Data = bytes::Bytes, Error = impl Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(request_id::RequestIdLayer)
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(request_id::span)
                .on_response(LogResponse)
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(ObserveLayer::<Grpc>::new())
        .layer(AdmissionLayer::<Grpc>::new(limits))
        .service(routes.prepare())
}

/// The readiness switch of the gRPC port: one call updates the overall status (`""`) and the
/// order service's together, so probes of either name agree.
#[derive(Clone)]
pub struct Health(HealthReporter);

impl Health {
    /// Reports SERVING when `ready`, NOT_SERVING otherwise.
    pub async fn set(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.0.set_service_status("", status).await;
        self.0.set_service_status(SERVICE_NAME, status).await;
    }

    /// SERVING now, NOT_SERVING from the moment `readiness` turns to draining: gRPC health
    /// following `/ready`. Returns once it has turned.
    pub async fn follow(&self, readiness: &phased_shutdown::Readiness) {
        self.set(true).await;
        readiness.draining().await;
        self.set(false).await;
    }
}
