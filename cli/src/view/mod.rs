//! What `caplab status` prints: pure functions from what was read to text.

pub mod cluster;
pub mod grid;
pub mod members;
