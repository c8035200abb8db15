//! The NBD export (issue 4): the server's connection driver over real
//! sockets with an in-memory backend and a raw client (pipelining, out of
//! order replies, every refusal, flow control, disconnects, shutdown,
//! export removal), then a multipath device over tgtd exported on a unix
//! socket and TCP to real clients: nbdinfo, qemu-io, qemu-img, nbdcopy,
//! fio, misbehaving raw clients, and ext4 on a kernel block device through
//! nbdfuse and a loop device while a path fails.

use std::path::PathBuf;
use std::sync::Arc;

use mpio_nbd::{ExportConfig, ListenAddr, ListenSpec, Server, ServerConfig};

mod device;
mod driver;
mod kernel;

const MIB: u64 = 1 << 20;

/// A server on a unix socket in a fresh directory and on TCP port 0 of
/// 127.0.0.1.
struct Listening<B: mpio_mpath::BlockDevice> {
    server: Server<B>,
    dir: tempfile::TempDir,
}

impl<B: mpio_mpath::BlockDevice> Listening<B> {
    async fn start(config: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::Builder::new().prefix("mpio-nbd-test").tempdir().expect("temp dir");
        let mut cfg = ServerConfig::new(vec![
            ListenSpec::unix(dir.path().join("nbd.sock")),
            ListenSpec::Tcp("127.0.0.1:0".parse().unwrap()),
        ]);
        config(&mut cfg);
        let server = Server::bind(cfg).await.expect("server binds");
        Listening { server, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("nbd.sock")
    }

    fn tcp(&self) -> std::net::SocketAddr {
        match self.server.local_addrs()[1] {
            ListenAddr::Tcp(a) => a,
            ref other => panic!("not TCP: {other}"),
        }
    }

    fn add(&self, name: &str, backend: Arc<B>) {
        self.server.add_export(ExportConfig::new(name), backend).expect("export added");
    }
}
