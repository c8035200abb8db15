//! The NBD server: listening sockets, the export table, connections, and
//! the graceful stop.
//!
//! ```no_run
//! # async fn demo(device: mpio_mpath::Device) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use mpio_nbd::{ExportConfig, ListenSpec, Server, ServerConfig};
//!
//! let config = ServerConfig::new(vec![ListenSpec::unix("/run/mpio/nbd.sock"), ListenSpec::default_tcp()]);
//! let server = Server::bind(config).await?;
//! server.add_export(ExportConfig::new("mp0"), Arc::new(device))?;
//! // ... clients connect to nbd+unix:///mp0?socket=/run/mpio/nbd.sock
//! server.remove_export("mp0").await; // config reload: its clients finish and are closed
//! server.shutdown().await; // stop accepting, finish in-flight requests, close
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mpio_throttle::AcceptBackoff;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::conn::{self, ExportHandle, Limits};
use crate::consts::MAX_STRING_LEN;
use crate::negotiate::{Catalog, DEFAULT_MAX_PAYLOAD, ExportInfo, NegotiationConfig};
use crate::tracker::{Guard, Tracker};
use mpio_mpath::BlockDevice;

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// A unix socket at `path`, with permissions `mode` and, if given, the
    /// owner `(uid, gid)` (default: the server's user). A stale socket
    /// file left by a server that is gone is replaced; a live one is an
    /// error.
    Unix {
        /// Socket path.
        path: PathBuf,
        /// Permission bits, applied before the socket accepts connections.
        mode: u32,
        /// Owner and group to give the socket.
        owner: Option<(u32, u32)>,
    },
    /// A TCP address (port 0 picks a free port; see
    /// [`Server::local_addrs`]). NBD has no authentication without TLS:
    /// anything that can connect can read and write the exports, so keep
    /// it on loopback unless the network is trusted.
    Tcp(SocketAddr),
}

impl ListenSpec {
    /// A unix socket at `path`, mode 0600 (only the server's user, root
    /// for the daemon, may connect).
    pub fn unix(path: impl Into<PathBuf>) -> ListenSpec {
        ListenSpec::Unix { path: path.into(), mode: 0o600, owner: None }
    }

    /// TCP on `127.0.0.1:10809`.
    pub fn default_tcp() -> ListenSpec {
        ListenSpec::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)))
    }
}

/// An address the server listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address, with the port actually bound.
    Tcp(SocketAddr),
}

impl ListenAddr {
    /// The NBD URI of export `name` at this address
    /// (`nbd+unix:///name?socket=path` or `nbd://addr/name`), as libnbd,
    /// qemu and nbdfuse take it.
    pub fn uri(&self, name: &str) -> String {
        match self {
            ListenAddr::Unix(p) => format!("nbd+unix:///{name}?socket={}", p.display()),
            ListenAddr::Tcp(a) => format!("nbd://{a}/{name}"),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen (at least one).
    pub listen: Vec<ListenSpec>,
    /// Largest read or write payload (bytes); caps the advertised maximum
    /// block size. Default 32 MiB, the spec's default; at least 1 MiB.
    pub max_payload: u32,
    /// Bytes one connection may have in flight (write payloads buffered,
    /// reads in progress, replies not yet sent) before the server stops
    /// reading its requests. Default 64 MiB; at least `max_payload`.
    pub max_in_flight: usize,
    /// Requests one connection may have in flight. Default 256.
    pub max_requests: usize,
    /// Time a client has to finish the handshake. Default 30 s.
    pub handshake_timeout: Duration,
}

impl ServerConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: Vec<ListenSpec>) -> ServerConfig {
        ServerConfig {
            listen,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_in_flight: 64 << 20,
            max_requests: 256,
            handshake_timeout: Duration::from_secs(30),
        }
    }

    fn check(&self) -> Result<(), ServerError> {
        if self.listen.is_empty() {
            return Err(ServerError::Config("no listen address: give a unix socket path or a TCP address".into()));
        }
        if self.max_payload < 1 << 20 {
            return Err(ServerError::Config(format!(
                "max_payload {} is below 1 MiB, which NBD clients expect to be able to send",
                self.max_payload
            )));
        }
        if self.max_in_flight < self.max_payload as usize {
            return Err(ServerError::Config(format!(
                "max_in_flight {} is smaller than max_payload {}: one request would not fit",
                self.max_in_flight, self.max_payload
            )));
        }
        if self.max_requests == 0 {
            return Err(ServerError::Config("max_requests must be at least 1".into()));
        }
        Ok(())
    }
}

/// An export's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Name clients ask for (non-empty UTF-8 without NUL, at most 4096
    /// bytes). The empty name reaches the only export when there is
    /// exactly one.
    pub name: String,
    /// For humans (`NBD_OPT_LIST`, `nbdinfo`).
    pub description: String,
    /// Refuse writes, trims and zeroing (`NBD_FLAG_READ_ONLY`, `EPERM`),
    /// whatever the device allows.
    pub read_only: bool,
}

impl ExportConfig {
    /// A writable export named `name` without description.
    pub fn new(name: impl Into<String>) -> ExportConfig {
        ExportConfig { name: name.into(), description: String::new(), read_only: false }
    }
}

/// Why the server could not start or an export was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration cannot work.
    #[error("NBD server configuration: {0}")]
    Config(String),
    /// A listening socket could not be set up.
    #[error("NBD server cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// Another server answers on the unix socket path.
    #[error("NBD socket {} is in use by a running server; stop it or choose another path", path.display())]
    SocketInUse {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a socket is at the unix socket path.
    #[error("{} exists and is not a socket; remove it or choose another path", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// An export name is taken or not acceptable.
    #[error("NBD export {name:?}: {why}")]
    Export {
        /// The name.
        name: String,
        /// Why.
        why: String,
    },
}

struct Entry<B> {
    backend: Arc<B>,
    config: ExportConfig,
    removed: watch::Sender<bool>,
    connections: Tracker,
}

struct Shared<B> {
    exports: Mutex<BTreeMap<String, Entry<B>>>,
    limits: Limits,
    stop: watch::Sender<bool>,
    /// Connection tasks.
    connections: Tracker,
    /// Accept loops.
    listeners: Tracker,
}

impl<B> Shared<B> {
    fn exports(&self) -> MutexGuard<'_, BTreeMap<String, Entry<B>>> {
        self.exports.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: BlockDevice> Catalog for Shared<B> {
    type Export = ExportHandle<B>;

    fn lookup(&self, name: &str) -> Result<(ExportHandle<B>, ExportInfo), String> {
        let exports = self.exports();
        let entry = if name.is_empty() && exports.len() == 1 { exports.values().next() } else { exports.get(name) };
        let Some(entry) = entry else {
            let names: Vec<&str> = exports.keys().map(String::as_str).collect();
            return Err(match (name.is_empty(), names.is_empty()) {
                (_, true) => "this server has no exports yet".to_string(),
                (true, false) => format!("no default export: name one of {}", names.join(", ")),
                (false, false) => format!("no export named {name:?}; exports: {}", names.join(", ")),
            });
        };
        let mut geometry = entry
            .backend
            .geometry()
            .map_err(|why| format!("export {:?} is not available yet: {why}", entry.config.name))?;
        geometry.read_only |= entry.config.read_only;
        let handle = ExportHandle {
            backend: entry.backend.clone(),
            removed: entry.removed.subscribe(),
            _guard: entry.connections.guard(),
        };
        let info =
            ExportInfo { name: entry.config.name.clone(), description: entry.config.description.clone(), geometry };
        Ok((handle, info))
    }

    fn list(&self) -> Vec<(String, String)> {
        self.exports().values().map(|e| (e.config.name.clone(), e.config.description.clone())).collect()
    }
}

/// An NBD server (fixed newstyle, no TLS) for exports of one backend
/// type.
///
/// Serving starts at [`Server::bind`]; exports come and go with
/// [`Server::add_export`] and [`Server::remove_export`]. Dropping the
/// server stops it as [`Server::shutdown`] does, without waiting.
pub struct Server<B: BlockDevice> {
    shared: Arc<Shared<B>>,
    addrs: Vec<ListenAddr>,
}

impl<B: BlockDevice> fmt::Debug for Server<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addrs", &self.addrs).finish_non_exhaustive()
    }
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl<B: BlockDevice> Server<B> {
    /// Binds every listening socket and starts accepting connections (on
    /// the current tokio runtime). Fails, having bound nothing that stays
    /// bound, if any address cannot be used.
    pub async fn bind(config: ServerConfig) -> Result<Server<B>, ServerError> {
        config.check()?;
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for spec in &config.listen {
            match bind_one(spec).await {
                Ok((l, addr)) => {
                    listeners.push(l);
                    addrs.push(addr);
                }
                Err(e) => {
                    // Leave no socket file behind for the ones bound so far.
                    for l in listeners {
                        if let Listener::Unix(l, path) = l {
                            drop(l);
                            let _ = std::fs::remove_file(path);
                        }
                    }
                    return Err(e);
                }
            }
        }
        let limits = Limits {
            negotiation: NegotiationConfig { max_payload: config.max_payload, ..NegotiationConfig::default() },
            max_in_flight: config.max_in_flight,
            max_requests: config.max_requests,
            handshake_timeout: config.handshake_timeout,
        };
        let shared = Arc::new(Shared {
            exports: Mutex::new(BTreeMap::new()),
            limits,
            stop: watch::channel(false).0,
            connections: Tracker::default(),
            listeners: Tracker::default(),
        });
        for (l, addr) in listeners.into_iter().zip(&addrs) {
            info!(%addr, "NBD server listening");
            tokio::spawn(accept_loop(shared.clone(), l, shared.listeners.guard()));
        }
        Ok(Server { shared, addrs })
    }

    /// The addresses listened on, in the order of
    /// [`ServerConfig::listen`], with TCP ports resolved.
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// Adds an export; clients can pick it from their next option on.
    pub fn add_export(&self, config: ExportConfig, backend: Arc<B>) -> Result<(), ServerError> {
        let refuse = |why: &str| ServerError::Export { name: config.name.clone(), why: why.into() };
        if config.name.is_empty() {
            return Err(refuse("the name is empty (the empty name reaches the only export when there is one)"));
        }
        if config.name.len() > MAX_STRING_LEN || config.name.contains('\0') {
            return Err(refuse("names are at most 4096 bytes, without NUL"));
        }
        let mut exports = self.shared.exports();
        if exports.contains_key(&config.name) {
            return Err(refuse("an export of that name exists; remove it first"));
        }
        info!(export = config.name, read_only = config.read_only, "NBD export added");
        let entry = Entry { backend, config, removed: watch::channel(false).0, connections: Tracker::default() };
        exports.insert(entry.config.name.clone(), entry);
        Ok(())
    }

    /// Removes an export: new clients can no longer pick it, and its
    /// connections stop reading requests, finish those in flight, and
    /// close. Resolves when they are closed (then the backend is no
    /// longer used by this server). False if there was no such export.
    pub async fn remove_export(&self, name: &str) -> bool {
        let Some(entry) = self.shared.exports().remove(name) else {
            return false;
        };
        let live = entry.connections.live();
        info!(export = name, connections = live, "NBD export removed; closing its connections");
        entry.removed.send_replace(true);
        entry.connections.idle().await;
        true
    }

    /// Names of the exports.
    pub fn exports(&self) -> Vec<String> {
        self.shared.exports().keys().cloned().collect()
    }

    /// Clients that picked export `name` and are connected to it (0 for
    /// no such export): what removing it would disconnect.
    pub fn clients(&self, name: &str) -> usize {
        self.shared.exports().get(name).map_or(0, |e| e.connections.live())
    }

    /// Open client connections (handshaking or transmitting).
    pub fn connections(&self) -> usize {
        self.shared.connections.live()
    }

    /// Stops accepting (unix socket files are removed), lets in-flight
    /// requests finish and their replies go out, then closes every
    /// connection. Clients still negotiating get `NBD_REP_ERR_SHUTDOWN`.
    /// Resolves when all connections are closed; wrap it in a timeout if
    /// a device may hang (all paths down with an unbounded hold).
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        self.shared.listeners.idle().await;
        self.shared.connections.idle().await;
        info!("NBD server stopped");
    }
}

impl<B: BlockDevice> Drop for Server<B> {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

async fn bind_one(spec: &ListenSpec) -> Result<(Listener, ListenAddr), ServerError> {
    Ok(match spec {
        ListenSpec::Unix { path, mode, owner } => {
            (Listener::Unix(bind_unix(path, *mode, *owner)?, path.clone()), ListenAddr::Unix(path.clone()))
        }
        ListenSpec::Tcp(addr) => {
            let fail = |source| ServerError::Listen { addr: format!("tcp:{addr}"), source };
            let l = TcpListener::bind(addr).await.map_err(fail)?;
            let bound = l.local_addr().map_err(fail)?;
            (Listener::Tcp(l), ListenAddr::Tcp(bound))
        }
    })
}

/// Binds a unix socket with its permissions set before it listens, so no
/// client can connect through a moment of default permissions.
fn bind_unix(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<UnixListener, ServerError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let fail = |source| ServerError::Listen { addr: format!("unix:{}", path.display()), source };
    remove_stale_socket(path)?;
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
    sock.bind(&SockAddr::unix(path).map_err(fail)?).map_err(fail)?;
    let set_up = || -> io::Result<std::os::unix::net::UnixListener> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        sock.listen(1024)?;
        sock.set_nonblocking(true)?;
        Ok(sock.into())
    };
    let listener = set_up().and_then(UnixListener::from_std).map_err(|e| {
        let _ = std::fs::remove_file(path);
        fail(e)
    })?;
    Ok(listener)
}

/// Removes a socket file nobody answers on; refuses to touch a live
/// socket or anything that is not a socket.
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket { path: path.into() });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServerError::SocketInUse { path: path.into() }),
        Err(_) => {
            debug!(path = %path.display(), "removing a stale NBD socket");
            std::fs::remove_file(path)
                .map_err(|source| ServerError::Listen { addr: format!("unix:{}", path.display()), source })
        }
    }
}

async fn accept_loop<B: BlockDevice>(shared: Arc<Shared<B>>, listener: Listener, _guard: Guard) {
    let mut stop = shared.stop.subscribe();
    let mut backoff = AcceptBackoff::new("NBD");
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(conn) => {
                backoff.accepted();
                spawn_connection(&shared, conn);
            }
            // Out of file descriptors and the like: keep serving the
            // connections there are, try again after a pause.
            Err(e) => {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = backoff.failed(&e) => {}
                }
            }
        }
    }
    if let Listener::Unix(l, path) = listener {
        drop(l);
        let _ = std::fs::remove_file(&path);
    }
}

enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, SocketAddr),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    Ok(match listener {
        Listener::Unix(l, _) => Accepted::Unix(l.accept().await?.0),
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Replies are written whole; do not hold them back for more.
            s.set_nodelay(true)?;
            Accepted::Tcp(s, peer)
        }
    })
}

fn spawn_connection<B: BlockDevice>(shared: &Arc<Shared<B>>, conn: Accepted) {
    let guard = shared.connections.guard();
    let stop = shared.stop.subscribe();
    let shared = shared.clone();
    let limits = shared.limits;
    match conn {
        Accepted::Unix(s) => {
            let peer = match s.peer_cred() {
                Ok(c) => format!("unix pid {} uid {}", c.pid().unwrap_or(0), c.uid()),
                Err(_) => "unix".to_string(),
            };
            debug!(peer, "NBD client connected");
            tokio::spawn(async move {
                let _guard = guard;
                conn::serve(s, &peer, &*shared, limits, stop).await;
                debug!(peer, "NBD client gone");
            });
        }
        Accepted::Tcp(s, addr) => {
            let peer = addr.to_string();
            debug!(peer, "NBD client connected");
            tokio::spawn(async move {
                let _guard = guard;
                conn::serve(s, &peer, &*shared, limits, stop).await;
                debug!(peer, "NBD client gone");
            });
        }
    }
}
