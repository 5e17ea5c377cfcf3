//! The operator's way to its members: [`MemberClient`] addresses a member by pod IP and makes
//! each call through [`caplab_api::MemberClient`], the member API's typed client (wire types,
//! paths, identity headers and the error contract all live in `caplab_api`).

use std::collections::BTreeMap;
use std::time::Duration;

use caplab_api::admin::Ack;
use caplab_api::client::Recipient as ApiRecipient;
use caplab_api::faults::FaultSet;
use caplab_api::identity::{Incarnation, PeerAddr};
use caplab_api::paths::{CLIENT_PORT, PEER_PORT};
use caplab_api::status::Status;
use caplab_api::NodeId;

pub use caplab_api::MemberError;

/// The identity every admin call carries: the admin token and the cluster id the members
/// were started with (`CAPLAB_CLUSTER_ID`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdminAuth {
    /// Bearer token.
    pub token: String,
    /// `<namespace>/<name>/<uid>` of the RegisterCluster.
    pub cluster: String,
}

/// The member an admin call is meant for: where it is and who it must be. A member that is
/// someone else answers 421 ([`MemberError::Misdirected`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipient<'a> {
    /// Pod IP.
    pub ip: &'a str,
    /// Member id.
    pub id: NodeId,
    /// The incarnation from the member's own `/v1/status`, when known.
    pub incarnation: Option<&'a Incarnation>,
}

/// An address book: member id -> where its peer port is, pinned to the incarnation that
/// answered there when known.
pub type AddressBook = BTreeMap<NodeId, PeerAddr>;

/// How long the leader may go without hearing from a member before the member counts as
/// cut off from the majority (heartbeats arrive every few hundred milliseconds).
pub const CONTACT_LIMIT_MS: u64 = 2_000;

/// As the leader (or primary) reporting `leader`: whether member `id` answered replication
/// within [`CONTACT_LIMIT_MS`] (the leader always hears itself).
pub fn hears_from(leader: &Status, id: NodeId) -> bool {
    leader.id == id
        || leader
            .engine
            .peers
            .get(&id)
            .and_then(|p| p.last_contact_ms)
            .is_some_and(|ms| ms < CONTACT_LIMIT_MS)
}

/// Talks to members by pod IP (2 s per call, 30 s for admin calls that wait for
/// replication: [`caplab_api::client::Timeouts`]' defaults).
#[derive(Clone)]
pub struct MemberClient {
    http: reqwest::Client,
    client_port: u16,
    peer_port: u16,
}

impl MemberClient {
    /// Builds the client; fails only when the TLS backend cannot be initialised.
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            http,
            client_port: CLIENT_PORT,
            peer_port: PEER_PORT,
        })
    }

    /// Overrides the ports the client connects to (default [`CLIENT_PORT`] for
    /// `/v1/status`, [`PEER_PORT`] for admin calls).
    ///
    /// For tests that stand in for members with local servers; production
    /// always uses the defaults. Only where requests go changes: the peer
    /// addresses the operator hands to members still name [`PEER_PORT`].
    pub fn with_ports(mut self, client_port: u16, peer_port: u16) -> Self {
        self.client_port = client_port;
        self.peer_port = peer_port;
        self
    }

    /// The member at `ip`, through the member API's client.
    fn at(&self, ip: &str) -> Result<caplab_api::MemberClient, MemberError> {
        let client = format!("{ip}:{}", self.client_port);
        let peer = format!("{ip}:{}", self.peer_port);
        caplab_api::MemberClient::at(self.http.clone(), &client, &peer)
    }

    /// The member `to`, for an admin call: the bearer token and the identity headers.
    fn admin(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
    ) -> Result<caplab_api::MemberClient, MemberError> {
        let recipient = ApiRecipient {
            cluster: Some(auth.cluster.clone()),
            member: Some(to.id),
            incarnation: to.incarnation.cloned(),
        };
        Ok(self
            .at(to.ip)?
            .with_token(auth.token.clone())
            .with_recipient(recipient))
    }

    /// `GET http://<ip>:8080/v1/status`.
    pub async fn status(&self, ip: &str) -> Result<Status, MemberError> {
        self.at(ip)?.status().await
    }

    /// `POST /v1/admin/init` (`members`: id -> entry, the receiver among them).
    pub async fn init(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        members: &AddressBook,
    ) -> Result<(), MemberError> {
        self.admin(to, auth)?.init(members).await.map(drop)
    }

    /// `PUT /v1/admin/peers`: the address book.
    pub async fn peers(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        peers: &AddressBook,
    ) -> Result<(), MemberError> {
        self.admin(to, auth)?.set_peers(peers).await.map(drop)
    }

    /// `POST /v1/admin/learners` (to the leader): adds member `id` at `entry`.
    pub async fn add_learner(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        id: NodeId,
        entry: &PeerAddr,
    ) -> Result<(), MemberError> {
        let member = self.admin(to, auth)?;
        member.add_learner(id, entry.clone()).await.map(drop)
    }

    /// `PUT /v1/admin/voters` (Raft voters; in the primary modes the member set every
    /// secondary of which receives the log, and which sync writes wait for).
    pub async fn set_voters(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        voters: &[NodeId],
    ) -> Result<(), MemberError> {
        let member = self.admin(to, auth)?;
        member.set_voters(voters.iter().copied()).await.map(drop)
    }

    /// `POST /v1/admin/transfer-leader`: a Raft member answers 501
    /// ([`MemberError::NotImplemented`]; openraft 0.9 has no leadership transfer).
    pub async fn transfer_leader(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        target: NodeId,
    ) -> Result<(), MemberError> {
        self.admin(to, auth)?
            .transfer_leader(target)
            .await
            .map(drop)
    }

    /// `PUT /v1/admin/faults`: the member's whole fault set.
    pub async fn faults(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        set: &FaultSet,
    ) -> Result<(), MemberError> {
        self.admin(to, auth)?.set_faults(set).await.map(drop)
    }

    /// `POST /v1/admin/promote` (primary modes); returns the epoch the member is primary of
    /// (`None` when its answer does not say).
    pub async fn promote(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
    ) -> Result<Option<u64>, MemberError> {
        let Ack { epoch, .. } = self.admin(to, auth)?.promote(None).await?;
        Ok(epoch)
    }

    /// `PUT /v1/admin/primary` (primary modes): follow member `primary` at `entry`.
    pub async fn set_primary(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        primary: NodeId,
        entry: &PeerAddr,
    ) -> Result<(), MemberError> {
        let member = self.admin(to, auth)?;
        member.follow(primary, entry.clone()).await.map(drop)
    }
}
