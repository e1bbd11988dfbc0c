//! Adapters that drive the core: the REST API (axum), the gRPC API (tonic), and the tower
//! middleware both stacks share (request ids, access log, admission, API keys, metrics).

pub mod grpc;
pub mod http;
pub mod middleware;
