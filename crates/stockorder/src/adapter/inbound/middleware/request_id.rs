//! `x-request-id`: kept when the client (or a proxy in front) sent one, generated otherwise,
//! returned on the answer and carried by every log line of the request, so one id finds a
//! request in the client's log, the proxy's and ours.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderName, HeaderValue, Request, Response};

/// The header, as proxies and tracing tools name it.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A new time-ordered id (UUIDv7): sorted ids are sorted by arrival, like the order ids.
fn new_id() -> HeaderValue {
    let id = uuid::Uuid::now_v7();
    let mut text = uuid::Uuid::encode_buffer();
    // A UUID's hyphenated form is visible ASCII: always a valid header value.
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Puts an `x-request-id` on every request that arrives without one, and the request's id on
/// its answer: what tower-http's `SetRequestId` and `PropagateRequestId` do in two layers (a
/// test holds the two to the same answers). Theirs also copy the id into the request's and the
/// answer's extensions, which nothing here reads: the log span takes it from the header. What
/// the one layer saves per request is in docs/performance.md.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

#[cfg(not(feature = "stock-request-id"))]
impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIds { inner }
    }
}

/// Built with the `stock-request-id` feature (bench/run's A/B only), the layer is tower-http's
/// two, with the same ids.
#[cfg(feature = "stock-request-id")]
impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = tower_http::request_id::SetRequestId<tower_http::request_id::PropagateRequestId<S>, MakeV7>;

    fn layer(&self, inner: S) -> Self::Service {
        let propagate = tower_http::request_id::PropagateRequestId::new(inner, X_REQUEST_ID.clone());
        tower_http::request_id::SetRequestId::new(propagate, X_REQUEST_ID.clone(), MakeV7)
    }
}

/// tower-http's id maker, making ours.
#[cfg(any(test, feature = "stock-request-id"))]
#[derive(Debug, Clone, Copy)]
pub struct MakeV7;

#[cfg(any(test, feature = "stock-request-id"))]
impl tower_http::request_id::MakeRequestId for MakeV7 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<tower_http::request_id::RequestId> {
        Some(tower_http::request_id::RequestId::new(new_id()))
    }
}

/// See [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S, B, A> tower::Service<Request<B>> for RequestIds<S>
where
    S: tower::Service<Request<B>, Response = Response<A>>,
{
    type Response = Response<A>;
    type Error = S::Error;
    type Future = WithRequestId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(sent) => sent.clone(),
            None => {
                let id = new_id();
                request.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        WithRequestId {
            answer: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer, given the request's id unless the handler set one.
    pub struct WithRequestId<F> {
        #[pin]
        answer: F,
        id: Option<HeaderValue>,
    }
}

impl<F, A, E> Future for WithRequestId<F>
where
    F: Future<Output = Result<Response<A>, E>>,
{
    type Output = Result<Response<A>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.answer.poll(cx))?;
        if let Some(id) = this.id.take()
            && !response.headers().contains_key(&X_REQUEST_ID)
        {
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        Poll::Ready(Ok(response))
    }
}

/// The log span of one request (inside [`RequestIdLayer`]): method, path and its id (the
/// fields docs/log-events.md names; not the HTTP version, which costs a field per line and
/// tells an operator little), so every event logged while handling
/// it (the answer's status and latency, an error) names the request.
pub fn span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        request_id = %id,
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use tower::{Layer, Service, ServiceBuilder, ServiceExt};
    use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

    use super::*;

    /// What the handler saw and what the client got: the request's id and the answer's.
    async fn exchange<L>(layer: L, sent: Option<&str>, handler_sets: Option<&str>) -> (String, String)
    where
        L: Layer<tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>>,
        L::Service: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    {
        let handler_sets = handler_sets.map(HeaderValue::from_str).transpose().unwrap();
        let handler = tower::service_fn(move |request: Request<Body>| {
            let seen = request.headers()[&X_REQUEST_ID].to_str().unwrap().to_owned();
            let mut answer = Response::new(Body::from(seen));
            if let Some(id) = handler_sets.clone() {
                answer.headers_mut().insert(X_REQUEST_ID.clone(), id);
            }
            async move { Ok::<_, Infallible>(answer) }
        });
        let mut service = layer.layer(tower::util::BoxCloneSyncService::new(handler));
        let mut request = Request::get("/").body(Body::empty()).unwrap();
        if let Some(id) = sent {
            request
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), HeaderValue::from_str(id).unwrap());
        }
        let answer = service.ready().await.unwrap().call(request).await.unwrap();
        let returned = answer.headers()[&X_REQUEST_ID].to_str().unwrap().to_owned();
        let seen = axum::body::to_bytes(answer.into_body(), 1024).await.unwrap();
        (String::from_utf8(seen.to_vec()).unwrap(), returned)
    }

    #[tokio::test]
    async fn the_one_layer_answers_as_tower_https_two_do() {
        let crates = || {
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(X_REQUEST_ID.clone(), MakeV7))
                .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        };
        for (sent, handler_sets) in [(Some("abc-1"), None), (Some("abc-1"), Some("set-by-handler"))] {
            assert_eq!(
                exchange(RequestIdLayer, sent, handler_sets).await,
                exchange(crates(), sent, handler_sets).await,
                "sent {sent:?}, the handler set {handler_sets:?}"
            );
        }
        // Without an id, each makes a new one, seen by the handler and returned with the answer
        // unless the handler set its own.
        for (seen, returned) in [
            exchange(RequestIdLayer, None, None).await,
            exchange(crates(), None, None).await,
        ] {
            assert_eq!(seen, returned);
            assert_eq!(uuid::Uuid::parse_str(&seen).unwrap().get_version_num(), 7);
        }
        for (seen, returned) in [
            exchange(RequestIdLayer, None, Some("h")).await,
            exchange(crates(), None, Some("h")).await,
        ] {
            assert_eq!(returned, "h");
            assert_eq!(uuid::Uuid::parse_str(&seen).unwrap().get_version_num(), 7);
        }
    }
}
