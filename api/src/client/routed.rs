//! [`ClusterClient`]: register operations on a whole cluster, sent straight to the member that
//! orders them (the Raft leader, the primary, the 2pc coordinator) once it is known, the way
//! etcd's and ZooKeeper's clients keep talking to the server that answers them.
//!
//! Any member accepts any operation and forwards what it cannot serve to the leader
//! (`/v1/internal/forward/*`), so routing is only a shortcut: it saves the follower → leader
//! hop (an HTTP round trip and a second request parse) that two thirds of the requests of a
//! 3-member cluster take otherwise, and it is never needed for correctness. The leader is
//! learned from the members' `GET /v1/status` (who claims leadership in the highest term),
//! again at most every [`RELEARN`], and forgotten after any failure that may mean it moved;
//! until it is learned again requests go to the client's own ("home") member, which forwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{MemberClient, MemberError, Timeouts};
use crate::kv::Consistency;
use crate::status::Status;

/// How often the leader is asked for again while requests succeed: a leader that lost its
/// role without a failure (its requests are then forwarded) is left within this long.
pub const RELEARN: Duration = Duration::from_secs(1);

/// How long asking one member for its status may take while learning the leader.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// No leader known: requests go to the home member.
const UNKNOWN: usize = usize::MAX;

/// What every clone of one [`ClusterClient`] shares: the leader's index, when it was learned.
#[derive(Debug)]
struct Route {
    /// Index in `members` of the leader, or [`UNKNOWN`].
    leader: AtomicUsize,
    /// When the leader was last asked for (`None`: never).
    asked: Mutex<Option<Instant>>,
    /// Set while one clone asks, so that 256 clients noticing a failover ask once.
    asking: AtomicBool,
}

/// A client of every member of one cluster, homed on one of them. Cheap to clone; clones made
/// with [`ClusterClient::homed`] share what they learn about the leader.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    members: Arc<[MemberClient]>,
    home: usize,
    route: Arc<Route>,
}

impl ClusterClient {
    /// A client of these members (in any order), homed on the first. `None` when there are
    /// none.
    pub fn new(members: Vec<MemberClient>) -> Option<Self> {
        if members.is_empty() {
            return None;
        }
        Some(ClusterClient {
            members: members.into(),
            home: 0,
            route: Arc::new(Route {
                leader: AtomicUsize::new(UNKNOWN),
                asked: Mutex::new(None),
                asking: AtomicBool::new(false),
            }),
        })
    }

    /// The same client homed on member `home` modulo their number: where its local reads go,
    /// and everything while no leader is known.
    pub fn homed(&self, home: usize) -> Self {
        ClusterClient {
            home: home % self.members.len(),
            ..self.clone()
        }
    }

    /// The members, in the order given.
    pub fn members(&self) -> &[MemberClient] {
        &self.members
    }

    /// Index of the leader as last learned, if any.
    pub fn leader(&self) -> Option<usize> {
        let i = self.route.leader.load(Ordering::Relaxed);
        (i != UNKNOWN).then_some(i)
    }

    /// [`MemberClient::write`] at the leader (the home member while none is known).
    pub async fn write(&self, key: &str, value: i64) -> Result<i64, MemberError> {
        let i = self.ordering_member().await;
        self.noted(i, self.members[i].write(key, value).await)
    }

    /// [`MemberClient::cas`] at the leader (the home member while none is known).
    pub async fn cas(&self, key: &str, expected: i64, new: i64) -> Result<i64, MemberError> {
        let i = self.ordering_member().await;
        self.noted(i, self.members[i].cas(key, expected, new).await)
    }

    /// [`MemberClient::read`]: a linearizable read at the leader, a local read at the home
    /// member (its own copy is what `local` means).
    pub async fn read(&self, key: &str, consistency: Consistency) -> Result<i64, MemberError> {
        let i = match consistency {
            Consistency::Linearizable => self.ordering_member().await,
            Consistency::Local => self.home,
        };
        self.noted(i, self.members[i].read(key, consistency).await)
    }

    /// Where an operation that the leader orders goes: the leader, learned again first when
    /// it is unknown or was learned more than [`RELEARN`] ago (by one clone at a time; the
    /// others meanwhile use what is known).
    async fn ordering_member(&self) -> usize {
        if self.due() && !self.route.asking.swap(true, Ordering::Acquire) {
            let found = self.ask().await;
            self.route
                .leader
                .store(found.unwrap_or(UNKNOWN), Ordering::Relaxed);
            self.route.asking.store(false, Ordering::Release);
        }
        self.leader().unwrap_or(self.home)
    }

    /// Whether the leader should be asked for now: never asked, or asked [`RELEARN`] ago.
    fn due(&self) -> bool {
        let Ok(mut asked) = self.route.asked.lock() else {
            return false;
        };
        let now = Instant::now();
        match *asked {
            Some(at) if now.duration_since(at) < RELEARN => false,
            _ => {
                *asked = Some(now);
                true
            }
        }
    }

    /// Asks every member for its status; the leader is the member that claims leadership in
    /// the highest term, else the one the highest-term answer names.
    async fn ask(&self) -> Option<usize> {
        let mut answers = Vec::with_capacity(self.members.len());
        for member in self.members.iter() {
            let timeouts = Timeouts {
                request: ASK_TIMEOUT.min(member.timeouts.request),
                ..member.timeouts
            };
            let member = member.clone().with_timeouts(timeouts);
            answers.push(member.status().await.ok());
        }
        leader_of(&answers)
    }

    /// Passes `result` on; a failure that may mean the leader moved makes the clients forget
    /// it (they go home, which forwards, until it is learned again).
    fn noted(&self, member: usize, result: Result<i64, MemberError>) -> Result<i64, MemberError> {
        if let Err(e) = &result {
            if moved(e) {
                let _ = self.route.leader.compare_exchange(
                    member,
                    UNKNOWN,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                if let Ok(mut asked) = self.route.asked.lock() {
                    *asked = None;
                }
            }
        }
        result
    }
}

/// Whether a failure may mean the member asked no longer leads: no answer, "not applied"
/// (no leader, stepped down, paused), an unknown outcome, or someone else at the address. A
/// refusal of the request itself (4xx, 501, a malformed success) says nothing about that.
fn moved(e: &MemberError) -> bool {
    !matches!(
        e,
        MemberError::Rejected { .. }
            | MemberError::NotImplemented { .. }
            | MemberError::BadAnswer { .. }
    )
}

/// The index of the leader in these answers (one per member, `None`: no answer).
fn leader_of(answers: &[Option<Status>]) -> Option<usize> {
    let index_of = |id| {
        answers
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
    };
    let claimed = answers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
        .filter(|(_, s)| s.engine.role.is_leader())
        .max_by_key(|(_, s)| s.engine.term)
        .map(|(i, _)| i);
    claimed.or_else(|| {
        answers
            .iter()
            .flatten()
            .filter(|s| s.engine.leader.is_some())
            .max_by_key(|s| s.engine.term)
            .and_then(|s| s.engine.leader)
            .and_then(index_of)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: &str, term: u64, leader: Option<u64>) -> Status {
        let json = serde_json::json!({
            "id": id,
            "incarnation": "0123456789abcdef",
            "voter": true,
            "replication": "raft", "role": role, "term": term, "leader": leader,
            "commitIndex": 0, "appliedIndex": 0, "lastLogIndex": 0, "snapshotIndex": 0,
            "voters": [1, 2, 3], "learners": [], "peers": {},
            "misdirectedMessages": 0, "paused": false, "clockMs": 0,
            "faults": {}, "faultCounters": {}
        });
        serde_json::from_value(json).expect("a status in the wire shape")
    }

    #[test]
    fn the_leader_is_who_claims_it_in_the_highest_term() {
        let answers = [
            Some(status(1, "leader", 3, Some(1))),
            Some(status(2, "leader", 4, Some(2))),
            None,
        ];
        assert_eq!(leader_of(&answers), Some(1));
        // Nobody claims it: the highest-term answer names it.
        let answers = [
            Some(status(1, "follower", 3, Some(1))),
            Some(status(2, "follower", 5, Some(3))),
            Some(status(3, "candidate", 5, None)),
        ];
        assert_eq!(leader_of(&answers), Some(2));
        // Leaderless (quorum mode) or nobody answered: no leader.
        assert_eq!(
            leader_of(&[Some(status(1, "follower", 0, None)), None]),
            None
        );
        assert_eq!(leader_of(&[None, None]), None);
    }

    #[test]
    fn refusals_keep_the_leader_failures_forget_it() {
        let t = || "t".to_string();
        let refused = MemberError::Rejected {
            target: t(),
            status: 409,
            message: t(),
            current: Some(1),
        };
        assert!(!moved(&refused));
        let gone = MemberError::Unavailable {
            target: t(),
            message: t(),
        };
        assert!(moved(&gone));
    }
}
