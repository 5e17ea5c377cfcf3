//! The admin calls the nemesis makes, retried while the cluster says "not now", and what it
//! reads from the members' status.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use caplab_api::faults::{CutDirection, FaultSet, PeerFilter};
use caplab_api::identity::PeerAddr;
use caplab_api::{MemberClient, MemberError};

use crate::Cluster;

/// One admin call of the nemesis.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCall {
    /// `PUT /v1/admin/faults` (`FaultSet::default()` heals).
    Faults(FaultSet),
    /// `PUT /v1/admin/voters`.
    Voters(BTreeSet<u64>),
    /// `POST /v1/admin/learners`: member `id` at peer address `addr`.
    Learner { id: u64, addr: String },
    /// `POST /v1/admin/promote` with no epoch.
    Promote,
    /// `PUT /v1/admin/primary`: follow primary `id` at peer address `addr`.
    Follow { id: u64, addr: String },
}

impl AdminCall {
    /// `Faults(FaultSet::default())`: heals every fault.
    pub fn heal() -> AdminCall {
        AdminCall::Faults(FaultSet::default())
    }

    /// Sends the call; a success whose answer is not the expected shape still succeeded.
    async fn send(&self, client: &MemberClient) -> Result<(), MemberError> {
        let result = match self {
            AdminCall::Faults(set) => client.set_faults(set).await.map(drop),
            AdminCall::Voters(voters) => client.set_voters(voters.iter().copied()).await.map(drop),
            AdminCall::Learner { id, addr } => client
                .add_learner(*id, PeerAddr::Plain(addr.clone()))
                .await
                .map(drop),
            AdminCall::Promote => client.promote(None).await.map(drop),
            AdminCall::Follow { id, addr } => client
                .follow(*id, PeerAddr::Plain(addr.clone()))
                .await
                .map(drop),
        };
        match result {
            Err(MemberError::BadAnswer { .. }) => Ok(()),
            other => other,
        }
    }
}

impl fmt::Display for AdminCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminCall::Faults(set) => match serde_json::to_string(set) {
                Ok(json) => write!(f, "faults {json}"),
                Err(_) => write!(f, "faults {set:?}"),
            },
            AdminCall::Voters(voters) => write!(f, "voters {voters:?}"),
            AdminCall::Learner { id, addr } => write!(f, "learner {id} at {addr}"),
            AdminCall::Promote => f.write_str("promote"),
            AdminCall::Follow { id, addr } => write!(f, "follow primary {id} at {addr}"),
        }
    }
}

/// A partition of one member from `peers`, cutting `direction`.
pub fn cut(peers: &[u64], direction: CutDirection) -> FaultSet {
    FaultSet {
        partition: Some(PeerFilter {
            peers: peers.iter().copied().collect(),
            direction,
        }),
        ..FaultSet::default()
    }
}

/// Whether a refusal means "not now" (no answer, 409, 421, 5xx): worth retrying. Any other
/// 4xx is a mistake of the caller.
fn not_now(e: &MemberError) -> bool {
    !matches!(e, MemberError::Rejected { status, .. } if *status != 409)
}

/// An admin call retried every 100 ms while the member says "not now" until `patience`
/// passes; errors say why it still failed.
pub async fn retry_admin(
    cluster: &Cluster,
    member: u64,
    call: &AdminCall,
    patience: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let client = cluster.client(member);
    loop {
        match call.send(&client).await {
            Ok(()) => return Ok(()),
            Err(e) if not_now(&e) && start.elapsed() < patience => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("{e} after {:?}", start.elapsed())),
        }
    }
}

/// Polls `probe` every 100 ms until it yields a value or `deadline` passes.
pub(super) async fn poll<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The voters and learners member `id` reports.
pub(super) async fn members_known_to(cluster: &Cluster, id: u64) -> Option<Vec<u64>> {
    let status = cluster.member_status(id).await?;
    Some([status.engine.voters, status.engine.learners].concat())
}

/// The leader (Raft) or primary the running members name, preferring the highest term; `None`
/// when none names one that says so itself.
pub async fn current_leader(cluster: &Cluster) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for m in cluster.running() {
        let Some(status) = cluster.member_status(m.id).await else {
            continue;
        };
        let term = status.engine.term;
        if status.is_leader() && best.is_none_or(|(t, _)| term > t) {
            best = Some((term, m.id));
        }
    }
    best.map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_describe_themselves() {
        let call = AdminCall::Faults(cut(&[2, 3], CutDirection::Outgoing));
        assert_eq!(
            call.to_string(),
            r#"faults {"partition":{"peers":[2,3],"direction":"outgoing"},"pause":false,"clockSkewMs":0}"#
        );
        assert_eq!(AdminCall::heal(), AdminCall::Faults(FaultSet::default()));
    }

    #[test]
    fn only_a_callers_mistake_stops_the_retries() {
        let rejected = |status| MemberError::Rejected {
            target: "t".into(),
            status,
            message: String::new(),
            current: None,
        };
        assert!(!not_now(&rejected(400)));
        assert!(not_now(&rejected(409)));
        let gone = MemberError::Unavailable {
            target: "t".into(),
            message: String::new(),
        };
        assert!(not_now(&gone));
    }
}
