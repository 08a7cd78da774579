//! The signals that stop a long-running command: SIGINT (Ctrl-C), SIGTERM
//! (what `kill`, service managers and CI timeouts send) and SIGHUP (its
//! terminal closed). Every command that starts servers listens to all
//! three, so that any one stops them and removes their temporary files.

use tokio::signal::unix::{signal, Signal, SignalKind};
use twopc_common::node::Running;

/// SIGINT, SIGTERM and SIGHUP, listened to from creation on.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for any of them; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        self.recv_number().await.1
    }

    /// Waits for any of them; returns its number and name.
    async fn recv_number(&mut self) -> (libc::c_int, &'static str) {
        tokio::select! {
            _ = self.interrupt.recv() => (libc::SIGINT, "interrupted (Ctrl-C)"),
            _ = self.terminate.recv() => (libc::SIGTERM, "SIGTERM received"),
            _ = self.hangup.recv() => (libc::SIGHUP, "SIGHUP received (terminal closed?)"),
        }
    }
}

/// Runs a server until it stops (returns why: a fatal error) or a stop
/// signal comes. On a signal it says so in the log (a server's log
/// otherwise just ends), lets what is in progress finish (a coordinator's
/// commits, briefly), syncs its log and rewrites the synced mark (so a
/// write-ahead file cut short while it is stopped is caught at the next
/// start), then dies of that signal as it would have without a handler:
/// everything acknowledged is already synced.
pub async fn serve_until_stopped<E: std::fmt::Display>(running: Running<E>) -> String {
    let (stopped, drain, at_stop) = running.into_stop_parts();
    let why = |ended: Result<E, tokio::task::JoinError>| ended.map_or_else(|e| e.to_string(), |e| e.to_string());
    let mut signals = match StopSignals::new() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for stop signals; they will end the server without a line");
            return why(stopped.await);
        }
    };
    let (number, name) = tokio::select! {
        ended = stopped => return why(ended),
        stop = signals.recv_number() => stop,
    };
    tracing::info!(
        "{name}: stopping (what was acknowledged is durable; in-doubt transactions resume at the next start)"
    );
    if let Some(drain) = drain {
        drain().await;
    }
    at_stop();
    // SAFETY: restoring a signal's default disposition and raising it have
    // no memory-safety preconditions.
    unsafe {
        libc::signal(number, libc::SIG_DFL);
        libc::raise(number);
    }
    unreachable!("{name}: the default disposition of this signal ends the process")
}
