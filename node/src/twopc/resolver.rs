//! In-doubt resolution on a participant: a transaction it voted yes on and has not heard the
//! decision of is asked about, first of the coordinator; if the coordinator cannot be reached
//! the transaction is *in doubt* and the other participants are asked (the cooperative
//! termination protocol, Bernstein, Hadzilacos & Goodman 1987, §7.4): one that knows the
//! decision, or never voted yes (it then refuses the transaction for good), settles it. When
//! every participant reached voted yes and none knows, nothing can be decided safely: the
//! participant waits, holding the key — 2PC's blocking.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use caplab_api::paths;

use super::counters::{Counters, Phase};
use super::link::call;
use super::participant::{Hold, Participant};
use super::wire::{QueryRequest, QueryResponse, TxId, TxState};
use crate::faults::Faults;
use crate::network::PeerClient;
use crate::types::NodeId;

/// How often held transactions are checked.
pub const RESOLVE_INTERVAL: Duration = Duration::from_millis(500);
/// How old a held transaction must be before the coordinator is asked about it (a running
/// transaction normally decides well within this).
pub const ASK_AFTER: Duration = Duration::from_secs(1);
/// The deadline of one question.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Resolver {
    pub participant: Arc<Participant>,
    pub peers: Arc<PeerClient>,
    pub counters: Arc<Counters>,
    pub faults: Arc<Faults>,
}

impl Resolver {
    pub async fn run(self) {
        loop {
            tokio::time::sleep(RESOLVE_INTERVAL).await;
            if self.faults.is_paused() {
                continue;
            }
            let now_ms = self
                .faults
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            for hold in self.participant.holds() {
                let age = now_ms.saturating_sub(hold.record.since_ms);
                // The coordinator's own holds are settled by the coordinator itself.
                if hold.record.coordinator != self.participant.id
                    && age >= ASK_AFTER.as_millis() as u64
                {
                    self.resolve(&hold).await;
                }
            }
            self.counters
                .set_in_doubt(self.participant.in_doubt().len());
        }
    }

    async fn resolve(&self, hold: &Hold) {
        let r = &hold.record;
        match self.ask(r.coordinator, r.txid).await {
            Ok(state) => {
                if !self.settle(r.txid, state, r.coordinator).await {
                    self.participant.set_in_doubt(r.txid, false);
                }
                return;
            }
            Err(why) if !hold.in_doubt => {
                tracing::warn!(txid = r.txid, coordinator = r.coordinator, why, "in doubt: voted yes and cannot reach the coordinator; asking the other participants");
                self.participant.set_in_doubt(r.txid, true);
            }
            Err(_) => {}
        }
        let others = r
            .participants
            .iter()
            .filter(|p| **p != self.participant.id && **p != r.coordinator);
        for peer in others {
            if let Ok(state) = self.ask(*peer, r.txid).await {
                if self.settle(r.txid, state, *peer).await {
                    return;
                }
            }
        }
    }

    /// Applies the decision `state` settles (told by `by`); false when it settles none.
    async fn settle(&self, txid: TxId, state: TxState, by: NodeId) -> bool {
        let Some(decision) = state.decision() else {
            return false;
        };
        match self.participant.apply(txid, decision, false).await {
            Ok(_) => {
                tracing::info!(
                    txid,
                    by,
                    decision = decision.as_str(),
                    "learned the decision of a held transaction"
                );
                true
            }
            Err(e) => {
                tracing::error!(txid, error = %e, "cannot apply a learned decision");
                false
            }
        }
    }

    async fn ask(&self, peer: NodeId, txid: TxId) -> Result<TxState, String> {
        self.counters.messages(Phase::Query, 1);
        let request = QueryRequest { txid };
        let answer: QueryResponse = call(
            &self.peers,
            peer,
            paths::TWOPC_QUERY,
            &request,
            QUERY_TIMEOUT,
        )
        .await?;
        Ok(answer.state)
    }
}
