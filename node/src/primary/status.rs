//! The primary–secondary engine's part of the member's status.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::store::Role;
use super::PrimaryEngine;
use caplab_api::status::{self, EngineStatus, PeerStatus};

impl PrimaryEngine {
    pub(super) async fn report(&self) -> EngineStatus {
        let state = self.state.lock().await;
        let last = state.last_seq();
        let now = Instant::now();
        let peers = if state.meta.role == Role::Primary {
            state
                .progress
                .iter()
                .map(|(id, p)| {
                    let lag_ms = state
                        .log
                        .appended_at(p.match_seq + 1)
                        .map_or(0, |at| now.duration_since(at).as_millis() as u64);
                    let status = PeerStatus {
                        match_index: Some(p.match_seq),
                        lag_entries: last.saturating_sub(p.match_seq),
                        lag_ms: Some(lag_ms),
                        last_contact_ms: p
                            .last_contact
                            .map(|at| now.duration_since(at).as_millis() as u64),
                    };
                    (*id, status)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        EngineStatus {
            replication: self.replication(),
            role: match state.meta.role {
                Role::Primary if state.fenced => status::Role::Fenced,
                Role::Primary => status::Role::Primary,
                Role::Secondary | Role::Uninitialized => status::Role::Secondary,
            },
            term: state.meta.epoch,
            leader: state.meta.primary,
            commit_index: last,
            applied_index: last,
            last_log_index: last,
            snapshot_index: state.log.base().seq,
            voters: state.meta.members.iter().copied().collect(),
            learners: Vec::new(),
            peers,
            discarded_writes: Some(state.meta.discarded),
        }
    }
}
