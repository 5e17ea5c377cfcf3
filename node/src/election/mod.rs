//! When a Raft member campaigns and when a leader stops leading: pre-vote and check-quorum,
//! which openraft 0.9 lacks.
//!
//! - **Pre-vote** (Raft thesis §9.6). openraft's own election timer is off; this module's
//!   timer fires after a random `[timeout, 2 × timeout)` without hearing from a leader, and
//!   first asks the other voters over [`paths::RAFT_PRE_VOTE`] whether they *would* vote.
//!   Only when a majority would does the member start a real election
//!   (`trigger().elect()`, which takes the next term). A member cut off alone therefore keeps its term and cannot depose a
//!   healthy leader when it returns, and a member with a shorter log never campaigns at all
//!   (so the longest log wins at once instead of after rounds of refused elections).
//! - **Check-quorum.** A leader that no quorum has acknowledged for two election timeouts
//!   steps aside: it stops its heartbeats and refuses operations (503, not applied), so the
//!   followers' leader leases lapse and any connected majority can elect, whatever the
//!   topology (a follower that still hears a cut-off leader no longer holds the others back:
//!   openraft issue 2080). Its term is untouched (no disruption when links heal); it leads
//!   again only by being elected, and follows as soon as a newer leader reaches it.
//!
//! Every timer here runs on the [election clock](crate::election_clock): time a member spent
//! waiting for its own log's `fdatasync` does not count as its leader's (or its followers')
//! silence. A leader's core waits for its own sync too and sends nothing meanwhile, so a
//! leader whose sync has taken a quarter of a heartbeat tells its followers so
//! ([`RAFT_LEADER_SYNCING`](caplab_api::paths::RAFT_LEADER_SYNCING)), and they count it as
//! hearing from it, for at most [`ElectionTiming::longest_leader_sync`]: a disk stall shared
//! by the members deposes nobody, and a leader whose disk stopped is replaced.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caplab_api::paths;
use futures::stream::{FuturesUnordered, StreamExt};
use openraft::{Membership, RaftMetrics, ServerState};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::election_clock::{ElectionClock, ElectionTime};
use crate::network::{PeerClient, Target};
use crate::types::{LogId, Node, NodeId, Raft};

mod leader_syncing;

pub use leader_syncing::{LeaderSyncing, LeaderSyncingAnswer};

/// A leader that stepped aside for lack of a quorum (check-quorum): it serves nothing and
/// knows no leader to send a client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteppedAside;

/// Election timing, from `--election-timeout-ms` and `--heartbeat-ms`.
#[derive(Debug, Clone, Copy)]
pub struct ElectionTiming {
    /// The minimum election timeout: a follower campaigns after a random
    /// `[timeout, 2 × timeout)` without hearing from a leader.
    pub timeout: Duration,
    /// How long after hearing from a leader a voter refuses to vote for anyone else:
    /// openraft's leader lease, which is its maximum election timeout (set just above
    /// `timeout`). Pre-votes are refused for as long, so a granted pre-vote is followed by a
    /// vote that openraft grants too.
    pub lease: Duration,
    /// The leader's heartbeat interval.
    pub heartbeat: Duration,
    /// How long after a successful leadership-confirmation round began the leader answers
    /// linearizable reads without another one (see `read_lease.rs`); below `timeout`.
    pub read_lease: Duration,
}

impl ElectionTiming {
    /// A leader that no quorum acknowledged for this long on the election clock steps aside
    /// (check-quorum); in wall time, for at most this plus
    /// [`ElectionTiming::longest_leader_sync`]. Twice the election timeout: long enough that
    /// a busy machine's scheduling stalls do not depose healthy leaders, short enough that a
    /// connected majority elects within a second or two by default.
    fn quorum_timeout(&self) -> Duration {
        self.timeout * 2
    }

    /// A leader whose sync has taken longer than this no longer tells its followers it is
    /// syncing: they elect another leader. Five election timeouts (1 s by default), as long
    /// as etcd's default election timeout tolerates a stalled leader.
    pub fn longest_leader_sync(&self) -> Duration {
        self.timeout * 5
    }

    fn random_timeout(&self) -> Duration {
        let ms = self.timeout.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(ms..2 * ms))
    }
}

/// The shortest sleep of the election timer.
const MIN_TIMER_SLEEP: Duration = Duration::from_millis(5);

/// `POST /raft/pre-vote`: would the receiver vote for `candidate` in `term`?
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The term the candidate would campaign in (its current term + 1).
    pub term: u64,
    /// The last entry of the candidate's log (`null`: empty log).
    pub last_log_id: Option<LogId>,
}

/// The answer to a [`PreVoteRequest`]. Nothing on the receiver changes either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreVoteResponse {
    pub granted: bool,
    /// The receiver's current term.
    pub term: u64,
    /// Why it would not vote, when it would not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Election control of one Raft member; shared by the Raft engine, the peer API and the
/// background tasks [`Election::start`] spawns.
pub struct Election {
    raft: Raft,
    id: NodeId,
    peers: Arc<PeerClient>,
    timing: ElectionTiming,
    /// Every timer here runs on it: time this member spent waiting for its own disk is not
    /// time its leader was silent (see `election_clock.rs`).
    clock: ElectionClock,
    /// When this member last heard from its leader (an AppendEntries, on arrival and once
    /// accepted, or a leader-syncing notice); initially when it started, so that a restarted
    /// member does not grant pre-votes before its leader reached it.
    leader_heard_at: Mutex<ElectionTime>,
    /// The election timer runs from here: the last time this member heard from a leader,
    /// granted a vote or tried to campaign.
    quiet_since: Mutex<ElectionTime>,
    /// The term in which this member, as leader, lost its quorum and stepped aside.
    stepped_aside: Mutex<Option<u64>>,
    paused: AtomicBool,
}

/// What check-quorum remembers of this member's time leading (unpaused) in one term.
#[derive(Debug, Clone, Copy)]
struct Leading {
    term: u64,
    /// On the election clock: the last quorum acknowledgement, or when this member was first
    /// seen leading in `term` if that is later (a new leader's silence counts from there).
    acknowledged: ElectionTime,
    /// When this member was first seen leading in `term`, in wall time.
    since: std::time::Instant,
}

impl Leading {
    /// This check's record: `previous` carried on within `term`, else one starting now.
    /// `acked` is openraft's age of the last quorum acknowledgement, in wall time: on the
    /// election clock the acknowledgement is at most that far back (the clock runs no faster
    /// than wall time), so `now - acked` is a lower bound, and the highest bound seen (the one
    /// read soonest after the acknowledgement) is kept.
    fn observe(
        previous: Option<Leading>,
        term: u64,
        now: ElectionTime,
        wall_now: std::time::Instant,
        acked: Option<Duration>,
    ) -> Leading {
        let mut leading = match previous {
            Some(l) if l.term == term => l,
            _ => Leading {
                term,
                acknowledged: now,
                since: wall_now,
            },
        };
        if let Some(age) = acked {
            leading.acknowledged = leading.acknowledged.max(now.saturating_sub(age));
        }
        leading
    }

    /// How long no quorum has acknowledged this leader: on the election clock, and in wall
    /// time (never counted from before it was leading).
    fn silence(
        &self,
        now: ElectionTime,
        wall_now: std::time::Instant,
        acked: Option<Duration>,
    ) -> (Duration, Duration) {
        let leading_for = wall_now.saturating_duration_since(self.since);
        let wall = acked.map_or(leading_for, |age| age.min(leading_for));
        (now.saturating_sub(self.acknowledged), wall)
    }
}

/// Every voter of `membership` but `me`, with its membership record.
fn other_voters(
    membership: &Membership<NodeId, Node>,
    me: NodeId,
) -> impl Iterator<Item = (NodeId, Option<Target<'_>>)> {
    membership
        .voter_ids()
        .filter(move |peer| *peer != me)
        .map(|peer| (peer, membership.get_node(&peer).map(Target::from)))
}

fn is_voter<N: openraft::Node>(m: &RaftMetrics<NodeId, N>, id: NodeId) -> bool {
    m.membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id)
}

/// True when `granted` holds a majority of every voter set: of the one set, or of both the
/// old and the new one while a membership change is under way (joint consensus).
fn majority_of_each(voter_sets: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    voter_sets
        .iter()
        .all(|voters| voters.intersection(granted).count() * 2 > voters.len())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Election {
    /// Takes over elections from openraft (whose own timer must be off: `enable_elect:
    /// false`) and watches this member's leadership; both tasks end when Raft shuts down.
    pub fn start(
        raft: Raft,
        id: NodeId,
        peers: Arc<PeerClient>,
        timing: ElectionTiming,
        clock: ElectionClock,
    ) -> Arc<Self> {
        let now = clock.now();
        let election = Arc::new(Self {
            raft,
            id,
            peers,
            timing,
            clock,
            leader_heard_at: Mutex::new(now),
            quiet_since: Mutex::new(now),
            stepped_aside: Mutex::new(None),
            paused: AtomicBool::new(false),
        });
        tokio::spawn(election.clone().run_elections());
        tokio::spawn(election.clone().check_quorum());
        tokio::spawn(election.clone().announce_syncs());
        election
    }

    /// Notes word from this member's leader: an AppendEntries or a leader-syncing notice.
    pub fn heard_from_leader(&self) {
        let now = self.clock.now();
        *lock(&self.leader_heard_at) = now;
        *lock(&self.quiet_since) = now;
    }

    /// Notes a vote this member granted: as in Raft, it then leaves the candidate a whole
    /// election timeout to win before campaigning itself.
    pub fn granted_vote(&self) {
        *lock(&self.quiet_since) = self.clock.now();
    }

    /// A paused member's Raft timers stand still, like a stopped process's.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        self.raft.runtime_config().tick(!paused);
        self.apply_heartbeat();
    }

    /// Heartbeats go out unless the member is paused or has stepped aside.
    fn apply_heartbeat(&self) {
        let quiet = self.paused.load(Ordering::Relaxed) || lock(&self.stepped_aside).is_some();
        self.raft.runtime_config().heartbeat(!quiet);
    }

    /// True while this member is openraft's leader but has stepped aside for lack of a
    /// quorum.
    pub fn stepped_aside(&self) -> bool {
        lock(&self.stepped_aside).is_some()
    }

    /// True when this member, not being the leader, has not heard from one for two election
    /// timeouts (the leader's own check-quorum bound): whatever leader openraft still names
    /// is out of reach, so the member must not call itself ready or name that leader.
    pub fn leader_out_of_reach(&self) -> bool {
        self.clock.since(*lock(&self.leader_heard_at)) >= 2 * self.timing.timeout
    }

    /// Refuses an operation that only a leader performs while this one has stepped aside:
    /// "no leader known", i.e. 503 not applied (nothing was proposed).
    pub fn check_serving(&self) -> Result<(), SteppedAside> {
        if self.stepped_aside() {
            return Err(SteppedAside);
        }
        Ok(())
    }

    /// Would this member vote for the candidate? Yes only if it is an initialised voter,
    /// has not heard from a leader for a whole lease (and is not itself a leader in
    /// service), and the candidate's log is at least as up to date as its own.
    pub fn answer_pre_vote(&self, request: &PreVoteRequest) -> PreVoteResponse {
        let (state, term, is_voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let voter = is_voter(&m, self.id) && m.last_log_index.is_some();
            (m.state, m.current_term, voter)
        };
        let own_last = self.raft.data_metrics().borrow().last_log;
        let heard = self.clock.since(*lock(&self.leader_heard_at));
        let refused = if !is_voter {
            Some("not an initialised voter".to_string())
        } else if state == ServerState::Leader && !self.stepped_aside() {
            Some("this member is the leader".to_string())
        } else if heard < self.timing.lease {
            Some(format!(
                "heard from the leader {} ms ago",
                heard.as_millis()
            ))
        } else if request.last_log_id < own_last {
            Some(format!(
                "the candidate's log ends at {:?}, this member's at {own_last:?}",
                request.last_log_id
            ))
        } else {
            None
        };
        tracing::debug!(
            candidate = request.candidate,
            term = request.term,
            ?refused,
            "pre-vote"
        );
        PreVoteResponse {
            granted: refused.is_none(),
            term,
            refused,
        }
    }

    /// The election timer: after each random timeout without a leader, a pre-vote round,
    /// and a real election when a majority would vote for this member.
    async fn run_elections(self: Arc<Self>) {
        loop {
            self.wait_quiet(self.timing.random_timeout()).await;
            let state = self.raft.metrics().borrow().state;
            if state == ServerState::Shutdown {
                return;
            }
            let round = self.clock.now();
            if self.may_campaign() && self.pre_vote().await && self.still_leaderless(round) {
                tracing::info!("a majority would vote for this member: campaigning");
                if self.raft.trigger().elect().await.is_err() {
                    return; // Raft has shut down.
                }
            }
            *lock(&self.quiet_since) = self.clock.now();
        }
    }

    /// Sleeps until nothing reset the election timer for `timeout` on the election clock
    /// (which never runs ahead of wall time, so each sleep ends at or before the due time).
    async fn wait_quiet(&self, timeout: Duration) {
        loop {
            let quiet = self.clock.since(*lock(&self.quiet_since));
            if quiet >= timeout {
                return;
            }
            // At least a few ms: a clock stopped just short of the timeout (a write that never
            // ends) must not make this a busy loop.
            tokio::time::sleep((timeout - quiet).max(MIN_TIMER_SLEEP)).await;
        }
    }

    /// Followers and candidates that are voters campaign; leaders, learners and paused
    /// members do not.
    fn may_campaign(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        matches!(m.state, ServerState::Follower | ServerState::Candidate)
            && is_voter(&m, self.id)
            && !self.paused.load(Ordering::Relaxed)
    }

    fn still_leaderless(&self, since: ElectionTime) -> bool {
        self.may_campaign() && *lock(&self.leader_heard_at) < since
    }

    /// Asks every other voter concurrently; true once a majority of each voter set of the
    /// (possibly joint) membership, this member included, would vote for it.
    async fn pre_vote(&self) -> bool {
        let (membership, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.membership_config.membership().clone(), m.current_term)
        };
        let request = PreVoteRequest {
            candidate: self.id,
            term: term + 1,
            last_log_id: self.raft.data_metrics().borrow().last_log,
        };
        let mut granted = BTreeSet::from([self.id]);
        let mut answers: FuturesUnordered<_> = other_voters(&membership, self.id)
            .map(|(peer, target)| {
                let request = &request;
                async move { (peer, self.ask(peer, target, request).await) }
            })
            .collect();
        while !majority_of_each(membership.get_joint_config(), &granted) {
            let Some((peer, answer)) = answers.next().await else {
                tracing::debug!(?granted, "pre-vote: no majority would vote for this member");
                return false;
            };
            match answer {
                Some(a) if a.granted => {
                    granted.insert(peer);
                }
                Some(a) => tracing::debug!(peer, refused = ?a.refused, "pre-vote refused"),
                None => {}
            }
        }
        true
    }

    /// One pre-vote request, to the member and incarnation the membership records; `None`
    /// when the peer did not answer it.
    async fn ask(
        &self,
        peer: NodeId,
        target: Option<Target<'_>>,
        request: &PreVoteRequest,
    ) -> Option<PreVoteResponse> {
        let timeout = self.timing.timeout;
        let response = self
            .peers
            .post_to(
                peer,
                target.unwrap_or_default(),
                paths::RAFT_PRE_VOTE,
                request,
                timeout,
            )
            .await
            .map_err(|e| tracing::debug!(peer, error = %e, "pre-vote not answered"))
            .ok()?;
        if !response.status().is_success() {
            tracing::debug!(peer, status = %response.status(), "pre-vote refused by the peer API");
            return None;
        }
        response.json().await.ok()
    }

    /// Check-quorum: every heartbeat interval, a leader compares how long ago a quorum last
    /// acknowledged it with [`ElectionTiming::quorum_timeout`], and steps aside past it.
    async fn check_quorum(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.timing.heartbeat);
        let mut leading: Option<Leading> = None;
        loop {
            tick.tick().await;
            let (state, term, acked_ms) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                (m.state, m.current_term, m.millis_since_quorum_ack)
            };
            match state {
                ServerState::Shutdown => return,
                ServerState::Leader => {}
                _ => {
                    leading = None;
                    self.resume(term);
                    continue;
                }
            }
            if self.stepped_aside_before(term) {
                self.resume(term); // elected again since
            }
            // A paused leader's silence is the pause's, not its followers'.
            if self.paused.load(Ordering::Relaxed) {
                leading = None;
                continue;
            }
            let (now, wall_now) = (self.clock.now(), std::time::Instant::now());
            let acked = acked_ms.map(Duration::from_millis);
            let current = Leading::observe(leading, term, now, wall_now, acked);
            leading = Some(current);
            let (silent, silent_wall) = current.silence(now, wall_now, acked);
            // openraft refreshes the acknowledgement's age only when its core runs, and the
            // core waits for the write under way: a write that never ends must count as
            // silence in wall time all the same.
            let writing = self.clock.sync_under_way().unwrap_or_default();
            let silent_wall = silent_wall.max(writing);
            let wall_bound = self.timing.quorum_timeout() + self.timing.longest_leader_sync();
            if silent > self.timing.quorum_timeout() || silent_wall > wall_bound {
                self.step_aside(term, silent, silent_wall);
            }
        }
    }

    fn stepped_aside_before(&self, term: u64) -> bool {
        lock(&self.stepped_aside).is_some_and(|t| t < term)
    }

    /// `silent`: on the election clock; `silent_wall`: in wall time.
    fn step_aside(&self, term: u64, silent: Duration, silent_wall: Duration) {
        let first = lock(&self.stepped_aside).replace(term).is_none();
        if first {
            tracing::warn!(
                term,
                silent_ms = silent.as_millis() as u64,
                silent_wall_ms = silent_wall.as_millis() as u64,
                "no quorum acknowledged this leader within two election timeouts (leaving out \
                 its own log writes; seven in wall time): stepping aside (no heartbeats, \
                 operations refused) until a leader is elected"
            );
            self.apply_heartbeat();
        }
    }

    fn resume(&self, term: u64) {
        if lock(&self.stepped_aside).take().is_some() {
            tracing::info!(term, "no longer a leader that stepped aside");
            self.apply_heartbeat();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_is_needed_in_every_voter_set() {
        let one = [set(&[1, 2, 3])];
        assert!(!majority_of_each(&one, &set(&[1])));
        assert!(majority_of_each(&one, &set(&[1, 3])));
        // Joint: {1, 2, 3} -> {3, 4, 5}; 1 and 3 are a majority of the old set only.
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!majority_of_each(&joint, &set(&[1, 3])));
        assert!(majority_of_each(&joint, &set(&[1, 3, 4])));
    }

    #[test]
    fn random_timeouts_stay_within_one_to_two_election_timeouts() {
        let timing = ElectionTiming {
            timeout: Duration::from_millis(200),
            lease: Duration::from_millis(201),
            heartbeat: Duration::from_millis(100),
            read_lease: Duration::from_millis(100),
        };
        for _ in 0..1000 {
            let t = timing.random_timeout();
            assert!(t >= timing.timeout && t < timing.timeout * 2, "{t:?}");
        }
    }

    #[test]
    fn pre_vote_wire_shape() {
        let request: PreVoteRequest =
            serde_json::from_str(r#"{"candidate": 2, "term": 7, "lastLogId": null}"#).unwrap();
        assert_eq!((request.candidate, request.term), (2, 7));
        let granted = PreVoteResponse {
            granted: true,
            term: 6,
            refused: None,
        };
        assert_eq!(
            serde_json::to_value(granted).unwrap(),
            serde_json::json!({"granted": true, "term": 6})
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_new_leaders_silence_counts_from_when_it_began_to_lead() {
        let start = std::time::Instant::now();
        let leading = Leading::observe(None, 3, ms(1000), start, Some(ms(5000)));
        let later = start + ms(300);
        let (clock, wall) = leading.silence(ms(1300), later, Some(ms(5300)));
        assert_eq!((clock, wall), (ms(300), ms(300)));
    }

    #[test]
    fn an_acknowledgement_resets_the_silence_and_a_new_term_starts_afresh() {
        let start = std::time::Instant::now();
        let first = Leading::observe(None, 3, ms(1000), start, None);
        let acked = Leading::observe(Some(first), 3, ms(1400), start + ms(400), Some(ms(10)));
        assert_eq!(
            acked.silence(ms(1400), start + ms(400), Some(ms(10))),
            (ms(10), ms(10))
        );
        let next_term = Leading::observe(Some(acked), 4, ms(2000), start + ms(1000), None);
        assert_eq!(next_term.acknowledged, ms(2000));
        assert_eq!(next_term.since, start + ms(1000));
    }

    #[test]
    fn time_spent_syncing_is_not_silence_on_the_clock_but_is_in_wall_time() {
        // The leader's own write took 900 ms of the last second: its clock moved 100 ms.
        let start = std::time::Instant::now();
        let first = Leading::observe(None, 3, ms(1000), start, Some(ms(0)));
        let later = start + ms(1000);
        let now = Leading::observe(Some(first), 3, ms(1100), later, Some(ms(1000)));
        assert_eq!(
            now.silence(ms(1100), later, Some(ms(1000))),
            (ms(100), ms(1000))
        );
    }
}
