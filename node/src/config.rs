//! Command-line flags of `caplab-node`; each can also be set through an environment variable.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use thiserror::Error;

use crate::election::ElectionTiming;
use crate::primary::Mode;
use crate::quorum::QuorumSettings;
use crate::twopc::TwoPcSettings;

/// The longest default read lease in milliseconds (`--read-lease-ms`).
const DEFAULT_READ_LEASE_MS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Replication {
    Raft,
    Async,
    Sync,
    /// Leaderless: every member coordinates, writes wait for W replicas, reads ask R.
    Quorum,
    /// Two-phase commit: the member given `init` coordinates; every member votes on every write.
    #[value(name = "2pc")]
    TwoPc,
}

impl Replication {
    /// The `--replication` value naming this mode (clap's, so it cannot drift from the flag).
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "caplab-node",
    version,
    about = "One member of a caplab replicated-register cluster"
)]
pub struct Config {
    /// This member's id (positive; never reused for a member whose data was lost).
    #[arg(long, env = "CAPLAB_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The cluster this member belongs to (the operator sets `<namespace>/<name>/<uid>`). Peer
    /// messages naming another cluster are refused with 421; unset, any cluster id is accepted.
    #[arg(long, env = "CAPLAB_CLUSTER_ID", value_parser = parse_cluster_id)]
    pub cluster_id: Option<String>,
    /// Address of the client API.
    #[arg(long, env = "CAPLAB_CLIENT_LISTEN", default_value = "0.0.0.0:8080")]
    pub client_listen: SocketAddr,
    /// Address of the peer API (Raft RPCs and the admin API).
    #[arg(long, env = "CAPLAB_PEER_LISTEN", default_value = "0.0.0.0:7000")]
    pub peer_listen: SocketAddr,
    /// Where the log, vote and snapshots are kept.
    #[arg(long, env = "CAPLAB_DATA_DIR", default_value = "/data")]
    pub data_dir: PathBuf,
    /// Replication protocol.
    #[arg(long, env = "CAPLAB_REPLICATION", value_enum, default_value_t = Replication::Raft)]
    pub replication: Replication,
    /// File holding the bearer token of the admin and peer APIs (else CAPLAB_ADMIN_TOKEN).
    #[arg(long, env = "CAPLAB_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Minimum election timeout in milliseconds: a voter that has not heard from a leader for
    /// a random 1 to 2 times this asks the others whether they would vote for it (pre-vote),
    /// and campaigns if a majority would; a leader that no quorum acknowledged for twice this
    /// steps aside. The default keeps failover well under a second.
    #[arg(long, env = "CAPLAB_ELECTION_TIMEOUT_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval in milliseconds (must be below the election timeout). openraft
    /// 0.9 also uses it as the deadline of each replication RPC, so an injected delay at or above
    /// it stops replication altogether.
    #[arg(long, env = "CAPLAB_HEARTBEAT_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=30_000))]
    pub heartbeat_ms: u64,
    /// Raft: how long in milliseconds after the start of a successful leadership-confirmation
    /// round the leader answers linearizable reads from its own state, without another round
    /// (a read lease, Raft thesis §6.4.1; see `read_lease.rs`). Default: half the election
    /// timeout, at most 100. Must be below the election timeout of every voter (they refuse
    /// other candidates for that long after hearing from the leader), so run every voter with
    /// the same timing, as the operator does; 0 confirms every read with a round. Raft only:
    /// refused with another `--replication`.
    #[arg(long, env = "CAPLAB_READ_LEASE_MS",
          value_parser = clap::value_parser!(u64).range(0..=30_000))]
    pub read_lease_ms: Option<u64>,
    /// Deadline of every client request in milliseconds.
    #[arg(long, env = "CAPLAB_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_timeout_ms: u64,
    /// Build a snapshot (and compact the log) after this many new writes: Raft log entries or
    /// the writes they carry (an entry holds a batch), or primary–secondary log entries that
    /// every member has.
    #[arg(long, env = "CAPLAB_SNAPSHOT_LOGS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_logs: u64,
    /// Quorum mode: R, the replicas a read waits for (this member included); default a
    /// majority of the members. At most the number of members (checked at init).
    #[arg(long, env = "CAPLAB_READ_QUORUM", value_parser = clap::value_parser!(u64).range(1..=9))]
    pub read_quorum: Option<u64>,
    /// Quorum mode: W, the durable acknowledgements a write waits for (this member's
    /// included); default a majority of the members.
    #[arg(long, env = "CAPLAB_WRITE_QUORUM", value_parser = clap::value_parser!(u64).range(1..=9))]
    pub write_quorum: Option<u64>,
    /// 2pc mode, for tests only: milliseconds the coordinator waits between collecting the
    /// votes and logging its decision — the window in which killing it leaves the participants
    /// in doubt. 0 (default): no wait.
    #[arg(long, env = "CAPLAB_TWOPC_DECISION_DELAY_MS", default_value_t = 0, hide = true,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub twopc_decision_delay_ms: u64,
    /// Log output format.
    #[arg(long, env = "CAPLAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no admin token: set --admin-token-file or CAPLAB_ADMIN_TOKEN")]
    NoToken,
    #[error("cannot read the admin token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the heartbeat interval ({heartbeat} ms) must be below the election timeout ({election} ms)")]
    Timing { heartbeat: u64, election: u64 },
    #[error("the read lease ({lease} ms) must be below the election timeout ({election} ms); lower --read-lease-ms (0 turns leases off)")]
    ReadLease { lease: u64, election: u64 },
    #[error("invalid Raft configuration: {0}")]
    Raft(String),
    #[error(
        "--read-quorum and --write-quorum are for --replication quorum; drop them or use quorum"
    )]
    QuorumFlags,
    #[error(
        "--read-lease-ms (CAPLAB_READ_LEASE_MS) applies only to --replication raft, not {0}: \
         drop the flag and unset CAPLAB_READ_LEASE_MS, or use raft"
    )]
    ReadLeaseWithoutRaft(String),
    #[error(
        "the data directory {dir} is not writable by this member ({user}{owner}): {cause}; \
         give it a volume that user may write (fsGroup, where the volume type honours it, or \
         a StorageClass whose provisioner creates writable directories), or point \
         --data-dir / CAPLAB_DATA_DIR at a writable directory"
    )]
    DataDir {
        dir: PathBuf,
        /// `uid 65532`, or `this user` where /proc cannot say.
        user: String,
        /// `; the directory is owned by uid 0, mode 0750`, when it exists.
        owner: String,
        /// (not a `source`: the message already says it, once)
        cause: std::io::Error,
    },
}

/// The settings of the replication protocol a member runs, every flag checked (see
/// [`Config::replication_settings`]).
#[derive(Debug, Clone)]
pub enum ReplicationSettings {
    /// `raft`: openraft's configuration (validated by openraft) and the election timing
    /// (heartbeat below the election timeout, read lease below it too).
    Raft {
        raft: openraft::Config,
        timing: ElectionTiming,
    },
    /// `async` or `sync` primary–secondary replication.
    Primary(Mode),
    Quorum(QuorumSettings),
    TwoPc(TwoPcSettings),
}

/// The file written and removed at start-up to prove the data directory is writable.
const WRITE_PROBE: &str = ".caplab-write-check";

/// Bytes of snapshot data per `/raft/snapshot` message (256 KiB; about 1 MiB of JSON).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 256 * 1024;

impl Config {
    pub fn admin_token(&self) -> Result<String, ConfigError> {
        let token = match &self.admin_token_file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?
            }
            None => std::env::var("CAPLAB_ADMIN_TOKEN").unwrap_or_default(),
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(ConfigError::NoToken);
        }
        Ok(token)
    }

    /// The settings of `--replication`, computed once and checked together so that a member
    /// refuses a bad flag combination before it touches its data directory: flags of another
    /// mode ([`ConfigError::QuorumFlags`], [`ConfigError::ReadLeaseWithoutRaft`]) and Raft timing that does not hold together
    /// ([`ConfigError::Timing`], [`ConfigError::ReadLease`], [`ConfigError::Raft`]).
    pub fn replication_settings(&self) -> Result<ReplicationSettings, ConfigError> {
        let quorum = self.quorum_settings()?;
        // Only the read lease is Raft's alone: the heartbeat paces primary–secondary
        // replication too, and the operator passes its pods the election timeout and the
        // heartbeat whatever their mode.
        if self.replication != Replication::Raft && self.read_lease_ms.is_some() {
            return Err(ConfigError::ReadLeaseWithoutRaft(self.replication.name()));
        }
        Ok(match self.replication {
            Replication::Raft => ReplicationSettings::Raft {
                raft: self.raft_config()?,
                timing: self.election_timing()?,
            },
            Replication::Async => ReplicationSettings::Primary(Mode::Async),
            Replication::Sync => ReplicationSettings::Primary(Mode::Sync),
            Replication::Quorum => ReplicationSettings::Quorum(quorum),
            Replication::TwoPc => ReplicationSettings::TwoPc(self.twopc_settings()),
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// Election timing; the lease is openraft's maximum election timeout (see
    /// [`Config::raft_config`]). Refuses a read lease that is not below the election timeout.
    fn election_timing(&self) -> Result<ElectionTiming, ConfigError> {
        Ok(ElectionTiming {
            timeout: Duration::from_millis(self.election_timeout_ms),
            lease: Duration::from_millis(self.election_timeout_ms + 1),
            heartbeat: self.heartbeat(),
            read_lease: self.read_lease()?,
        })
    }

    /// The Raft leader's read lease (zero: off); refused unless below the election timeout,
    /// the shortest time voters refuse other candidates after hearing from the leader.
    fn read_lease(&self) -> Result<Duration, ConfigError> {
        let election = self.election_timeout_ms;
        let lease = self
            .read_lease_ms
            .unwrap_or((election / 2).min(DEFAULT_READ_LEASE_MS));
        if lease >= election {
            return Err(ConfigError::ReadLease { lease, election });
        }
        Ok(Duration::from_millis(lease))
    }

    /// R and W of quorum mode; refused with another mode.
    fn quorum_settings(&self) -> Result<QuorumSettings, ConfigError> {
        let given = self.read_quorum.is_some() || self.write_quorum.is_some();
        if given && self.replication != Replication::Quorum {
            return Err(ConfigError::QuorumFlags);
        }
        Ok(QuorumSettings {
            read: self.read_quorum.map(|r| r as usize),
            write: self.write_quorum.map(|w| w as usize),
        })
    }

    /// 2pc timing: votes are awaited for half the request deadline, leaving the other half
    /// for the decision to reach every participant.
    fn twopc_settings(&self) -> TwoPcSettings {
        TwoPcSettings {
            vote_timeout: self.request_timeout() / 2,
            decision_delay: Duration::from_millis(self.twopc_decision_delay_ms),
        }
    }

    /// Creates the data directory if needed and proves this process can write in it, so a
    /// volume the member cannot write (e.g. a root-owned 0750 hostPath directory: hostPath
    /// ignores fsGroup) stops the member at once with [`ConfigError::DataDir`], which says
    /// what to fix, instead of failing later in whichever store opens first.
    pub fn check_data_dir(&self) -> Result<(), ConfigError> {
        let dir = &self.data_dir;
        let probe = dir.join(WRITE_PROBE);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&probe, b"ok"))
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|cause| ConfigError::DataDir {
                dir: dir.clone(),
                user: process_user(),
                owner: owner_of(dir),
                cause,
            })
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        if self.heartbeat_ms >= self.election_timeout_ms {
            return Err(ConfigError::Timing {
                heartbeat: self.heartbeat_ms,
                election: self.election_timeout_ms,
            });
        }
        openraft::Config {
            cluster_name: "caplab".into(),
            // Elections are driven by `election/` (pre-vote first), not openraft's timer.
            // openraft's maximum election timeout remains its leader lease (voters refuse
            // other candidates for that long after hearing from a leader): just above the
            // minimum, as pre-votes are refused for as long.
            enable_elect: false,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms + 1,
            heartbeat_interval: self.heartbeat_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            // Entries kept behind a snapshot for followers just behind it (each may hold a
            // batch of up to 1,024 writes).
            max_in_snapshot_log_to_keep: 100,
            // A snapshot travels to a new or far-behind member in chunks, each a JSON body
            // (bytes as numbers: ~3.7x their size). openraft's 3 MiB default made chunks of
            // states over ~40,000 keys larger than the peer port accepts, and such a member
            // never caught up.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConfigError::Raft(e.to_string()))
    }
}

/// `uid N` of this process (the owner of `/proc/self`), or `this user`.
fn process_user() -> String {
    std::fs::metadata("/proc/self")
        .map_or_else(|_| "this user".into(), |m| format!("uid {}", m.uid()))
}

/// `; the directory is owned by uid N, mode 0NNN` for an existing `dir`, else nothing.
fn owner_of(dir: &Path) -> String {
    std::fs::metadata(dir).map_or_else(
        |_| String::new(),
        |m| {
            let mode = m.permissions().mode() & 0o7777;
            format!(
                "; the directory is owned by uid {}, mode {mode:04o}",
                m.uid()
            )
        },
    )
}

/// A cluster id travels in an HTTP header, which carries visible ASCII only (and trims
/// spaces): anything else would make a cluster whose members refuse each other.
fn parse_cluster_id(raw: &str) -> Result<String, String> {
    let visible = raw.bytes().all(|b| b.is_ascii_graphic());
    if raw.is_empty() || raw.len() > 253 || !visible {
        return Err(format!(
            "{raw:?} is not a cluster id: use 1-253 visible ASCII characters, no spaces \
             (e.g. <namespace>/<name>/<uid>), or leave it unset"
        ));
    }
    Ok(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("caplab-node").chain(args.iter().copied()))
    }

    /// The replication settings of member 1 started with `args`.
    fn settings(args: &[&str]) -> Result<ReplicationSettings, ConfigError> {
        let mut all = vec!["--id", "1"];
        all.extend_from_slice(args);
        parse(&all).unwrap().replication_settings()
    }

    #[test]
    fn defaults_and_validation() {
        let c = parse(&["--id", "1"]).unwrap();
        assert_eq!(c.client_listen.port(), 8080);
        assert_eq!(c.peer_listen.port(), 7000);
        assert!(c.raft_config().is_ok());
        assert_eq!(
            c.election_timing().map(|t| t.read_lease).ok(),
            Some(Duration::from_millis(100))
        );
        // A short election timeout gets a lease of half of it by default.
        let quick = parse(&[
            "--id",
            "1",
            "--election-timeout-ms",
            "60",
            "--heartbeat-ms",
            "20",
        ]);
        assert_eq!(
            quick
                .ok()
                .and_then(|c| c.election_timing().ok())
                .map(|t| t.read_lease),
            Some(Duration::from_millis(30))
        );
        assert!(parse(&["--id", "0"]).is_err());
        assert!(parse(&["--id", "x"]).is_err());
        let bad = parse(&[
            "--id",
            "1",
            "--heartbeat-ms",
            "600",
            "--election-timeout-ms",
            "500",
        ])
        .unwrap();
        assert!(matches!(bad.raft_config(), Err(ConfigError::Timing { .. })));
        let long_lease = parse(&[
            "--id",
            "1",
            "--election-timeout-ms",
            "200",
            "--read-lease-ms",
            "200",
        ])
        .unwrap();
        assert!(matches!(
            long_lease.election_timing(),
            Err(ConfigError::ReadLease { .. })
        ));
    }

    #[test]
    fn replication_settings_carry_each_modes_validated_values() {
        let raft = settings(&["--election-timeout-ms", "300", "--heartbeat-ms", "50"]);
        let Ok(ReplicationSettings::Raft { raft, timing }) = raft else {
            panic!("not Raft settings: {raft:?}");
        };
        assert_eq!(
            (raft.election_timeout_min, raft.heartbeat_interval),
            (300, 50)
        );
        assert_eq!(timing.timeout, Duration::from_millis(300));
        assert_eq!(timing.read_lease, Duration::from_millis(100));
        assert!(matches!(
            settings(&["--replication", "sync"]),
            Ok(ReplicationSettings::Primary(Mode::Sync))
        ));
        assert!(matches!(
            settings(&["--replication", "quorum", "--write-quorum", "2"]),
            Ok(ReplicationSettings::Quorum(QuorumSettings {
                read: None,
                write: Some(2)
            }))
        ));
        assert!(matches!(
            settings(&["--replication", "2pc"]),
            Ok(ReplicationSettings::TwoPc(_))
        ));
        assert!(matches!(
            settings(&["--heartbeat-ms", "200"]),
            Err(ConfigError::Timing { .. })
        ));
        assert!(matches!(
            settings(&["--read-quorum", "1"]),
            Err(ConfigError::QuorumFlags)
        ));
    }

    #[test]
    fn the_read_lease_is_refused_outside_raft_and_election_timing_is_not() {
        for mode in ["async", "sync", "quorum", "2pc"] {
            let refused = settings(&["--replication", mode, "--read-lease-ms", "0"]);
            let message = refused.map(|_| ()).unwrap_err().to_string();
            assert!(
                message.contains(&format!("only to --replication raft, not {mode}")),
                "{message}"
            );
            // The operator sets these for every mode (and the heartbeat paces primaries).
            let timing = ["--election-timeout-ms", "1000", "--heartbeat-ms", "300"];
            let accepted = settings(&[&["--replication", mode][..], &timing[..]].concat());
            assert!(accepted.is_ok(), "{mode}: {accepted:?}");
        }
        assert!(settings(&["--read-lease-ms", "0"]).is_ok());
    }

    #[test]
    fn quorum_sizes_only_with_quorum_replication() {
        let q = parse(&["--id", "1", "--replication", "quorum", "--read-quorum", "1"]).unwrap();
        let settings = q.quorum_settings().unwrap();
        assert_eq!((settings.read, settings.write), (Some(1), None));
        let raft = parse(&["--id", "1", "--write-quorum", "2"]).unwrap();
        assert!(matches!(
            raft.quorum_settings(),
            Err(ConfigError::QuorumFlags)
        ));
        assert!(parse(&["--id", "1", "--replication", "quorum", "--read-quorum", "0"]).is_err());
    }

    #[test]
    fn a_data_directory_that_cannot_be_written_is_refused_with_what_to_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let config = parse(&["--id", "1", "--data-dir", dir.to_str().unwrap()]).unwrap();
        config.check_data_dir().unwrap();
        assert!(dir.is_dir() && !dir.join(WRITE_PROBE).exists());
        // A regular file where the directory should be fails for root too (unlike a mode).
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let config = parse(&["--id", "1", "--data-dir", file.to_str().unwrap()]).unwrap();
        let message = config.check_data_dir().unwrap_err().to_string();
        assert!(
            message.contains("is not writable by this member (uid "),
            "{message}"
        );
        assert!(
            message.contains("the directory is owned by uid"),
            "{message}"
        );
        assert!(message.contains("CAPLAB_DATA_DIR"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn cluster_ids_are_visible_ascii() {
        let id = |v: &str| parse(&["--id", "1", "--cluster-id", v]).map(|c| c.cluster_id);
        assert_eq!(
            id("ns/demo/uid-1").unwrap().as_deref(),
            Some("ns/demo/uid-1")
        );
        for bad in ["", "ns/demo ", "ns/dé/ü", "a\tb"] {
            assert!(id(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
