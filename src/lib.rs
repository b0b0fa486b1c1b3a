//! flockmq: a clustered MQTT 3.1.1 / 5.0 broker (map of the crate, filled in as modules land).
pub mod admin;
pub mod broker;
pub mod codec;
pub mod config;
pub mod net;
pub mod node;
