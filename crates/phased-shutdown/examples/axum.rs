//! A stock axum `Router`, served with one call so that a shutdown drops no request.
//!
//! ```text
//! PORT=3000 DELAY_MS=20 cargo run -p phased-shutdown --features axum --example axum
//! curl -d hello localhost:3000/echo      # answers "hello" after DELAY_MS
//! kill -TERM <pid>                       # or Ctrl+C: the report on stderr, exit code from it
//! UNIX_SOCKET=/tmp/echo.sock cargo run …  # the same on a Unix domain socket
//! TLS_CERT=cert.pem TLS_KEY=key.pem cargo run --features axum,rustls …   # the same over HTTPS
//! ```
//!
//! The pitfall this replaces: `axum::serve(listener, router).with_graceful_shutdown(signal)`
//! closes idle keep-alive connections while their clients may already be sending the next
//! request (those requests fail), and returns before the connections it detached are done.
//! `Shutdown::serve_axum` owns every connection: answers carry `Connection: close` once
//! draining, idle connections get a grace to deliver a request already on its way, the listen
//! backlog is served before the socket closes, and the phase deadline bounds it all.

use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use phased_shutdown::Shutdown;

#[tokio::main]
async fn main() -> std::io::Result<ExitCode> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let delay = Duration::from_millis(
        std::env::var("DELAY_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(20),
    );

    // Installed first, so a signal during start-up is not lost (or fatal).
    let mut shutdown = Shutdown::new().deadline(Duration::from_secs(10)).catch_signals()?;
    let servers = shutdown.phase("stop servers");

    let router = Router::new().route(
        "/echo",
        post(move |body: Bytes| async move {
            tokio::time::sleep(delay).await;
            body
        }),
    );
    // `UNIX_SOCKET=/path`: the same router on a Unix domain socket, drained the same way.
    if let Some(path) = std::env::var_os("UNIX_SOCKET") {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        println!("listening on unix:{}", std::path::Path::new(&path).display());
        shutdown.serve(servers, "http", phased_shutdown::serve::Server::unix(listener, router));
    } else if let (Some(cert), Some(key)) = (std::env::var_os("TLS_CERT"), std::env::var_os("TLS_KEY")) {
        // `TLS_CERT` and `TLS_KEY` (PEM files): HTTPS, drained the same way.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        let server = phased_shutdown::serve::Server::new(listener, router).connect_info();
        shutdown.serve(servers, "https", server.tls(tls_config(&cert, &key)?));
    } else {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        shutdown.serve_axum(servers, "http", listener, router);
    }

    let report = shutdown.run().await;
    eprintln!("{report}");
    Ok(ExitCode::from(report.exit_code()))
}

/// A rustls server configuration from PEM files, speaking HTTP/2 and HTTP/1.1.
fn tls_config(
    cert: &std::ffi::OsStr,
    key: &std::ffi::OsStr,
) -> std::io::Result<std::sync::Arc<phased_shutdown::serve::rustls::ServerConfig>> {
    use phased_shutdown::serve::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
    // ring, which builds with the C compiler alone, for the example; rustls now points to
    // aws-lc-rs for post-quantum key exchange. The drain does not depend on the choice.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}
