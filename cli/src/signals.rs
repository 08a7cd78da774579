//! The signals that stop a long-running command: SIGINT (Ctrl-C) and
//! SIGTERM (what `kill`, service managers and CI timeouts send). Every
//! command that starts servers listens to both, so that either one stops
//! them and removes their temporary files.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGINT and SIGTERM, listened to from creation on.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// Waits for either signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        self.recv_number().await.1
    }

    /// Waits for either signal; returns its number and name.
    async fn recv_number(&mut self) -> (libc::c_int, &'static str) {
        tokio::select! {
            _ = self.interrupt.recv() => (libc::SIGINT, "interrupted (Ctrl-C)"),
            _ = self.terminate.recv() => (libc::SIGTERM, "SIGTERM received"),
        }
    }
}

/// Runs a server until it ends or a stop signal comes. On a signal it says
/// so in the log (a server's log otherwise just ends), then dies of that
/// signal as it would have without a handler: nothing needs a graceful
/// stop, since everything acknowledged is already synced.
pub async fn serve_until_stopped<T>(server: impl std::future::Future<Output = T>) -> T {
    let mut signals = match StopSignals::new() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for stop signals; they will end the server without a line");
            return server.await;
        }
    };
    let (number, name) = tokio::select! {
        ended = server => return ended,
        stop = signals.recv_number() => stop,
    };
    tracing::info!(
        "{name}: stopping (what was acknowledged is durable; in-doubt transactions resume at the next start)"
    );
    // SAFETY: restoring a signal's default disposition and raising it have
    // no memory-safety preconditions.
    unsafe {
        libc::signal(number, libc::SIG_DFL);
        libc::raise(number);
    }
    unreachable!("{name}: the default disposition of this signal ends the process")
}
