//! The observer's clock (this machine's, never skewed).

use std::time::{SystemTime, UNIX_EPOCH};

/// The observer's clock, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
