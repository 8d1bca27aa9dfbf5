//! Strata's control thread: the admin HTTP API (compatible with Infinity's cluster API), the
//! peer port's control requests, membership, heartbeats and timeouts. It runs on its own
//! thread with a single-threaded tokio runtime, and talks to the shards only through the
//! node handle: a shared serving mode and messages over the shards' channels.

pub mod archive;
mod cluster_init;
mod console;
pub mod controller;
mod debug;
mod events;
mod failover;
mod health;
mod http;
mod https;
mod jobs;
pub mod json;
mod metrics;
mod peer_server;
mod promotion;
mod removal;
mod roles;
mod series;
mod transfer;
mod wire;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use failover::Failover;
pub use roles::{ControlConfig, StorageStatus};
use strata_shard::NodeHandle;

/// The running control thread.
pub struct ControlHandle {
    pub thread: JoinHandle<()>,
    leave: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
}

impl ControlHandle {
    /// Leaves the cluster before the process stops: a follower or learner tells its leader it
    /// goes (as Infinity's nodes do on SIGTERM), so the leader lists it no more instead of
    /// timing it out. Waits at most `timeout`.
    pub fn leave(&self, timeout: Duration) {
        let (done, finished) = std::sync::mpsc::channel();
        if self.leave.send(done).is_ok() {
            let _ = finished.recv_timeout(timeout);
        }
    }
}

/// Acts on what the shards report: a partition that learned of a newer epoch makes the node
/// step down.
async fn watch_node_events(
    control: Arc<roles::Control>,
    events: flume::Receiver<strata_shard::NodeEvent>,
) {
    while let Ok(event) = events.recv_async().await {
        match event {
            strata_shard::NodeEvent::NewerEpoch { partition, epoch } => {
                tracing::warn!(
                    partition = partition.0,
                    epoch = epoch.0,
                    "a member has seen a newer epoch"
                );
                control.step_down_for(epoch).await;
            }
            strata_shard::NodeEvent::RecordInSync { partition, set } => {
                tokio::spawn(Arc::clone(&control).record_in_sync(partition, set));
            }
        }
    }
}

/// A client TLS configuration (for `ureq`) that trusts only `trusted`: `strata ctl` calling a
/// node's admin API over HTTPS, and a node calling its members' (`cluster init`).
#[must_use]
pub fn https_trusting(trusted: &[ureq::tls::Certificate<'static>]) -> ureq::tls::TlsConfig {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider)
        .root_certs(ureq::tls::RootCerts::new_with_certs(trusted))
        .build()
}

/// Starts the control thread serving the admin API on `http` and peers on `peer` (both bound
/// already, so that a taken port is reported before anything runs).
///
/// # Errors
///
/// When the thread or its runtime cannot start, or a listener cannot be handed to it.
pub fn start(
    config: ControlConfig,
    handle: NodeHandle,
    http: std::net::TcpListener,
    peer: std::net::TcpListener,
) -> std::io::Result<ControlHandle> {
    http.set_nonblocking(true)?;
    peer.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (leave, mut leave_orders) =
        tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Sender<()>>();
    let thread = std::thread::Builder::new().name("control".into()).spawn(move || {
        runtime.block_on(async move {
            let control = roles::Control::new(config, handle);
            let leaving = Arc::clone(&control);
            tokio::spawn(async move {
                while let Some(done) = leave_orders.recv().await {
                    leaving.leave_cluster().await;
                    let _ = done.send(());
                }
            });
            let (http, peer) = match (
                tokio::net::TcpListener::from_std(http),
                tokio::net::TcpListener::from_std(peer),
            ) {
                (Ok(http), Ok(peer)) => (http, peer),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::error!(%error, "control thread cannot use its listeners");
                    return;
                }
            };
            tokio::spawn(peer_server::serve(Arc::clone(&control), peer));
            tokio::spawn(console::sample_every_second(Arc::clone(&control)));
            control.resume_controller().await;
            if let Some(events) = control.handle.shared.take_events() {
                tokio::spawn(watch_node_events(Arc::clone(&control), events));
            }
            let served = match control.config.admin_tls.clone() {
                Some(tls) => match https::TlsListener::new(http, tls) {
                    Ok(listener) => axum::serve(listener, http::router(control)).await,
                    Err(error) => Err(error),
                },
                None => axum::serve(http, http::router(control)).await,
            };
            if let Err(error) = served {
                tracing::error!(%error, "admin HTTP server stopped");
            }
        });
    })?;
    Ok(ControlHandle { thread, leave })
}
