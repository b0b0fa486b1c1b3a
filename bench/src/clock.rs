//! The load generator's one source of real time. It owns reading the monotonic clock and must
//! never be used by broker code: clippy.toml bans `Instant::now` for the broker (whose time comes
//! from `Net`), but a load generator has to measure real elapsed time, so it opts out here only.

use std::time::Instant;

/// Reads the monotonic clock; the only call site of `Instant::now` in the generator.
#[allow(clippy::disallowed_methods)] // a benchmark measures real time; see the module doc
pub fn now() -> Instant {
    Instant::now()
}

/// Nanoseconds from `epoch` to now, the unit stamped into payloads (fits u64 for 584 years).
pub fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(now().saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}
