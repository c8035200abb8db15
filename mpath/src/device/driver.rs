//! The background driver: session events, claims, probes, fences and
//! the core's timers, each turned into a core input or an action.

use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use mpio_policies::PathId;
use mpio_transport::{ConnectionFailure, ConnectionSpec, SessionConfig, SessionEvent, SessionHandle};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use super::Inner;
use super::completion::{failure_cause, login_seed_event};
use crate::claim::{ClaimRefusal, claim};
use crate::core::Action;
use crate::event::DeviceEvent;
use crate::failure::{FenceFailed, ProbeFailed};

/// Messages from the helper tasks to the driver.
pub(super) enum Msg {
    Session(PathId, SessionEvent),
    /// A claim's outcome.
    Claimed {
        path: PathId,
        /// The login replaced an earlier session of the path.
        reinstated: bool,
        /// `Ok`: the path's portal group, if known.
        result: Result<Option<String>, ClaimRefusal>,
    },
    Probed(PathId, Result<(), ProbeFailed>),
    Fenced(PathId, u64, Result<(), FenceFailed>),
}

/// Forwards a path's session events (subscribed to before the session
/// started) to the driver.
pub(super) fn watch_session(id: PathId, mut sub: broadcast::Receiver<SessionEvent>, tx: mpsc::UnboundedSender<Msg>) {
    tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(ev) => {
                    if tx.send(Msg::Session(id, ev)).is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The background driver: session events, claims, probes, fences, timers.
pub(super) async fn drive(weak: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        // Run the core's actions and publish its events.
        let (actions, events, timeout) = {
            let mut core = inner.core.lock().unwrap_or_else(|e| e.into_inner());
            let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            let events: Vec<DeviceEvent> = std::iter::from_fn(|| core.poll_event()).collect();
            (actions, events, core.poll_timeout())
        };
        for a in actions {
            start_action(&inner, a);
        }
        if !events.is_empty() {
            let now_i = Instant::now();
            let now_s = SystemTime::now();
            for e in events {
                let path = e.path_name.as_deref().unwrap_or("-");
                info!(device = %inner.name, path, event = e.kind.name(), reason = %e.reason, "device event");
                let at = now_s.checked_sub(now_i.saturating_duration_since(e.at)).unwrap_or(now_s);
                let _ = inner.events.send((at, e));
            }
        }
        // Commands waiting on fences or paths re-check after every change,
        // once its events are out: a write that a fence held returns after
        // the fence's event, never before it.
        inner.changed.notify_waiters();
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let kick = inner.kick.notified();
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = sleep => None,
            _ = kick => None,
        };
        let now = Instant::now();
        match msg {
            Some(m) => handle_msg(&inner, now, m),
            None => {
                inner.core.lock().unwrap_or_else(|e| e.into_inner()).handle_timeout(now);
            }
        }
        drop(inner);
    }
}

pub(super) fn handle_msg(inner: &Arc<Inner>, now: Instant, msg: Msg) {
    let core = || inner.core();
    match msg {
        Msg::Session(id, SessionEvent::SessionUp { reinstated, .. }) => {
            // Claim before use: identity (and the bring-up hook) first.
            let inner = inner.clone();
            tokio::spawn(async move {
                let r = claim(&inner, id).await;
                let _ = inner.tx.send(Msg::Claimed { path: id, reinstated, result: r });
            });
        }
        Msg::Session(id, SessionEvent::SessionDown { reason, permanent }) => {
            core().session_down(now, id, failure_cause(&reason), permanent);
        }
        Msg::Session(
            id,
            SessionEvent::ConnectionDown {
                reason: reason @ (ConnectionFailure::Connect { .. } | ConnectionFailure::Login(_)),
                ..
            },
        ) => {
            core().login_failed(now, id, failure_cause(&reason), login_seed_event(&reason));
        }
        Msg::Session(..) => {}
        Msg::Claimed { path: id, reinstated, result: Ok(group) } => {
            let mut c = core();
            c.set_group(id, group);
            c.session_up(now, id, reinstated);
        }
        Msg::Claimed { path: id, result: Err(reason), .. } => {
            warn!(device = %inner.name, path = %inner.path_name(id), %reason, "path refused");
            core().refuse(now, id, reason.to_string());
            if let Some(p) = inner.path_io(id) {
                // A path to another LU must not keep a nexus open.
                let s = p.session.clone();
                tokio::spawn(async move {
                    let _ = s.logout().await;
                });
            }
        }
        Msg::Probed(id, r) => core().probe_done(now, id, r),
        Msg::Fenced(id, epoch, r) => core().fence_done(now, id, epoch, r),
    }
}

pub(super) fn start_action(inner: &Arc<Inner>, action: Action) {
    let tx = inner.tx.clone();
    match action {
        Action::Probe(id) => {
            let Some(p) = inner.path_io(id) else { return };
            let lu = p.lu.clone();
            tokio::spawn(async move {
                let r = lu.test_unit_ready().await.map_err(|e| ProbeFailed(e.to_string()));
                let _ = tx.send(Msg::Probed(id, r));
            });
        }
        Action::Fence { path, epoch, via } => {
            let Some(p) = inner.path_io(path) else { return };
            let portals: Vec<_> =
                via.iter().filter_map(|v| inner.path_io(*v)).map(|v| v.session_config.connections.clone()).collect();
            let cfg = p.session_config.clone();
            let name = inner.path_name(path);
            tokio::spawn(async move {
                let r = fence(cfg, portals).await;
                if let Err(e) = &r {
                    warn!(path = %name, error = %e, "fence through a healthy portal failed");
                }
                let _ = tx.send(Msg::Fenced(path, epoch, r));
            });
        }
    }
}

/// Reinstates the failed path's session (its ISID) through a healthy
/// portal of the same portal group: the target then terminates every
/// command of the old session (RFC 7143 section 6.3.5). Logs out at once.
pub(super) async fn fence(mut cfg: SessionConfig, portals: Vec<Vec<ConnectionSpec>>) -> Result<(), FenceFailed> {
    cfg.reconnect = false;
    let timeout = cfg.timeouts.login + cfg.timeouts.connect;
    let mut last = String::from("no portal");
    for conns in portals {
        cfg.connections = conns;
        match SessionHandle::connect(cfg.clone(), timeout).await {
            Ok(s) => {
                let _ = s.logout().await;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(FenceFailed(last))
}
