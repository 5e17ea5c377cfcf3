//! caplab-api: the HTTP API of a caplab member, in one place.
//!
//! - [`paths`]: the ports (8080 client, 7000 peer/admin) and every route path;
//! - [`kv`]: register operations (read, write, compare-and-set) and their bodies;
//! - [`status`]: `GET /v1/status` ([`status::Status`]);
//! - [`trace`]: `GET /v1/trace`, the member's record of recent peer messages;
//! - [`tail`]: `GET /v1/log`, the last few entries of a member's log;
//! - [`faults`]: the fault set a member takes at `PUT /v1/admin/faults`, with its validation;
//! - [`admin`]: the admin bodies (init, learners, voters, primary, peers, transfer, promote);
//! - [`identity`]: incarnations, address-book entries and the `x-caplab-*` headers;
//! - [`error`]: the JSON error body and the outcome contract (what a status code says about
//!   whether an operation took effect);
//! - [`client`]: [`client::MemberClient`], a typed async client whose errors encode that
//!   contract.
//!
//! The member (`caplab-node`) serves these types; the operator, the CLI, the test harness and
//! the benchmark talk to members only through them. Serialisation is the wire format: field
//! names are camelCase, and changing a type here changes what every member sends.

pub mod admin;
pub mod client;
pub mod error;
pub mod faults;
pub mod identity;
pub mod kv;
pub mod paths;
pub mod status;
pub mod tail;
pub mod trace;
pub mod transport;

/// A member id: a positive integer, never reused for a member whose data was lost (`0` is the
/// sender id of tools and the operator, never a member's).
pub type NodeId = u64;

pub use client::{MemberClient, MemberError};
