//! What every long-running subcommand does the same way: logging, the
//! Kubernetes client, the metrics server, listening, and waiting for
//! SIGTERM.

use std::{net::SocketAddr, sync::Arc};

use super::CliError;
use crate::{metrics, telemetry};

/// Starts logging (once per process).
pub fn init_logging(json: bool) {
    telemetry::init(json);
}

/// The Kubernetes client from the in-cluster service account or the
/// kubeconfig.
pub async fn kube_client(hint: &str) -> Result<kube::Client, CliError> {
    kube::Client::try_default().await.map_err(|e| {
        CliError::CannotStart(format!(
            "no Kubernetes configuration (in-cluster or kubeconfig): {e}{hint}"
        ))
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` in the background; a failure
/// is logged and does not stop the command.
pub fn spawn_metrics<E: metrics::Exposition>(addr: SocketAddr, metrics: Arc<E>) {
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(addr, metrics).await {
            tracing::error!(error = %e, %addr, "metrics server failed");
        }
    });
}

/// Binds a listening socket.
pub async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::CannotStart(format!("cannot listen on {addr}: {e}")))
}

/// Keeps glibc from holding on to memory a large config load freed. Its
/// default raises the size above which allocations get their own mapping
/// each time such a block is freed, so the next load's tens of megabytes
/// come from the heap and stay there as fragments: the broker with 10,000
/// providers and policies sat at 71 MiB resident instead of 51 (measured
/// with `bench/policies.sh`'s config). A fixed threshold returns big blocks to the
/// system when they are freed.
///
/// The controller also keeps one heap for all its threads (`one_arena`;
/// called before any thread starts). glibc gives each new thread a heap of
/// its own, and what the controller keeps (watch caches, programmed
/// entries) was spread over them between what it builds and frees each
/// pass: freed room in one heap did not serve the next pass's allocations
/// made from another (`bench/controller-memory.sh`, 10,000 providers and
/// policies: 124 MiB resident, 107 with one heap). The controller is not
/// allocation-bound, so one heap's lock costs nothing it would notice; the
/// broker, which is, keeps glibc's default.
pub fn tune_allocator(one_arena: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters (under the
    // allocator's own lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        if one_arena {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = one_arena;
}

/// Resolves on SIGTERM or Ctrl-C: servers stop accepting and finish the
/// requests in flight.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
