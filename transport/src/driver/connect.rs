//! Opening a TCP connection to a portal: name resolution at every attempt
//! (seed 17.G8), optional source address or interface binding (seed 003,
//! iface binding), TCP_NODELAY (seed event 66), and a connect timeout
//! (seed TCPConnectTime).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::ConnectionSpec;

/// The iSCSI well-known port (RFC 7143 section 13.8... IANA 3260).
pub const DEFAULT_PORT: u16 = 3260;

/// Splits `host[:port]`, `[v6]:port` or a bare IPv6 address.
pub fn split_host_port(portal: &str) -> (String, u16) {
    let portal = portal.trim();
    if let Some(rest) = portal.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT);
        return (host.to_string(), port);
    }
    if portal.matches(':').count() > 1 {
        return (portal.to_string(), DEFAULT_PORT);
    }
    match portal.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(p) => (host.to_string(), p),
            Err(_) => (portal.to_string(), DEFAULT_PORT),
        },
        None => (portal.to_string(), DEFAULT_PORT),
    }
}

/// Resolves `portal` and connects to the first address that answers.
pub async fn connect(portal: &str, spec: &ConnectionSpec, timeout: Duration) -> io::Result<TcpStream> {
    let (host, port) = split_host_port(portal);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out")))?
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
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
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out after {timeout:?}")),
        }
    }
    Err(last)
}

async fn connect_one(addr: SocketAddr, spec: &ConnectionSpec) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(iface) = &spec.interface {
        // SO_BINDTODEVICE: the session leaves through this NIC whatever
        // the routing table says (seed 003 lines 5-7).
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

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("10.0.0.1"), ("10.0.0.1".into(), 3260));
        assert_eq!(split_host_port("10.0.0.1:3261"), ("10.0.0.1".into(), 3261));
        assert_eq!(split_host_port("[fe80::1]:3262"), ("fe80::1".into(), 3262));
        assert_eq!(split_host_port("[fe80::1]"), ("fe80::1".into(), 3260));
        assert_eq!(split_host_port("fe80::1"), ("fe80::1".into(), 3260));
        assert_eq!(split_host_port("san.example.com:3260"), ("san.example.com".into(), 3260));
    }
}
