//! flockmq-sim: the deterministic cluster simulator (DESIGN §4).
//!
//! # Map of the crate
//!
//! - [`scenario`]: `scenarios/*.toml` as validated data (cluster, workloads, faults, swarm,
//!   expectations); unknown keys are errors naming the file and the key.
//! - [`fault`]: the scenario's faults and the seed's swarm faults as a time-ordered list of
//!   primitive actions.
//! - [`client`]: simulated MQTT clients (publishers, subscribers) on flockmq's codec over turmoil
//!   TCP, recording everything they see.
//! - [`history`]: the recorded events and the FNV-1a trace hash.
//! - [`harness`]: builds and steps the turmoil simulation, applies faults at exact simulated
//!   times, samples nodes through `NodeHandle`.
//! - [`check`]: the checkers that read the history (safety and liveness) and the run summary.
//!
//! One seed reproduces a run bit for bit: `cargo run -p flockmq-sim -- run FILE --seed N`.

pub mod check;
pub mod client;
pub mod fault;
pub mod harness;
pub mod history;
pub mod scenario;

pub use check::{Outcome, run};
