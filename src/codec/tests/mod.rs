//! Codec tests: property-based round trips and robustness, exact wire forms, malformed input.

mod interop;
mod malformed;
mod roundtrip;
mod strategies;
mod wire_format;
