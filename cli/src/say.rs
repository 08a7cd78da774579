//! `out!` and `out_raw!`: `println!` and `print!` for a command's
//! output (a report, a read, an outcome). A write that fails (stdout a
//! file on a full disk; a closed pipe ends the command by SIGPIPE instead)
//! is noted, not a panic (exit 101 after a transaction had committed):
//! `main` then says so and exits accordingly ([`stdout_failure`]).
//!
//! `say!`, `say_raw!` and `say_err!`: `println!`, `print!` and
//! `eprintln!` for long-running commands (`twopc local` and its
//! supervisor) and for errors. A line that cannot be written (stdout a
//! pipe whose reader left, e.g. `twopc local | head`, or a file on a full
//! disk) is dropped: `println!` would panic and take the whole cluster down
//! with the supervisor, and `eprintln!` turned a server's clear refusal to
//! start into a panic (exit 101) when its stderr was on a full disk.

/// The first failed write to stdout, if any.
static STDOUT_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Notes a failed write to stdout (the first one is kept).
pub fn note_stdout_failure(e: std::io::Error) {
    let _ = STDOUT_FAILURE.set(e.to_string());
}

/// Why the command's output could not be written, if it could not.
pub fn stdout_failure() -> Option<&'static str> {
    STDOUT_FAILURE.get().map(String::as_str)
}

macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::say::note_stdout_failure(e);
        }
    }};
}

macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::say::note_stdout_failure(e);
        }
    }};
}

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {out, out_raw, say, say_err, say_raw};
