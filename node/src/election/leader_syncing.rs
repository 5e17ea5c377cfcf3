//! The leader-syncing notice: a leader whose core waits for its own log's sync sends no
//! heartbeats, so it tells its followers it is syncing, and they count that as hearing from
//! it, for at most [`super::ElectionTiming::longest_leader_sync`] (see the parent module).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use caplab_api::paths;
use futures::stream::{FuturesUnordered, StreamExt};
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::{other_voters, Election};
use crate::network::Target;
use crate::types::NodeId;

/// `POST /raft/leader-syncing`: the leader's log is in a sync that has taken `syncingMs` so
/// far; its core sends nothing until the sync ends. A follower of `leader` in `term` counts
/// it as hearing from its leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderSyncing {
    pub leader: NodeId,
    pub term: u64,
    /// How long the leader's sync under way has taken, in ms.
    pub syncing_ms: u64,
}

/// The answer to [`LeaderSyncing`]: whether the receiver follows that leader in that term
/// (and so counted the notice as hearing from it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderSyncingAnswer {
    pub heard: bool,
}

impl Election {
    /// A follower of `notice.leader` in `notice.term` counts the notice as hearing from its
    /// leader; anyone else ignores it.
    pub fn leader_syncing(&self, notice: &LeaderSyncing) -> LeaderSyncingAnswer {
        let follows = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.state != ServerState::Leader
                && m.current_term == notice.term
                && m.current_leader == Some(notice.leader)
        };
        tracing::debug!(
            leader = notice.leader,
            syncing_ms = notice.syncing_ms,
            follows,
            "leader syncing"
        );
        if follows {
            self.heard_from_leader();
        }
        LeaderSyncingAnswer { heard: follows }
    }

    /// A leader in service whose log has been writing for a quarter of a heartbeat or more
    /// (and less than [`super::ElectionTiming::longest_leader_sync`]) tells every other
    /// voter, in place of the heartbeats its waiting core does not send, at most once a
    /// heartbeat; looked at eight times a heartbeat. A normal write takes well under a
    /// millisecond. The first notice can still come up to ~1.9 heartbeats after the last
    /// heartbeat (openraft's heartbeat tick is 1.5 heartbeats; then a quarter heartbeat and
    /// an eighth), so a follower with a short random timeout may yet campaign; the
    /// benchmarks under disk pressure saw none (BENCHMARKS.md).
    pub(super) async fn announce_syncs(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.timing.heartbeat / 8);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_notice: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let (state, term, membership) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                (
                    m.state,
                    m.current_term,
                    m.membership_config.membership().clone(),
                )
            };
            match state {
                ServerState::Shutdown => return,
                ServerState::Leader
                    if !self.stepped_aside() && !self.paused.load(Ordering::Relaxed) => {}
                _ => continue,
            }
            let Some(syncing) = self.clock.sync_under_way() else {
                continue;
            };
            let noticed_lately = last_notice.is_some_and(|at| at.elapsed() < self.timing.heartbeat);
            if syncing < self.timing.heartbeat / 4
                || syncing >= self.timing.longest_leader_sync()
                || noticed_lately
            {
                continue;
            }
            last_notice = Some(tokio::time::Instant::now());
            tracing::debug!(
                syncing_ms = syncing.as_millis() as u64,
                "telling the followers this leader's log is syncing"
            );
            let notice = LeaderSyncing {
                leader: self.id,
                term,
                syncing_ms: syncing.as_millis() as u64,
            };
            let sends: FuturesUnordered<_> = other_voters(&membership, self.id)
                .map(|(peer, target)| self.tell_syncing(peer, target, &notice))
                .collect();
            sends.collect::<()>().await;
        }
    }

    async fn tell_syncing(&self, peer: NodeId, target: Option<Target<'_>>, notice: &LeaderSyncing) {
        let path = paths::RAFT_LEADER_SYNCING;
        let timeout = self.timing.heartbeat;
        let sent = self
            .peers
            .post_to(peer, target.unwrap_or_default(), path, notice, timeout);
        match sent.await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::debug!(peer, status = %r.status(), "leader-syncing notice refused"),
            Err(e) => tracing::debug!(peer, error = %e, "leader-syncing notice not delivered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_syncing_wire_shape() {
        let notice: LeaderSyncing =
            serde_json::from_str(r#"{"leader": 1, "term": 4, "syncingMs": 180}"#).unwrap();
        assert_eq!((notice.leader, notice.term, notice.syncing_ms), (1, 4, 180));
        let answer = serde_json::to_value(LeaderSyncingAnswer { heard: true }).unwrap();
        assert_eq!(answer, serde_json::json!({"heard": true}));
        let missing = serde_json::from_str::<LeaderSyncing>(r#"{"leader": 1, "term": 4}"#);
        assert!(missing.is_err());
    }
}
