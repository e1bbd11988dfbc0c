//! The gRPC API as the shared middleware sees it: method names for metrics labels, the open
//! services (health, reflection), `grpc-timeout`, and refusals as gRPC statuses.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Request, Response};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::adapter::inbound::middleware::Protocol;
use crate::telemetry::metrics::{Api, Rejection, metrics};

/// Every method served, so a metrics label is one of these and never a path a client made up.
const METHODS: [&str; 8] = [
    "/stockorder.StockOrderService/CreateOrder",
    "/stockorder.StockOrderService/GetOrder",
    "/stockorder.StockOrderService/ListOrders",
    "/stockorder.StockOrderService/CancelOrder",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Services answered whatever the load and without a key: probes and tooling.
const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Marker for the gRPC API in the shared middleware.
#[derive(Debug, Clone, Copy)]
pub struct Grpc;

/// What a gRPC call is labelled with.
pub struct GrpcCall {
    method: &'static str,
}

impl Protocol for Grpc {
    type Body = Body;
    type Call = GrpcCall;
    const API: Api = Api::Grpc;

    fn is_open(path: &str) -> bool {
        OPEN_PREFIXES.iter().any(|p| path.starts_with(p))
    }

    fn requested_timeout(headers: &HeaderMap) -> Option<Duration> {
        parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
    }

    fn reject(why: Rejection) -> Response<Body> {
        let status = match why {
            Rejection::Overloaded => Status::resource_exhausted(
                "the server is at its limit of concurrent calls; this call was not processed, retry after a moment",
            ),
            Rejection::TimedOut => Status::deadline_exceeded(
                "the call outlived its deadline (grpc-timeout or the server's REQUEST_TIMEOUT); it may or may not have taken effect",
            ),
            Rejection::Unauthenticated => {
                Status::unauthenticated("missing or unknown API key: send `authorization: Bearer <key>` metadata")
            }
        };
        status.into_http()
    }

    fn call<B>(request: &Request<B>) -> GrpcCall {
        let path = request.uri().path();
        GrpcCall {
            method: METHODS.iter().find(|m| **m == path).copied().unwrap_or("unknown"),
        }
    }

    fn answered(call: GrpcCall, response: Response<Body>, started: Instant) -> Response<Body> {
        // An error status comes alone, in the headers ("trailers-only"); a success comes in
        // the trailers after the message, so it is recorded when the body ends.
        if let Some(status) = Status::from_header_map(response.headers()) {
            metrics().grpc_request(call.method, status.code(), started.elapsed());
            return response;
        }
        response.map(|body| {
            Body::new(Observed {
                inner: body,
                pending: Some((call.method, started)),
            })
        })
    }
}

/// A response body that records the call's status when its trailers pass, or CANCELLED when
/// it is dropped before the end (the client went away).
struct Observed {
    inner: Body,
    pending: Option<(&'static str, Instant)>,
}

impl Observed {
    fn record(&mut self, code: Code) {
        if let Some((method, started)) = self.pending.take() {
            metrics().grpc_request(method, code, started.elapsed());
        }
    }
}

impl hyper::body::Body for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    let code = Status::from_header_map(trailers).map_or(Code::Unknown, |s| s.code());
                    self.record(code);
                }
            }
            Some(Err(status)) => self.record(status.code()),
            None => self.record(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 protocol
/// spec. Anything else is ignored, as if no deadline was sent.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        for bad in ["", "S", "1", "123456789S", "1s", "-1S", "1.5S", "+1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
