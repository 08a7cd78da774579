//! `say!` and `say_raw!`: `println!` and `print!` for long-running
//! commands (`twopc local` and its supervisor). A line that cannot be
//! written (stdout a pipe whose reader left, e.g. `twopc local | head`, or
//! a file on a full disk) is dropped: `println!` would panic and take the
//! whole cluster down with the supervisor.

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

pub(crate) use {say, say_raw};
