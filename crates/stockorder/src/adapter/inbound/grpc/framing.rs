//! The gRPC framing of a unary request, checked before tonic reads it, so that each way a
//! client can get it wrong has the code the gRPC spec (`doc/statuscodes.md`) gives it, or, where
//! the spec names only the code its libraries happen to generate (INTERNAL), the code that tells
//! the client the mistake is theirs:
//!
//! | request | code |
//! |---|---|
//! | no message at all, or more than one (cardinality violation) | UNIMPLEMENTED (spec) |
//! | a message over [`MAX_MESSAGE_BYTES`] | RESOURCE_EXHAUSTED (spec) |
//! | a truncated prefix or message, a flag byte other than 0 or 1, the compressed flag without a `grpc-encoding` | INVALID_ARGUMENT |
//! | compressed with an encoding the server lacks | UNIMPLEMENTED (spec; tonic answers it) |
//!
//! Without this, tonic answers the framing errors INTERNAL, an oversize message OUT_OF_RANGE,
//! and a second message is silently dropped while the first is answered OK.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, Request, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

/// The largest request message accepted (tonic's default decoding limit, made explicit).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The 5-byte prefix of every gRPC message: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// Wraps a tonic service whose methods are all unary, checking each request's framing first.
#[derive(Debug, Clone)]
pub struct UnaryFraming<S>(S);

impl<S> UnaryFraming<S> {
    /// `inner`, with its requests checked.
    pub fn new(inner: S) -> Self {
        Self(inner)
    }
}

impl<S: NamedService> NamedService for UnaryFraming<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for UnaryFraming<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone is the one that was not made ready; swap so the ready one serves this call.
        let clone = self.0.clone();
        let mut inner = std::mem::replace(&mut self.0, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            match read_one_message(&parts.headers, body).await {
                Ok(message) => {
                    inner
                        .call(Request::from_parts(
                            parts,
                            Body::new(http_body_util::Full::new(message)),
                        ))
                        .await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// Reads the body and returns it (prefix included) if it holds exactly one well-framed message.
async fn read_one_message(headers: &HeaderMap, mut body: Body) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    let mut expected = None; // the whole frame's length, once the prefix is in
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::cancelled(format!("the request body ended with an error: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // request trailers carry nothing for a unary call
        };
        buf.put(data); // one copy per chunk
        if expected.is_none() && buf.len() >= PREFIX {
            let len = check_prefix(headers, &buf[..PREFIX])?;
            buf.reserve(len.saturating_sub(buf.len()));
            expected = Some(len);
        }
        if let Some(len) = expected
            && buf.len() > len
        {
            return Err(more_than_one());
        }
    }
    match expected {
        None if buf.is_empty() => Err(Status::unimplemented(
            "a unary call needs exactly one request message; this one carried none",
        )),
        None => Err(Status::invalid_argument(format!(
            "the request body ({} bytes) is shorter than a gRPC message prefix ({PREFIX} bytes)",
            buf.len()
        ))),
        Some(len) if buf.len() < len => Err(Status::invalid_argument(format!(
            "the message is truncated: its length prefix says {} bytes, the body has {}",
            len - PREFIX,
            buf.len() - PREFIX
        ))),
        Some(_) => Ok(buf.freeze()),
    }
}

/// The frame length the prefix announces, if the prefix is acceptable.
fn check_prefix(headers: &HeaderMap, prefix: &[u8]) -> Result<usize, Status> {
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    match prefix[0] {
        0 => {}
        1 => {
            let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
            if matches!(encoding, None | Some("identity")) {
                return Err(Status::invalid_argument(
                    "the message is flagged as compressed, but no grpc-encoding was declared",
                ));
            }
            // An encoding was declared: tonic answers UNIMPLEMENTED for one it lacks.
        }
        flag => {
            return Err(Status::invalid_argument(format!(
                "invalid compressed-flag byte {flag} in the message prefix (0 or 1)"
            )));
        }
    }
    if len > MAX_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the request message is {len} bytes, more than the limit of {MAX_MESSAGE_BYTES}"
        )));
    }
    Ok(PREFIX + len)
}

fn more_than_one() -> Status {
    Status::unimplemented("a unary call takes exactly one request message; this one carried more")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    async fn check(bytes: Vec<u8>, headers: &HeaderMap) -> Result<Bytes, Code> {
        read_one_message(headers, Body::new(http_body_util::Full::new(Bytes::from(bytes))))
            .await
            .map_err(|s| s.code())
    }

    #[tokio::test]
    async fn each_framing_mistake_has_its_code() {
        let none = HeaderMap::new();
        let good = frame(0, b"\x0a\x04AAPL");
        assert_eq!(check(good.clone(), &none).await.unwrap(), Bytes::from(good.clone()));
        assert_eq!(check(frame(0, b""), &none).await.unwrap().len(), PREFIX);
        assert_eq!(check(Vec::new(), &none).await, Err(Code::Unimplemented));
        assert_eq!(check(vec![0, 0, 0], &none).await, Err(Code::InvalidArgument));
        assert_eq!(check(good[..7].to_vec(), &none).await, Err(Code::InvalidArgument));
        assert_eq!(check(frame(2, b"x"), &none).await, Err(Code::InvalidArgument));
        assert_eq!(check(frame(1, b"x"), &none).await, Err(Code::InvalidArgument));
        let mut gzip = HeaderMap::new();
        gzip.insert("grpc-encoding", "gzip".parse().unwrap());
        assert!(check(frame(1, b"x"), &gzip).await.is_ok(), "left to tonic");
        let mut two = good.clone();
        two.extend_from_slice(&good);
        assert_eq!(check(two, &none).await, Err(Code::Unimplemented));
        let mut oversize = vec![0];
        oversize.extend_from_slice(&((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes());
        assert_eq!(check(oversize, &none).await, Err(Code::ResourceExhausted));
    }
}
