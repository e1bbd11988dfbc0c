//! The service's two ports: taken before anything else is touched, listened on once the
//! database is open, or adopted from the service manager; and what to say when one cannot be
//! had.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::StartupError;

/// The kernel's cap on a listen backlog (`net.core.somaxconn`), so a burst of connections
/// waits in the accept queue instead of being dropped (and retried by the client a second
/// later). 4096 on current Linux; tokio's own default is 1024.
fn listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// The service's two ports, for saying which one a problem is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The REST API's.
    Http,
    /// The gRPC API's.
    Grpc,
}

impl Port {
    pub(super) fn protocol(self) -> &'static str {
        match self {
            Port::Http => "HTTP",
            Port::Grpc => "gRPC",
        }
    }

    /// What to do about `error`, when there is something to say.
    pub(super) fn hint(self, error: &std::io::Error) -> String {
        let setting = match self {
            Port::Http => "PORT (or --port)",
            Port::Grpc => "GRPC_PORT (or --grpc-port)",
        };
        match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!(": the port is in use (another server?); choose another with {setting}, 0 for any free one")
            }
            std::io::ErrorKind::PermissionDenied => {
                format!(": not allowed (ports below 1024 need privileges); choose another with {setting}")
            }
            _ => String::new(),
        }
    }
}

/// Takes the port now, before anything else is touched: a second server started on a port in
/// use fails here, before it has created or migrated a database. It listens (and the kernel
/// starts accepting connections) only in [`listen`], once the database is open.
fn bind(port: Port, addr: SocketAddr) -> Result<tokio::net::TcpSocket, StartupError> {
    let failed = |source| StartupError::Bind { port, addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // As std and tokio do for a listener: a restart can bind while old connections linger.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    Ok(socket)
}

/// Where the two ports come from.
pub(super) enum Sockets {
    /// Listening already, passed by the service manager (or the previous process).
    Inherited {
        http: std::net::TcpListener,
        grpc: std::net::TcpListener,
    },
    /// Bound here, to listen on once the database is open.
    Bound {
        http: (SocketAddr, tokio::net::TcpSocket),
        grpc: (SocketAddr, tokio::net::TcpSocket),
    },
}

/// A listener on `addr` for `port`, bound and listening now: for the demos, which take their
/// port before they open the database, so that a port in use leaves nothing on disk. The same
/// errors, and hints, as the service's.
pub fn listener(port: Port, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    let socket = bind(port, addr)?;
    listen(port, addr, socket).map(|(listener, _)| listener)
}

/// Listens on a socket [`bind`] took.
fn listen(
    port: Port,
    addr: SocketAddr,
    socket: tokio::net::TcpSocket,
) -> Result<(TcpListener, SocketAddr), StartupError> {
    let failed = |source| StartupError::Bind { port, addr, source };
    let listener = socket.listen(listen_backlog()).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// A listening socket from the service manager, as a tokio listener.
fn adopt(port: Port, listener: std::net::TcpListener) -> Result<(TcpListener, SocketAddr), StartupError> {
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        port,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listener = TcpListener::from_std(listener).map_err(|source| StartupError::Bind { port, addr, source })?;
    Ok((listener, addr))
}

/// A listener ready to serve, and the address it is bound to (the port chosen when 0 was asked).
pub(super) type Bound = (TcpListener, SocketAddr);

impl Sockets {
    /// The service manager's sockets when it passed some (socket activation: HOST and the ports
    /// are its business, see `stockorder.socket`), else `http` and `grpc` bound now, so that a
    /// port in use fails the start before the database is touched.
    pub(super) fn take(http: SocketAddr, grpc: SocketAddr) -> Result<Self, StartupError> {
        Ok(match crate::lifecycle::activation::inherited()? {
            Some((http, grpc)) => Sockets::Inherited { http, grpc },
            None => Sockets::Bound {
                http: (http, bind(Port::Http, http)?),
                grpc: (grpc, bind(Port::Grpc, grpc)?),
            },
        })
    }

    /// Both ports listening: the kernel accepts connections from here on.
    pub(super) fn listen(self) -> Result<(Bound, Bound), StartupError> {
        match self {
            Sockets::Inherited { http, grpc } => {
                tracing::info!("serving on sockets passed by the service manager");
                Ok((adopt(Port::Http, http)?, adopt(Port::Grpc, grpc)?))
            }
            Sockets::Bound { http, grpc } => {
                Ok((listen(Port::Http, http.0, http.1)?, listen(Port::Grpc, grpc.0, grpc.1)?))
            }
        }
    }
}
