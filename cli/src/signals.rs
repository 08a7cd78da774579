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
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted (Ctrl-C)",
            _ = self.terminate.recv() => "SIGTERM received",
        }
    }
}
