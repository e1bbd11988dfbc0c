//! Long-lived connections through a SIGTERM, against `examples/streams.rs` (a real process),
//! with clients of each protocol that are not ours: tokio-tungstenite for WebSockets, a raw
//! HTTP/1.1 reader for SSE (so the terminating chunk is seen, not assumed), tonic's generated
//! client for the health `Watch`. Every stream must end the way its protocol defines and the
//! process must exit 0 well within 4 s. The control is the same example served the stock way
//! (`SERVE=stock`), which must fail under the same clients.
//!
//! In-process, with a coordinator triggered by its handle: a handler that ignores the notice is
//! cut at the bound, the later phase still runs, and the report names the stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::drain::{ONE_AT_A_TIME, spawn_example};

/// How long a client waits for its stream's end after the signal.
const END_WAIT: Duration = Duration::from_secs(12);

/// The example's two ports.
struct Ports {
    http: SocketAddr,
    grpc: SocketAddr,
}

async fn start(env: &[(&str, &str)]) -> (tokio::process::Child, Ports) {
    let env: Vec<(&str, &str)> = [("PORT", "0"), ("GRPC_PORT", "0")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let (child, listening) = spawn_example("streams", &env).await;
    let (http, grpc) = listening.split_once(" and ").expect("listening on HTTP and GRPC");
    (
        child,
        Ports {
            http: http.parse().unwrap(),
            grpc: grpc.parse().unwrap(),
        },
    )
}

type WebSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket to `/ws`, shown to echo.
async fn websocket(addr: SocketAddr) -> WebSocket {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "hello"),
        other => panic!("no echo: {other:?}"),
    }
    ws
}

/// How a WebSocket ended: the server's close code, and whether the closing handshake
/// completed (the stream ended without an error after the Close).
#[derive(Debug)]
struct WsEnd {
    code: Option<u16>,
    clean: bool,
}

async fn websocket_end(mut ws: WebSocket) -> WsEnd {
    let mut code = None;
    let clean = loop {
        match tokio::time::timeout(END_WAIT, ws.next()).await {
            Err(_) => break false,
            Ok(None) => break code.is_some(),
            Ok(Some(Ok(Message::Close(frame)))) => code = frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))) => break code.is_some(),
            Ok(Some(Err(_))) => break false,
        }
    };
    WsEnd { code, clean }
}

/// An SSE stream on `/sse` over raw HTTP/1.1, its head read and its first event received.
async fn sse(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    stream
        .get_mut()
        .write_all(b"GET /sse HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut chunked = false;
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        chunked |= line.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
    }
    assert!(chunked, "an SSE stream is chunked");
    let first = chunk(&mut stream).await.expect("a first event");
    assert!(String::from_utf8_lossy(&first).contains("data: tick"), "{first:?}");
    stream
}

/// One chunk of a chunked body: `Some(bytes)`, `Some(empty)` for the terminating chunk, `None`
/// when the connection ended (or broke) first.
async fn chunk(stream: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    if stream.read_line(&mut size).await.ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(size.trim_end(), 16).ok()?;
    let mut data = vec![0; size + 2]; // and its CRLF
    stream.read_exact(&mut data).await.ok()?;
    (data.ends_with(b"\r\n")).then(|| data[..size].to_vec())
}

/// How an SSE stream ended: with the terminating chunk, and whether its last event was a
/// `retry:` hint.
#[derive(Debug)]
struct SseEnd {
    terminated: bool,
    retry: bool,
}

async fn sse_end(mut stream: BufReader<TcpStream>) -> SseEnd {
    let mut last = Vec::new();
    let terminated = tokio::time::timeout(END_WAIT, async {
        loop {
            match chunk(&mut stream).await {
                None => return false,
                Some(data) if data.is_empty() => return true,
                Some(data) => last = data,
            }
        }
    })
    .await
    .unwrap_or(false);
    SseEnd {
        terminated,
        retry: String::from_utf8_lossy(&last).starts_with("retry:"),
    }
}

type Watch = tonic::Streaming<HealthCheckResponse>;

/// A health `Watch` on the whole server, its first answer SERVING.
async fn watch(addr: SocketAddr) -> Watch {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stream = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    stream
}

/// How a `Watch` ended: whether NOT_SERVING came first, and the status it ended with.
#[derive(Debug)]
struct WatchEnd {
    not_serving: bool,
    status: Option<tonic::Code>,
    message: String,
}

async fn watch_end(mut stream: Watch) -> WatchEnd {
    let mut end = WatchEnd {
        not_serving: false,
        status: None,
        message: String::new(),
    };
    let _ = tokio::time::timeout(END_WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(answer)) => end.not_serving |= answer.status() == ServingStatus::NotServing,
                Ok(None) => {
                    end.status = Some(tonic::Code::Ok);
                    return;
                }
                Err(status) => {
                    end.status = Some(status.code());
                    end.message = status.message().to_owned();
                    return;
                }
            }
        }
    })
    .await;
    end
}

/// What every client saw, and how the process exited.
#[derive(Debug, Default)]
struct Outcome {
    websockets: Vec<WsEnd>,
    sse: Vec<SseEnd>,
    watches: Vec<WatchEnd>,
    exit: Option<i32>,
    took: Duration,
    report: String,
}

impl Outcome {
    /// Each way the outcome falls short of the promise.
    fn faults(&self) -> Vec<String> {
        let mut faults = Vec::new();
        let bad_ws = self
            .websockets
            .iter()
            .filter(|w| !(w.clean && matches!(w.code, Some(1001 | 1012))))
            .count();
        if bad_ws > 0 {
            faults.push(format!("{bad_ws} WebSocket(s) without Close 1001/1012 and a clean end"));
        }
        let bad_sse = self.sse.iter().filter(|s| !(s.terminated && s.retry)).count();
        if bad_sse > 0 {
            faults.push(format!(
                "{bad_sse} SSE stream(s) without retry: and the terminating chunk"
            ));
        }
        let bad_watch = self
            .watches
            .iter()
            .filter(|w| !(w.not_serving && w.status == Some(tonic::Code::Unavailable)))
            .count();
        if bad_watch > 0 {
            faults.push(format!("{bad_watch} Watch(es) without NOT_SERVING then UNAVAILABLE"));
        }
        if self.exit != Some(0) {
            faults.push(format!("exit code {:?}", self.exit));
        }
        if self.took >= Duration::from_secs(4) {
            faults.push(format!("exit {:?} after the signal", self.took));
        }
        faults
    }
}

/// Waits for each client's end, concurrently, in order.
async fn ends<C, F, Fut>(clients: Vec<C>, end: F) -> Vec<Fut::Output>
where
    F: Fn(C) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send,
{
    let waits: Vec<_> = clients.into_iter().map(|c| tokio::spawn(end(c))).collect();
    let mut out = Vec::with_capacity(waits.len());
    for wait in waits {
        out.push(wait.await.unwrap());
    }
    out
}

/// Opens `n_ws` WebSockets, `n_sse` SSE streams and `n_watch` Watches on the example started
/// with `env`, sends SIGTERM once each has shown it works, and gathers how each ended.
async fn through_a_sigterm(env: &[(&str, &str)], n_ws: usize, n_sse: usize, n_watch: usize) -> Outcome {
    let (mut child, ports) = start(env).await;
    let mut websockets = Vec::new();
    let mut streams = Vec::new();
    let mut watches = Vec::new();
    for _ in 0..n_ws {
        websockets.push(websocket(ports.http).await);
    }
    for _ in 0..n_sse {
        streams.push(sse(ports.http).await);
    }
    for _ in 0..n_watch {
        watches.push(watch(ports.grpc).await);
    }
    let ws_ends = tokio::spawn(ends(websockets, websocket_end));
    let sse_ends = tokio::spawn(ends(streams, sse_end));
    let watch_ends = tokio::spawn(ends(watches, watch_end));

    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the example exits")
        .unwrap();
    let took = signalled.elapsed();
    let mut report = String::new();
    child.stderr.take().unwrap().read_to_string(&mut report).await.unwrap();
    Outcome {
        websockets: ws_ends.await.unwrap(),
        sse: sse_ends.await.unwrap(),
        watches: watch_ends.await.unwrap(),
        exit: status.code(),
        took,
        report,
    }
}

async fn every_stream_ends_cleanly(n_ws: usize, n_sse: usize, n_watch: usize) {
    every_stream_ends_cleanly_with(&[], n_ws, n_sse, n_watch).await;
}

async fn every_stream_ends_cleanly_with(env: &[(&str, &str)], n_ws: usize, n_sse: usize, n_watch: usize) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ours = through_a_sigterm(env, n_ws, n_sse, n_watch).await;
    eprintln!(
        "served by phased-shutdown: exit {:?} after {:?}\n{}",
        ours.exit, ours.took, ours.report
    );
    assert_eq!(ours.faults(), Vec::<String>::new(), "{ours:?}");
    assert_eq!(
        ours.websockets.len() + ours.sse.len() + ours.watches.len(),
        n_ws + n_sse + n_watch
    );
    let ended = format!("streams ended {}", n_ws + n_sse);
    assert!(
        ours.report.contains(&ended),
        "the http server counts {ended}: {}",
        ours.report
    );
    assert!(
        ours.report.contains(&format!("streams ended {n_watch}")),
        "{}",
        ours.report
    );
    assert!(ours.report.contains("database"), "{}", ours.report);

    let stock = through_a_sigterm(&[("SERVE", "stock"), ("DEADLINE_MS", "5000")], n_ws, n_sse, n_watch).await;
    let faults = stock.faults();
    eprintln!("stock axum + tonic: {faults:?}\n{}", stock.report);
    assert!(
        !faults.is_empty(),
        "the control kept the promise too: the test cannot fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_of_each_kind_ends_the_way_its_protocol_defines() {
    every_stream_ends_cleanly(1, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_streams_end_cleanly_within_the_jitter_window() {
    every_stream_ends_cleanly(100, 100, 20).await;
}

/// The same through a configured tonic `Server` (`Shutdown::serve_tonic_server`): tonic drives
/// the connections, and each Watch still ends with UNAVAILABLE after NOT_SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_cleanly_through_a_configured_tonic_server() {
    every_stream_ends_cleanly_with(&[("SERVE", "builder")], 1, 1, 20).await;
}

/// A WebSocket handler that holds its socket and never looks at it again, and an SSE body that
/// stops in the middle of an event: both ignore the notice. They are cut at the bound, the
/// later phase still runs, and the report names both and is not clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ignores_the_notice_is_cut_at_its_bound_and_named() {
    use axum::extract::ws::WebSocketUpgrade;
    use axum::response::IntoResponse;
    let _turn = ONE_AT_A_TIME.lock().await;
    let router = axum::Router::new()
        .route(
            "/stubborn-ws",
            axum::routing::get(|ws: WebSocketUpgrade| async {
                ws.on_upgrade(|socket| async move {
                    let _held = socket;
                    std::future::pending::<()>().await;
                })
            }),
        )
        .route(
            "/stubborn-sse",
            axum::routing::get(|| async {
                let half_an_event = tokio_stream::once(Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(
                    "data: half an event",
                )))
                .chain(tokio_stream::pending());
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(half_an_event),
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bound = Duration::from_millis(800);
    let mut shutdown = phased_shutdown::Shutdown::new().deadline(Duration::from_secs(10));
    let servers = shutdown.phase("stop servers");
    let resources = shutdown.phase("close resources");
    shutdown.serve(
        servers,
        "http",
        phased_shutdown::serve::Server::new(listener, router).streams(
            phased_shutdown::serve::StreamEnds::default()
                .jitter(Duration::from_millis(100))
                .bound(bound),
        ),
    );
    shutdown.on_stop(resources, "database", || async {});
    let handle = shutdown.handle();
    let run = tokio::spawn(shutdown.run());

    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/stubborn-ws"), stream)
        .await
        .unwrap();
    let mut sse = TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /stubborn-sse HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let _ = sse.read(&mut head).await.unwrap();

    let triggered = Instant::now();
    handle.shutdown("test");
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    let took = triggered.elapsed();
    eprintln!("{report}");
    assert!(
        took < bound + Duration::from_millis(500),
        "took {took:?} with a bound of {bound:?}"
    );
    assert!(!report.is_clean());
    assert_eq!(report.exit_code(), 1);
    let http = report.entries.iter().find(|e| e.component == "http").unwrap();
    let named = http.outcome.to_string();
    assert!(named.contains("2 stream(s) cut"), "{named}");
    assert!(named.contains("GET /stubborn-ws (WebSocket)"), "{named}");
    assert!(named.contains("GET /stubborn-sse (SSE)"), "{named}");
    assert!(http.counts.contains(&("streams cut", 2)), "{:?}", http.counts);
    let database = report.entries.iter().find(|e| e.component == "database").unwrap();
    assert_eq!(database.outcome, phased_shutdown::Outcome::Stopped);
    drop(ws);
}
