//! The words a mode taking the Raft membership steps reports them in.

use caplab_api::status::{Replication as Mode, Status};

/// How a mode taking the Raft steps names its roles in what it reports: Raft's learners and
/// voters, or 2pc's participants (a 2pc member takes `add-learner` as "add this participant"
/// and reports the participants as its voters).
pub struct Roles {
    /// A member on its way in: `learner`, `participant`.
    pub joining: &'static str,
    /// A member that counts: `voter`, `participant`.
    pub one: &'static str,
    /// The members that count: `voters`, `participants`.
    pub all: &'static str,
    /// What a membership change must keep: `quorum`, a majority of the participants.
    pub quorum: &'static str,
    /// Does a joining member count only once promoted (Raft: learner, then voter), or at
    /// once (2pc)?
    pub promotes: bool,
}

impl Roles {
    /// Raft's words.
    pub const RAFT: Roles = Roles {
        joining: "learner",
        one: "voter",
        all: "voters",
        quorum: "quorum",
        promotes: true,
    };
    /// 2pc's words.
    pub const TWOPC: Roles = Roles {
        joining: "participant",
        one: "participant",
        all: "participants",
        quorum: "a majority of the participants answering",
        promotes: false,
    };

    /// The words of the mode `st` (a member's status, the leader's where steps are taken)
    /// reports: the one source of both the pure steps' and the controller's words.
    pub fn of(st: &Status) -> &'static Roles {
        match st.engine.replication {
            Mode::TwoPc => &Roles::TWOPC,
            _ => &Roles::RAFT,
        }
    }
}
