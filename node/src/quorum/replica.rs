//! This member as a replica: stores what coordinators and anti-entropy send (keeping the
//! newest version per key), answers fetches, and compares digests.

use std::collections::BTreeMap;
use std::sync::Arc;

use caplab_api::tail::TailEntry;

use super::commit::GroupCommit;
use super::counters::Counters;
use super::store::{Store, StoreError};
use super::wire::{
    FetchResponse, Stamp, StoreKind, StoreRequest, StoreResponse, SyncRequest, SyncResponse,
    Versioned, SYNC_PAGE_KEYS,
};
use crate::tail::{describe, Recent};
use crate::types::Command;

pub struct Replica {
    pub store: Store,
    pub counters: Arc<Counters>,
    /// The last client writes stored here, with their stamps (`GET /v1/log`), put in words
    /// only when the log is read: [`Stored::entry`].
    pub recent: Recent<Stored>,
    /// Every change goes through here, grouped with the concurrent ones into one transaction.
    commits: GroupCommit,
}

impl Replica {
    /// A replica on `store`, committing in groups on a thread of its own.
    pub fn new(store: Store, counters: Arc<Counters>) -> Result<Self, StoreError> {
        Ok(Self {
            commits: GroupCommit::start(store.clone())?,
            store,
            counters,
            recent: Recent::default(),
        })
    }

    /// Stores a batch durably (with the stores that arrive meanwhile, in one transaction) and
    /// counts what it did: a client write that arrived older than the value held is lost to
    /// last-writer-wins (counted for the member that stamped it); values replaced by a repair
    /// count as read repairs or anti-entropy repairs.
    pub async fn store(&self, request: StoreRequest) -> Result<StoreResponse, StoreError> {
        let (request, applied) = self.commits.store(request).await?;
        let kind = request.kind;
        if kind == StoreKind::Write {
            for (key, version) in &request.entries {
                self.recent.push(Stored {
                    key: key.clone(),
                    version: *version,
                    lost: applied.superseded.contains(key),
                });
            }
        }
        match kind {
            StoreKind::Write => {
                for key in &applied.superseded {
                    let source = request.entries.get(key).map_or(0, |v| v.stamp.node);
                    tracing::info!(
                        key,
                        source,
                        "a write arrived older than the value held: lost to last-writer-wins"
                    );
                    self.counters.lost_write(source);
                }
            }
            StoreKind::ReadRepair => self.counters.read_repaired(applied.changed.len()),
            StoreKind::AntiEntropy => self.counters.anti_entropy_repaired(applied.changed.len()),
        }
        Ok(StoreResponse {
            superseded: applied.superseded,
        })
    }

    pub async fn fetch(&self, key: &str) -> Result<FetchResponse, StoreError> {
        Ok(FetchResponse {
            version: self.store.get(key).await?,
        })
    }

    /// Compares the sender's digest with what this replica holds in the digest's key range.
    /// At most [`SYNC_PAGE_KEYS`] newer versions are answered (the rest in later rounds), so
    /// the answer stays as bounded as the request, however far behind the sender is.
    pub async fn sync(&self, request: SyncRequest) -> Result<SyncResponse, StoreError> {
        let mine = self.store.range(request.after, request.through).await?;
        let mut answer = compare(&mine, &request.digest);
        if answer.newer.len() > SYNC_PAGE_KEYS {
            answer.newer = answer.newer.into_iter().take(SYNC_PAGE_KEYS).collect();
        }
        Ok(answer)
    }
}

/// A client write as this replica stored it: kept, or `lost` to a newer stamp held here.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub version: Versioned,
    pub lost: bool,
}

impl Stored {
    /// The write as `GET /v1/log` shows it (formatted here, off the write path).
    pub fn entry(&self) -> TailEntry {
        let command = Command::Write {
            key: self.key.clone(),
            value: self.version.value,
        };
        let mut entry = TailEntry::new(0, None, describe(&command));
        entry.decision = Some(if self.lost { "lost" } else { "kept" }.to_string());
        entry.stamp_ms = Some(self.version.stamp.ms);
        entry.writer = Some(self.version.stamp.node);
        entry
    }
}

/// What `mine` holds newer than `theirs` (or they lack), and which keys they hold newer.
pub fn compare(
    mine: &BTreeMap<String, Versioned>,
    theirs: &BTreeMap<String, Stamp>,
) -> SyncResponse {
    let newer = mine
        .iter()
        .filter(|(key, v)| theirs.get(*key).is_none_or(|s| *s < v.stamp))
        .map(|(key, v)| (key.clone(), *v))
        .collect();
    let wanted = theirs
        .iter()
        .filter(|(key, s)| mine.get(*key).is_none_or(|v| v.stamp < **s))
        .map(|(key, _)| key.clone())
        .collect();
    SyncResponse { newer, wanted }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_finds_both_directions() {
        let stamp = |ms| Stamp { ms, node: 1 };
        let v = |ms| Versioned {
            value: ms as i64,
            stamp: stamp(ms),
        };
        let mine = BTreeMap::from([("a".into(), v(5)), ("b".into(), v(1)), ("c".into(), v(3))]);
        let theirs = BTreeMap::from([
            ("a".into(), stamp(4)),
            ("b".into(), stamp(2)),
            ("c".into(), stamp(3)),
            ("d".into(), stamp(1)),
        ]);
        let answer = compare(&mine, &theirs);
        assert_eq!(answer.newer, BTreeMap::from([("a".into(), v(5))]));
        assert_eq!(answer.wanted, ["b", "d"]);
    }
}
