//! The files a member keeps in its data directory, named in one place: the stores open them,
//! and the identity check (`identity.rs`) refuses a directory that holds any of them without
//! an incarnation.

/// The member's incarnation (64 random bits, drawn with a fresh directory).
pub const INCARNATION: &str = "incarnation";
/// The Raft log, vote and committed index (write-ahead log, `wal.rs`).
pub const RAFT_LOG: &str = "raft-log.wal";
/// The Raft log as versions before the write-ahead log kept it (imported once).
pub const LEGACY_RAFT_LOG: &str = "raft-log.redb";
/// The Raft state machine's snapshot.
pub const RAFT_SNAPSHOT: &str = "snapshot.json";
/// The primary–secondary change log, epoch and role (write-ahead log).
pub const PRIMARY_STORE: &str = "primary-secondary.wal";
/// The primary–secondary store as versions before the write-ahead log kept it.
pub const LEGACY_PRIMARY_STORE: &str = "primary-secondary.redb";
/// A quorum replica's registers (redb).
pub const QUORUM_STORE: &str = "quorum.redb";
/// A 2pc member's registers, prepared and decided transactions (redb).
pub const TWOPC_STORE: &str = "twopc.redb";

/// Files whose presence means the data directory already belongs to a member.
pub const MEMBER_DATA: [&str; 7] = [
    RAFT_LOG,
    LEGACY_RAFT_LOG,
    RAFT_SNAPSHOT,
    PRIMARY_STORE,
    LEGACY_PRIMARY_STORE,
    QUORUM_STORE,
    TWOPC_STORE,
];
