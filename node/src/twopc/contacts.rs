//! What the coordinator last heard from each participant: when it last answered (a vote, an
//! acknowledgement, or the membership sent every second) and the last transaction whose
//! decision it acknowledged. The status reports them as each peer's `lastContactMs` and
//! `matchIndex`, which is how the operator tells a participant that answers from one that
//! does not.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::time::Instant;

use super::wire::TxId;
use crate::types::NodeId;

#[derive(Debug, Clone, Copy)]
struct Contact {
    at: Instant,
    acked: TxId,
}

#[derive(Default)]
pub struct Contacts(Mutex<BTreeMap<NodeId, Contact>>);

impl Contacts {
    fn update(&self, peer: NodeId, acked: Option<TxId>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let last = all.get(&peer).map_or(0, |c| c.acked);
        let acked = acked.map_or(last, |txid| txid.max(last));
        all.insert(
            peer,
            Contact {
                at: Instant::now(),
                acked,
            },
        );
    }

    /// `peer` answered.
    pub fn heard(&self, peer: NodeId) {
        self.update(peer, None);
    }

    /// `peer` acknowledged the decision of `txid`.
    pub fn acked(&self, peer: NodeId, txid: TxId) {
        self.update(peer, Some(txid));
    }

    /// Per peer: milliseconds since it last answered, and the last transaction it
    /// acknowledged.
    pub fn view(&self) -> BTreeMap<NodeId, (u64, TxId)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(id, c)| (*id, (c.at.elapsed().as_millis() as u64, c.acked)))
            .collect()
    }
}
