//! caplab-node: one member of a replicated-register cluster (Raft through openraft,
//! primary–secondary async/sync, leaderless quorums, or two-phase commit; the modes implement
//! `engine.rs`), with a client API, an admin/peer API, durable storage and an in-process fault
//! layer.

pub mod api;
pub mod config;
pub mod data_files;
pub mod durable_file;
pub mod election;
pub mod election_clock;
pub mod engine;
pub mod faults;
pub mod identity;
pub mod member;
pub mod metrics;
pub mod network;
pub mod primary;
pub mod quorum;
pub mod raft_engine;
pub mod read_lease;
pub mod register;
pub mod server;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod trace;
pub mod twopc;
pub mod types;
pub mod wal;
