//! A server's file descriptors: the open-file limit is raised to its hard
//! limit at start, and incoming connections get only what the write-ahead
//! log does not need (a log that cannot open a file stops the server).

use crate::limits::{MAX_CONNECTIONS, RESERVED_FILE_DESCRIPTORS};

/// A server accepts at least this many connections, however low the
/// open-file limit.
pub const MIN_CONNECTIONS: usize = 64;

/// Raises the soft open-file limit to the hard one; returns the soft limit
/// in force afterwards (`None` if it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given. It fails
        // (keeping the old limit) when the hard limit is above the kernel's.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(limit.rlim_cur)
}

/// How many connections a server with `open_files` descriptors may keep:
/// [`MAX_CONNECTIONS`], less if the limit leaves less room beside
/// [`RESERVED_FILE_DESCRIPTORS`], never under [`MIN_CONNECTIONS`].
pub fn connection_limit(open_files: Option<u64>) -> usize {
    let room = open_files
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX).saturating_sub(RESERVED_FILE_DESCRIPTORS));
    MAX_CONNECTIONS.min(room).max(MIN_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_the_log() {
        assert_eq!(connection_limit(Some(1024)), 1024 - RESERVED_FILE_DESCRIPTORS);
        assert_eq!(connection_limit(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(100)), MIN_CONNECTIONS);
        assert_eq!(connection_limit(None), MAX_CONNECTIONS);
    }

    #[test]
    fn the_raised_limit_is_the_hard_limit_or_the_old_one() {
        let now = raise_open_file_limit().expect("readable");
        assert!(now >= 64, "{now}");
        assert_eq!(raise_open_file_limit(), Some(now), "raising twice changes nothing");
    }
}
