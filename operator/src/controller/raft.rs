//! Raft membership: bootstrap, learners promoted to voters, voters removed before their pod.

use super::observe::Observation;
use super::{Pass, Stepped};
use crate::member_client::AdminAuth;
use crate::membership::{self, Observed, Roles, Step};

impl Pass<'_> {
    /// The next Raft membership step ([`membership::next_raft_step`]), taken.
    pub(super) async fn raft_membership(&self, seen: &Observation, auth: &AdminAuth) -> Stepped {
        let step = membership::next_raft_step(self.replicas, &seen.members, self.prev.bootstrapped);
        Stepped {
            converging: step.converging(),
            done: self.raft_step(seen, auth, step).await,
        }
    }

    /// Takes one Raft membership step; says what was done (or why nothing), `None` when stable.
    /// (2pc takes the same steps: [`super::twopc`].)
    pub(super) async fn raft_step(
        &self,
        seen: &Observation,
        auth: &AdminAuth,
        step: Step,
    ) -> Option<String> {
        let observed = &seen.members;
        let at = |o: u32| observed.iter().find(|m| m.ordinal == o);
        let names = |ids: &[u64]| membership::labels_of(observed, ids);
        let leader = seen.leader.as_ref();
        let leader_to = leader.and_then(Observed::recipient);
        let members = &self.ctx.members;
        // The words of the mode the leader reports, where the pure step took its own from
        // (one source): every step naming roles is taken through the leader.
        let roles = seen.leader_status.as_ref().map_or(&Roles::RAFT, Roles::of);
        match step {
            Step::Stable => None,
            Step::Wait(why) => Some(why),
            Step::Bootstrap { ordinal, members } => {
                let ids: Vec<u64> = members.keys().copied().collect();
                let note = format!("initialised Raft with voters {}", names(&ids));
                self.bootstrap(at(ordinal)?, auth, &members, note).await
            }
            Step::AddLearner { ordinal, id, entry } => {
                let to = leader_to?;
                let m = at(ordinal)?;
                match members.add_learner(to, auth, id, &entry).await {
                    Ok(()) => {
                        let note = format!("{} joined as a {}", m.label(), roles.joining);
                        self.event(false, "MemberAdded", note).await;
                        Some(format!("added {} {}", roles.joining, m.name))
                    }
                    Err(e) => self.member_failed(leader?, "add-learner", e),
                }
            }
            Step::SetVoters {
                voters,
                added,
                removed,
            } => {
                let to = leader_to?;
                match members.set_voters(to, auth, &voters).await {
                    Ok(()) => {
                        let (one, all) = (roles.one, names(&voters));
                        let set = format!("{} {all}", roles.all);
                        if !added.is_empty() {
                            let note = if roles.promotes {
                                format!("promoted {} to {one}; {set}", names(&added))
                            } else {
                                format!("added {} to the {}; {set}", names(&added), roles.all)
                            };
                            self.event(false, "MemberPromoted", note).await;
                        }
                        if !removed.is_empty() {
                            let note = format!("removed {one} {}; {set}", names(&removed));
                            self.event(false, "MemberRemoved", note).await;
                        }
                        Some(format!("{} now {all}", roles.all))
                    }
                    Err(e) => self.member_failed(leader?, "set-voters", e),
                }
            }
            Step::TransferLeader {
                to,
                fallback_voters,
            } => {
                self.move_leader_out(observed, leader?, auth, to, &fallback_voters)
                    .await
            }
            Step::DeletePod { ordinal } => self.delete_member_pod(ordinal).await,
        }
    }

    /// Takes the leader out of the voters before its ordinal goes: asks it to hand leadership
    /// to `target`, and where the member cannot (openraft 0.9 has no leadership transfer: the
    /// member answers 501), removes it from the voters directly (`fallback_voters`); it steps
    /// down once that change commits.
    async fn move_leader_out(
        &self,
        observed: &[Observed],
        leader: &Observed,
        auth: &AdminAuth,
        target: u64,
        fallback_voters: &[u64],
    ) -> Option<String> {
        let to = leader.recipient()?;
        let members = &self.ctx.members;
        let target_name = membership::label_of(observed, target);
        match members.transfer_leader(to, auth, target).await {
            Ok(()) => {
                let note = format!(
                    "moving leadership from {} to {target_name} before its removal",
                    leader.label()
                );
                self.event(false, "LeaderTransfer", note).await;
                Some(format!("transferring leadership to {target_name}"))
            }
            Err(e) if matches!(e.status(), Some(501) | Some(404)) => {
                match members.set_voters(to, auth, fallback_voters).await {
                    Ok(()) => {
                        let note = format!(
                            "removed voter {} (the leader); voters {}",
                            leader.label(),
                            membership::labels_of(observed, fallback_voters)
                        );
                        self.event(false, "MemberRemoved", note).await;
                        Some(format!("removed the leader {}", leader.name))
                    }
                    Err(e) => self.member_failed(leader, "set-voters", e),
                }
            }
            Err(e) => self.member_failed(leader, "transfer-leader", e),
        }
    }
}
