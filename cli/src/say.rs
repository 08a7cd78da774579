//! `say!`, `say_raw!` and `say_err!`: `println!`, `print!` and
//! `eprintln!` for long-running commands (`twopc local` and its
//! supervisor) and for errors. A line that cannot be written (stdout a
//! pipe whose reader left, e.g. `twopc local | head`, or a file on a full
//! disk) is dropped: `println!` would panic and take the whole cluster down
//! with the supervisor, and `eprintln!` turned a server's clear refusal to
//! start into a panic (exit 101) when its stderr was on a full disk.

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

pub(crate) use {say, say_err, say_raw};
