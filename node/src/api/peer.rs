//! The peer API: Raft RPCs and operations forwarded by followers (member-to-member, through
//! the fault layer), and the admin API used by the operator. Everything here requires the
//! bearer token; status, metrics and health are open as on the client port.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use caplab_api::admin::{
    self, Ack, InitRequest, MemberEntry, PeersRequest, PeersView, PromoteRequest, TransferRequest,
    VotersRequest,
};
use caplab_api::faults::FaultsView;
use caplab_api::kv::ReadRequest;
use caplab_api::paths;
use caplab_api::trace::{MESSAGE_HEADER, SENT_HEADER};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{observability_routes, value_reply};
use super::error::ApiError;
use super::{json_body, json_by_default};
use crate::election::{Election, LeaderSyncing, PreVoteRequest};
use crate::faults::{Direction, FaultSet, Verdict};
use crate::identity::{PeerAddr, INCARNATION_HEADER};
use crate::member::{Consistency, Engine, Member, Reply};
use crate::network::{Relayed, FROM_HEADER};
use crate::primary::ReplicateRequest;
use crate::raft_engine::RaftEngine;
use crate::trace::Heard;
use crate::types::{Command, NodeId, TypeConfig};

/// The largest peer message accepted (64 MiB): an AppendEntries may carry up to openraft's
/// 300 entries of up to 1,024 writes each as JSON, far over axum's 2 MiB default. Only
/// holders of the admin token get this far (`require_token` runs first).
const PEER_MESSAGE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

pub fn router(member: Arc<Member>) -> Router {
    let peer_messages = Router::new()
        .route(paths::RAFT_APPEND, post(append))
        .route(paths::RAFT_VOTE, post(vote))
        .route(paths::RAFT_PRE_VOTE, post(pre_vote))
        .route(paths::RAFT_LEADER_SYNCING, post(leader_syncing))
        .route(paths::RAFT_SNAPSHOT, post(snapshot))
        .route(paths::FORWARD_WRITE, post(forwarded_write))
        .route(paths::FORWARD_READ, post(forwarded_read))
        .route(paths::REPLICATE, post(replicate))
        .route(paths::EPOCH, post(epoch))
        .merge(super::quorum::routes())
        .merge(super::twopc::routes())
        .layer(DefaultBodyLimit::max(PEER_MESSAGE_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            member.clone(),
            incoming_faults,
        ));
    let admin = Router::new()
        .route(paths::ADMIN_INIT, post(init))
        .route(paths::ADMIN_LEARNERS, post(add_learner))
        .route(paths::ADMIN_VOTERS, put(set_voters).post(set_voters))
        .route(paths::ADMIN_TRANSFER_LEADER, post(transfer_leader))
        .route(paths::ADMIN_PROMOTE, post(promote))
        .route(paths::ADMIN_PRIMARY, put(follow))
        .route(paths::ADMIN_PEERS, put(set_peers).get(get_peers))
        .route(paths::ADMIN_FAULTS, put(set_faults).get(get_faults))
        .merge(super::twopc::admin_routes());
    // The token is checked before the identity headers, so that nobody without it learns
    // the member's id or incarnation or moves its misdirected-message counter.
    peer_messages
        .merge(admin)
        .fallback(super::no_such_route)
        .method_not_allowed_fallback(super::wrong_method)
        .layer(middleware::from_fn_with_state(
            member.clone(),
            check_identity,
        ))
        .layer(middleware::from_fn_with_state(
            member.clone(),
            require_token,
        ))
        .merge(observability_routes())
        .layer(middleware::from_fn(json_by_default))
        .with_state(member)
}

/// Refuses (421) any request whose identity headers name another cluster, member or
/// incarnation, and stamps every answer with this member's incarnation so that a sender can
/// pin it.
async fn check_identity(
    State(member): State<Arc<Member>>,
    request: Request,
    next: Next,
) -> Response {
    let identity = &member.peers.identity;
    let mut response = match identity.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(misdirected) => {
            let sender = request.headers().get(FROM_HEADER).cloned();
            tracing::warn!(
                reason = misdirected.kind.reason(),
                from = ?sender,
                path = %request.uri().path(),
                "refused a message meant for another member: {misdirected}"
            );
            member.metrics.count_misdirected(misdirected.kind);
            ApiError::Misdirected(misdirected).into_response()
        }
    };
    if let Ok(value) = identity.incarnation.as_str().parse() {
        response.headers_mut().insert(INCARNATION_HEADER, value);
    }
    response
}

fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare in constant time so the token cannot be guessed byte by byte.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn require_token(
    State(member): State<Arc<Member>>,
    request: Request,
    next: Next,
) -> Response {
    if token_matches(request.headers(), &member.peers.token) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// Incoming half of the fault layer: a paused member holds peer messages; a partition or loss
/// towards the sender drops them (the sender sees the link as unreachable).
async fn incoming_faults(
    State(member): State<Arc<Member>>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(e) = member.gate(member.deadline()).await {
        return ApiError::from(e).into_response();
    }
    if let Some(sender) = sending_member(request.headers()) {
        let dropped = member.faults.filter(sender, Direction::Incoming).await == Verdict::Drop;
        record_received(&member, sender, &request, dropped);
        if dropped {
            return ApiError::NotApplied(format!(
                "message from member {sender} dropped by an injected fault"
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// Records a peer message in the member's trace, with the number and send time its
/// headers carry.
fn record_received(member: &Member, sender: NodeId, request: &Request, dropped: bool) {
    let header =
        |name: &str| -> Option<u64> { request.headers().get(name)?.to_str().ok()?.parse().ok() };
    let heard = Heard {
        from: sender,
        to: member.peers.id,
        number: header(MESSAGE_HEADER),
        sent_ms: header(SENT_HEADER),
    };
    let path = request.uri().path();
    member
        .peers
        .trace
        .received(&member.faults, heard, path, dropped);
}

/// Runs one Raft RPC; its result (including Raft's own errors) travels back as JSON.
async fn raft_rpc<Req, Resp, E, Fut>(
    member: &Member,
    body: Result<Json<Req>, JsonRejection>,
    call: impl FnOnce(&RaftEngine, Req) -> Fut,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
    Fut: std::future::Future<Output = Result<Resp, E>>,
{
    let Engine::Raft(engine) = &member.engine else {
        return ApiError::BadRequest("this member does not run Raft".into()).into_response();
    };
    match json_body(body) {
        Ok(request) => Json(call(engine, request).await).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn append(
    State(m): State<Arc<Member>>,
    body: Result<Json<openraft::raft::AppendEntriesRequest<TypeConfig>>, JsonRejection>,
) -> Response {
    raft_rpc(&m, body, |engine, r| engine.append_entries(r)).await
}

async fn vote(
    State(m): State<Arc<Member>>,
    body: Result<Json<openraft::raft::VoteRequest<NodeId>>, JsonRejection>,
) -> Response {
    if let Engine::Raft(engine) = &m.engine {
        if is_blank(engine) {
            return ApiError::NotApplied(
                "this member has not been initialised or added to a cluster: it grants no vote"
                    .into(),
            )
            .into_response();
        }
    }
    raft_rpc(&m, body, |engine, r| engine.vote(r)).await
}

/// No membership and an empty log: a member never initialised or added (or whose data was
/// wiped). Its vote would count for a log it never saw, so it gives none; the sender takes
/// the error as a refusal.
fn is_blank(engine: &RaftEngine) -> bool {
    let metrics = engine.raft.metrics();
    let m = metrics.borrow();
    m.last_log_index.is_none() && m.membership_config.membership().nodes().next().is_none()
}

/// Would this member vote for the candidate? (Changes nothing here; see `election/`.)
async fn pre_vote(
    State(m): State<Arc<Member>>,
    body: Result<Json<PreVoteRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(body)?;
    Ok(Json(election(&m)?.answer_pre_vote(&request)).into_response())
}

/// The leader's log is in a long sync: its followers count that as hearing from it.
async fn leader_syncing(
    State(m): State<Arc<Member>>,
    body: Result<Json<LeaderSyncing>, JsonRejection>,
) -> Result<Response, ApiError> {
    let notice = json_body(body)?;
    Ok(Json(election(&m)?.leader_syncing(&notice)).into_response())
}

/// The election control of a Raft member; 400 on a member of another mode.
fn election(m: &Member) -> Result<&Election, ApiError> {
    match &m.engine {
        Engine::Raft(engine) => Ok(&engine.election),
        _ => Err(ApiError::BadRequest("this member does not run Raft".into())),
    }
}

async fn snapshot(
    State(m): State<Arc<Member>>,
    body: Result<Json<openraft::raft::InstallSnapshotRequest<TypeConfig>>, JsonRejection>,
) -> Response {
    raft_rpc(&m, body, |engine, r| {
        let raft = engine.raft.clone();
        async move { raft.install_snapshot(r).await }
    })
    .await
}

fn reply(key: &str, result: Result<Reply, ApiError>) -> Response {
    match result {
        Ok(Reply::Value(value)) => value_reply(key, value),
        Ok(Reply::Forwarded(f)) => f.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn forwarded_write(
    State(m): State<Arc<Member>>,
    body: Result<Json<Command>, JsonRejection>,
) -> Response {
    match json_body(body) {
        Ok(command) => {
            let key = command.key().to_string();
            reply(&key, m.write(command, false).await.map_err(ApiError::from))
        }
        Err(e) => e.into_response(),
    }
}

async fn forwarded_read(
    State(m): State<Arc<Member>>,
    body: Result<Json<ReadRequest>, JsonRejection>,
) -> Response {
    match json_body(body) {
        Ok(r) => reply(
            &r.key,
            m.read(&r.key, Consistency::Linearizable, false)
                .await
                .map_err(ApiError::from),
        ),
        Err(e) => e.into_response(),
    }
}

/// Refuses (400) an address book with id 0, an address that is not `host:port`, or two
/// members at one address.
fn validate_members(members: &BTreeMap<NodeId, PeerAddr>) -> Result<(), ApiError> {
    admin::validate_members(members).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn done(forwarded: Option<Relayed>) -> Response {
    match forwarded {
        Some(f) => f.into_response(),
        None => Json(Ack::OK).into_response(),
    }
}

/// The sending member's id, when a member (not a tool or the operator, which send `0`) sent
/// the request.
fn sending_member(headers: &HeaderMap) -> Option<NodeId> {
    headers
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok())
        .filter(|id| *id != 0)
}

async fn init(
    State(m): State<Arc<Member>>,
    headers: HeaderMap,
    body: Result<Json<InitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let InitRequest { members } = json_body(body)?;
    validate_members(&members)?;
    m.initialize(members, sending_member(&headers).is_some())
        .await?;
    Ok(done(None))
}

/// A member entry (`{"id", "addr"}`) whose address is valid.
fn member_entry(body: Result<Json<MemberEntry>, JsonRejection>) -> Result<MemberEntry, ApiError> {
    let entry = json_body(body)?;
    validate_members(&BTreeMap::from([(entry.id, entry.addr.clone())]))?;
    Ok(entry)
}

async fn add_learner(
    State(m): State<Arc<Member>>,
    body: Result<Json<MemberEntry>, JsonRejection>,
) -> Result<Response, ApiError> {
    let MemberEntry { id, addr } = member_entry(body)?;
    Ok(done(m.add_learner(id, addr).await?))
}

async fn set_voters(
    State(m): State<Arc<Member>>,
    body: Result<Json<VotersRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let VotersRequest { voters } = json_body(body)?;
    Ok(done(m.set_voters(voters).await?))
}

async fn transfer_leader(
    State(m): State<Arc<Member>>,
    body: Result<Json<TransferRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let TransferRequest { to } = json_body(body)?;
    let epoch = m.transfer_leader(to).await?;
    Ok(Json(Ack::with_epoch(epoch)).into_response())
}

async fn replicate(
    State(m): State<Arc<Member>>,
    body: Result<Json<ReplicateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(m.replicate(json_body(body)?).await?).into_response())
}

/// The epoch and primary this member knows; asked by a primary fenced after a restart.
async fn epoch(State(m): State<Arc<Member>>) -> Result<Response, ApiError> {
    Ok(Json(m.epoch_view().await?).into_response())
}

async fn promote(
    State(m): State<Arc<Member>>,
    body: Option<Json<PromoteRequest>>,
) -> Result<Response, ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let epoch = m.promote(request.epoch).await?;
    Ok(Json(Ack::with_epoch(epoch)).into_response())
}

async fn follow(
    State(m): State<Arc<Member>>,
    body: Result<Json<MemberEntry>, JsonRejection>,
) -> Result<Response, ApiError> {
    let MemberEntry { id, addr } = member_entry(body)?;
    m.follow(id, addr).await?;
    Ok(done(None))
}

async fn set_peers(
    State(m): State<Arc<Member>>,
    body: Result<Json<PeersRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let PeersRequest { peers } = json_body(body)?;
    validate_members(&peers)?;
    m.peers.addresses.replace(peers);
    Ok(get_peers(State(m)).await)
}

/// The address book and the incarnations known (given or pinned).
async fn get_peers(State(m): State<Arc<Member>>) -> Response {
    Json(PeersView {
        peers: m.peers.addresses.all(),
        incarnations: m.peers.addresses.incarnations(),
    })
    .into_response()
}

async fn set_faults(
    State(m): State<Arc<Member>>,
    body: Result<Json<FaultSet>, JsonRejection>,
) -> Result<Response, ApiError> {
    m.set_faults(json_body(body)?).await?;
    Ok(get_faults(State(m)).await)
}

async fn get_faults(State(m): State<Arc<Member>>) -> Response {
    let view = FaultsView {
        faults: m.faults.current(),
        counters: m.faults.counters(),
    };
    // Through a JSON value, whose keys are sorted: the bytes this answer has always had.
    match serde_json::to_value(view) {
        Ok(sorted) => Json(sorted).into_response(),
        Err(e) => ApiError::Unknown(format!("cannot encode the fault set: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token() {
        let mut headers = HeaderMap::new();
        assert!(!token_matches(&headers, "s3cret"));
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(token_matches(&headers, "s3cret"));
        assert!(!token_matches(&headers, "s3cre"));
    }
}
