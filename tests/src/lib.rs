//! twopc-tests: the deterministic simulator and the model checker.

pub mod model;
pub mod sim;
