//! `Shutdown::serve_tonic_server`: a configured tonic `Server` keeps what its builder was told
//! (a layer, the server's `timeout` and each call's `grpc-timeout`, its TLS), its calls see
//! their peer's address, and the shutdown stays clean.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use phased_shutdown::Shutdown;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// `slow.Slow/Wait`: waits as many milliseconds as the path's last segment says, then answers
/// an empty message; refuses a call whose request does not carry its peer's address.
#[derive(Clone)]
struct Slow;

impl NamedService for Slow {
    const NAME: &'static str = "slow.Slow";
}

impl<B> Service<http::Request<B>> for Slow
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let extensions = request.extensions();
            let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
                extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .map(TlsConnectInfo::get_ref)
            });
            let has_peer = tcp.is_some_and(|info| info.remote_addr().is_some());
            if !has_peer {
                return Ok(tonic::Status::internal("no TcpConnectInfo on the request").into_http());
            }
            let delay = request
                .headers()
                .get("x-wait-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis);
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(Wait(delay), request).await)
        })
    }
}

struct Wait(Duration);

impl tonic::server::UnaryService<()> for Wait {
    type Response = ();
    type Future = BoxFuture<tonic::Response<()>, tonic::Status>;

    fn call(&mut self, _request: tonic::Request<()>) -> Self::Future {
        let delay = self.0;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(tonic::Response::new(()))
        })
    }
}

/// A channel to the server at `addr`, connected.
async fn connect(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One call of `slow.Slow/Wait` that waits `wait` on the server, with `timeout` as its
/// `grpc-timeout` when given.
async fn call(
    channel: tonic::transport::Channel,
    wait: Duration,
    timeout: Option<Duration>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert("x-wait-ms", wait.as_millis().to_string().parse().unwrap());
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let path = http::uri::PathAndQuery::from_static("/slow.Slow/Wait");
    grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
        .await
        .map(|_| ())
}

/// Starts the shutdown through `handle` and waits (10 s at most) for `running`'s report, which
/// must be clean.
async fn stopped_cleanly(
    handle: phased_shutdown::ShutdownHandle,
    running: tokio::task::JoinHandle<phased_shutdown::Report>,
) -> phased_shutdown::Report {
    handle.shutdown("the test");
    let report = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert!(report.is_clean(), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_tonic_server_keeps_its_layers_and_timeouts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut shutdown = Shutdown::new().deadline(Duration::from_secs(10));
    let servers = shutdown.phase("servers");
    let layered = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&layered);
    let server = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(300))
        .layer(tower::util::MapRequestLayer::new(
            move |request: http::Request<tonic::body::Body>| {
                counted.fetch_add(1, Ordering::Relaxed);
                request
            },
        ));
    shutdown.serve_tonic_server(servers, "grpc", listener, server, tonic::service::Routes::new(Slow));
    let handle = shutdown.handle();
    let running = tokio::spawn(shutdown.run());

    let channel = connect(addr).await;
    call(channel.clone(), Duration::from_millis(10), None)
        .await
        .expect("a quick call is answered, with its peer's address");
    // The call's own grpc-timeout, shorter than the server's.
    let started = std::time::Instant::now();
    let status = call(
        channel.clone(),
        Duration::from_secs(5),
        Some(Duration::from_millis(100)),
    )
    .await
    .expect_err("cut by its grpc-timeout");
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The server's timeout, for a call that gives none.
    let status = call(channel.clone(), Duration::from_secs(5), None)
        .await
        .expect_err("cut by the server's timeout");
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert_eq!(
        layered.load(Ordering::Relaxed),
        3,
        "every call went through the builder's layer"
    );

    let report = stopped_cleanly(handle, running).await;
    let grpc = report.entries.iter().find(|e| e.component == "grpc").unwrap();
    assert!(
        grpc.counts.contains(&("connections", 1)),
        "one connection, counted: {:?}",
        grpc.counts
    );
}

/// TLS set on the builder (`tls_config`): tonic runs the handshake on each socket the library
/// accepted and hands it. A call over TLS is answered, with its peer's address; one in plain
/// text is not; the shutdown is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_tls_applies_to_the_sockets_the_library_hands_it() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut shutdown = Shutdown::new().deadline(Duration::from_secs(10));
    let servers = shutdown.phase("servers");
    let identity = Identity::from_pem(made.cert.pem(), made.signing_key.serialize_pem());
    let server = tonic::transport::Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap();
    shutdown.serve_tonic_server(servers, "grpc", listener, server, tonic::service::Routes::new(Slow));
    let handle = shutdown.handle();
    let running = tokio::spawn(shutdown.run());

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(made.cert.pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS handshake with the library's socket");
    call(channel, Duration::from_millis(10), None)
        .await
        .expect("a call over TLS is answered, with its peer's address");
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    assert!(
        call(plain, Duration::from_millis(10), None).await.is_err(),
        "a plain-text call to the TLS server is answered"
    );

    stopped_cleanly(handle, running).await;
}

/// A call still running at the phase's deadline: the component is aborted, and with it the
/// socket tonic's detached connection task holds, so the client sees the end at once instead
/// of waiting for the call to finish in a process that has moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_deadline_the_connections_tonic_holds_are_shut_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut shutdown = Shutdown::new()
        .deadline(Duration::from_millis(500))
        .watchdog_grace(None);
    let servers = shutdown.phase("servers");
    let server = tonic::transport::Server::builder();
    shutdown.serve_tonic_server(servers, "grpc", listener, server, tonic::service::Routes::new(Slow));
    let handle = shutdown.handle();
    let running = tokio::spawn(shutdown.run());
    let channel = connect(addr).await;
    let stuck = tokio::spawn(call(channel, Duration::from_secs(60), None));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = std::time::Instant::now();
    handle.shutdown("the test");
    let report = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
    let grpc = report.entries.iter().find(|e| e.component == "grpc").unwrap();
    assert_eq!(grpc.outcome, phased_shutdown::Outcome::TimedOut, "{report}");
    let ended = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("the stuck call ends with the connection, not after its 60 s")
        .unwrap();
    assert!(ended.is_err(), "the call cannot have been answered: {ended:?}");
    assert!(stopping.elapsed() < Duration::from_secs(3), "{:?}", stopping.elapsed());
}
