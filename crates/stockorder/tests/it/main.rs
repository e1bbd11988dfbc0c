//! The service's integration tests, as one test binary (one link instead of one per file): the
//! real service over real sockets, and the real binary under real signals. The load-heavy fault
//! suite is the crate's other test binary (`tests/faults`), so that it never shares the two
//! cores with the timing checks here.
//!
//! Tests that need PostgreSQL, HAProxy, Python's grpcio or schemathesis print why they skip
//! when those are missing (`.ci/run` provides them).

mod common;

mod api;
mod demos;
mod events;
mod fuzz_requests;
mod grpc;
mod grpc_interop;
mod hardening;
mod lifecycle;
mod postgres;
mod restart;
mod schemathesis;
mod shutdown;
mod socket_activation;
mod upgrade;
