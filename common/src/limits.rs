//! Every size and count bound that clients and servers share. Servers
//! enforce them on input; the client library checks them before sending.

use std::time::Duration;

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most reads + conditions + writes in one transaction.
pub const MAX_OPS_PER_TXN: usize = 10_000;
/// Most keys in one read request.
pub const MAX_KEYS_PER_READ: usize = 10_000;
/// Keys and values of one transaction together, at most (by
/// `TxnOps::approx_bytes`): half a frame, so a commit request, a prepare
/// and its WAL record always fit.
pub const MAX_TXN_BYTES: usize = 32 * 1024 * 1024;
/// Values one read may return together, at most; a bigger read is refused
/// with an error asking for fewer keys at once (half a frame, like
/// [`MAX_TXN_BYTES`]).
pub const MAX_READ_REPLY_BYTES: usize = 32 * 1024 * 1024;
/// Largest RPC frame on the wire; bigger frames close the connection.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Connections one server keeps open at once; more are closed as soon as
/// they are accepted. Also kept [`RESERVED_FILE_DESCRIPTORS`] below the
/// process's open-file limit, so a flood of connections cannot starve the
/// write-ahead log of file descriptors (which stops the server).
pub const MAX_CONNECTIONS: usize = 4_096;
/// File descriptors a server keeps back from incoming connections: the
/// WAL's files (RocksDB keeps at most 256 tables open), logs, and its own
/// connections to peers.
pub const RESERVED_FILE_DESCRIPTORS: usize = 512;
/// Requests one client connection may have in flight.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 4_096;
/// Requests one server channel (connection) may run concurrently.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 4_096;
/// A peer's connection is replaced after this many calls in a row ran
/// out of time on it with no answer in between.
pub const MAX_DEADLINE_MISSES_PER_CONNECTION: u32 = 3;
/// The longest deadline a server takes from a request (a longer one is
/// cut to it; twopc's own calls ask for 15 s at most). A request's
/// deadline is a duration the server adds to its clock: one of 2^64 s
/// overflowed it and panicked the server (trial 21A).
pub const MAX_REQUEST_DEADLINE: Duration = Duration::from_secs(300);
/// Deadline of ordinary RPCs (reads, prepare, commit, outcome).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a coordinator waits for a participant's answer to a read it
/// forwards: a participant answers within its 2 s wait for an in-doubt
/// writer (then fails naming it), so a participant silent for longer is
/// hung or paused, and is named in the error well before the client's
/// own [`RPC_TIMEOUT`] (which would blame the coordinator).
pub const READ_FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// A coordinator aborts a transaction begun this long ago with no commit
/// (and the client library does not commit its operations again under a
/// fresh id once its id is this old).
pub const OPEN_TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of an application's commit call (prepare + decision + reply).
pub const CLIENT_COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Prepares one `prepare_many` call may carry.
pub const MAX_PREPARE_BATCH: usize = 64;
/// Keys and values one `prepare_many` call carries at most, beyond its
/// first prepare (which may be as big as a transaction may be).
pub const MAX_PREPARE_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Transactions one `commit_many` call may carry.
pub const MAX_COMMIT_BATCH: usize = 256;
/// Transaction ids one `begin_many` call may mint.
pub const MAX_BEGIN_BATCH: u32 = 64;
/// How long a new connection's `hello` may take: a process that accepts
/// connections but does not answer (hung, or stopped with SIGSTOP) is
/// passed over this soon.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
