//! Child processes that die with this process, however it ends.
//!
//! Dropping a [`crate::cluster::Cluster`] or a PostgreSQL shard stops its
//! processes, but nothing is dropped when this process is SIGKILLed (or
//! aborts): its servers would be re-parented to PID 1 and keep running,
//! holding their ports and data directories. So every child is spawned
//! with `PR_SET_PDEATHSIG`, as `twopc local`'s supervisor does.
//!
//! Linux delivers that signal when the *thread* that forked the child
//! exits, not the process. The callers spawn from anywhere, tokio's
//! blocking pool included, whose threads exit after idling for 10 s: a
//! child forked there would be killed mid-run. So every fork happens on
//! one dedicated thread ([`spawn_tied`] hands it the command) that never
//! exits while the process lives.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A command to fork, and where to send the result.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// How often [`TiedChild::wait`] looks whether the child has exited.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// The spawning thread's queue. The thread lives as long as the process:
/// its receiver ends only when this sender is dropped, which never happens.
fn spawner() -> io::Result<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    if let Some(tx) = SPAWNER.get() {
        return Ok(tx);
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    let started = std::thread::Builder::new().name("child-spawner".into()).spawn(move || {
        for (mut cmd, reply) in rx {
            let _ = reply.send(cmd.spawn());
        }
    });
    match started {
        // Two first callers at once: the loser's thread sees its sender
        // dropped and ends; everyone uses the winner's.
        Ok(_) => Ok(SPAWNER.get_or_init(|| tx)),
        Err(e) => Err(e),
    }
}

/// Spawns `cmd` so that it receives `signal` when this process dies (see
/// the module docs). The child also gets `signal` at once if this process
/// died while it was being forked.
pub fn spawn_tied(mut cmd: Command, signal: libc::c_int) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), getppid(2) and raise(3), which are async-signal-safe. It
    // runs after the command's uid/gid changes (if any), which would
    // otherwise clear the death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the death signal was armed.
            if libc::getppid() != parent {
                libc::raise(signal);
                return Err(io::Error::other("the parent process is gone"));
            }
            Ok(())
        });
    }
    let (reply, result) = mpsc::channel();
    spawner()?.send((cmd, reply)).map_err(|_| io::Error::other("the child-spawner thread is gone"))?;
    result.recv().map_err(|_| io::Error::other("the child-spawner thread is gone"))?
}

/// A child that is SIGKILLed and reaped when dropped (e.g. when the
/// future waiting for it is cancelled), and dies with this process.
pub struct TiedChild {
    child: Option<Child>,
}

impl TiedChild {
    /// Spawns `cmd` with [`spawn_tied`], `signal` at this process's death.
    pub fn spawn(cmd: Command, signal: libc::c_int) -> io::Result<TiedChild> {
        Ok(TiedChild { child: Some(spawn_tied(cmd, signal)?) })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited (reaped: later calls say the same).
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// Waits (without blocking the runtime) until it exits, or `timeout`
    /// passes (`Ok(None)`; it keeps running).
    pub async fn wait(&mut self, timeout: Duration) -> io::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Sends `signal`, waits up to `grace` for it to exit, then SIGKILLs
    /// and reaps it. Blocks the calling thread (for drops).
    pub fn stop(&mut self, signal: libc::c_int, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the child
            // is not reaped yet, so its pid is still its own.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(WAIT_POLL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TiedChild {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child spawned from a short-lived thread outlives that thread:
    /// the fork happened on the long-lived spawner thread.
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            spawn_tied(cmd, libc::SIGKILL).unwrap()
        })
        .join()
        .unwrap();
        let mut child = TiedChild { child: Some(child) };
        std::thread::sleep(Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "the child died with the thread that asked for it");
        let pid = child.id();
        drop(child);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "a dropped child keeps running");
    }
}
