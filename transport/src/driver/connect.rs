//! Opening a TCP connection to a portal: name resolution at every attempt
//! (a DNS name may move), optional source address or interface binding
//! (open-iscsi's iface binding), TCP_NODELAY (seed event 66), and a connect timeout
//! (seed TCPConnectTime).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::ConnectionSpec;
use crate::portal::{Host, Portal};

/// Resolves `portal` and connects to the first address that answers.
pub(super) async fn connect(portal: &Portal, spec: &ConnectionSpec, timeout: Duration) -> io::Result<TcpStream> {
    let port = portal.port();
    let addrs: Vec<SocketAddr> = match portal.host() {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Dns(host) => tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out")))?
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", portal.host()));
    for addr in addrs {
        if let Some(src) = spec.source_addr
            && src.is_ipv4() != addr.is_ipv4()
        {
            // Seed event 72: a portal of the other address family is
            // skipped, not an error for the whole connection.
            last = io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} does not match source address {src}"));
            continue;
        }
        match tokio::time::timeout(timeout, connect_one(addr, spec)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out after {timeout:?}"))
            }
        }
    }
    Err(last)
}

async fn connect_one(addr: SocketAddr, spec: &ConnectionSpec) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(iface) = &spec.interface {
        // SO_BINDTODEVICE: the session leaves through this NIC whatever
        // the routing table says (Red Hat's iface binding of open-iscsi does the same).
        socket
            .bind_device(Some(iface.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to interface {iface}: {e}")))?;
    }
    if let Some(src) = spec.source_addr {
        socket
            .bind(&SocketAddr::new(src, 0).into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind source address {src}: {e}")))?;
    }
    let socket = TcpSocket::from_std_stream(socket.into());
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    // Keep TCP's own keepalive on as a backstop for idle standby paths;
    // NOP-Out is the real detector.
    let _ = SockRef::from(&stream).set_keepalive(true);
    Ok(stream)
}
