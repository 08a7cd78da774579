//! twopc-tests: the deterministic simulator and the model checker.

pub mod sim;
