//! Round trips against answers taken from a real `caplab-node` (curl against a Raft member
//! and an async member): each parses into the wire type and serialises back to the same
//! bytes, so a change to a type that would change what members send fails here.

use caplab_api::admin::{Ack, InitRequest, PeersView};
use caplab_api::error::ErrorBody;
use caplab_api::faults::{FaultSet, FaultsView};
use caplab_api::kv::ValueReply;
use caplab_api::status::{Replication, Role, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parses `sample` as `T` and checks it serialises back to exactly `sample`.
fn round_trip<T: DeserializeOwned + Serialize>(sample: &str) -> T {
    let value: T = serde_json::from_str(sample).unwrap_or_else(|e| panic!("{e}: {sample}"));
    assert_eq!(serde_json::to_string(&value).unwrap(), sample);
    value
}

/// Like [`round_trip`], for answers the member builds through a JSON value (keys sorted).
fn round_trip_sorted<T: DeserializeOwned + Serialize>(sample: &str) -> T {
    let value: T = serde_json::from_str(sample).unwrap_or_else(|e| panic!("{e}: {sample}"));
    let sorted = serde_json::to_value(&value).unwrap();
    assert_eq!(serde_json::to_string(&sorted).unwrap(), sample);
    value
}

const RAFT_LEADER: &str = r#"{"id":1,"incarnation":"60bba55118befe94","clusterId":"ns/demo/uid","voter":true,"fenced":false,"replication":"raft","role":"leader","term":1,"leader":1,"commitIndex":3,"appliedIndex":3,"lastLogIndex":3,"snapshotIndex":0,"voters":[1,2],"learners":[],"peers":{"2":{"matchIndex":3,"lagEntries":0,"lastContactMs":12}},"misdirectedMessages":1,"paused":false,"clockMs":1796003689125,"faults":{"pause":false,"clockSkewMs":0},"faultCounters":{}}"#;

const ASYNC_PRIMARY: &str = r#"{"id":2,"incarnation":"4fb19f34ca8f6755","clusterId":null,"voter":true,"fenced":false,"replication":"async","role":"primary","term":1,"leader":2,"commitIndex":1,"appliedIndex":1,"lastLogIndex":1,"snapshotIndex":0,"voters":[2,3],"learners":[],"peers":{"3":{"matchIndex":1,"lagEntries":0,"lagMs":0,"lastContactMs":null}},"discardedWrites":0,"misdirectedMessages":0,"paused":false,"clockMs":1796003689167,"faults":{"partition":{"peers":[3],"direction":"outgoing"},"pause":false,"clockSkewMs":0},"faultCounters":{"3":{"dropped":4,"delayed":0,"lost":0}}}"#;

#[test]
fn statuses() {
    let raft: Status = round_trip(RAFT_LEADER);
    assert_eq!(raft.engine.role, Role::Leader);
    assert!(raft.is_leader());
    assert_eq!(raft.engine.peers[&2].match_index, Some(3));
    assert_eq!(raft.incarnation.as_str(), "60bba55118befe94");
    let primary: Status = round_trip(ASYNC_PRIMARY);
    assert_eq!(primary.engine.replication, Replication::Async);
    assert_eq!(primary.engine.discarded_writes, Some(0));
    assert_eq!(primary.fault_counters[&3].dropped, 4);
}

const QUORUM_REPLICA: &str = r#"{"id":1,"incarnation":"60bba55118befe94","clusterId":null,"voter":true,"fenced":false,"replication":"quorum","role":"replica","term":0,"leader":null,"commitIndex":0,"appliedIndex":0,"lastLogIndex":0,"snapshotIndex":0,"voters":[1,2,3],"learners":[],"peers":{},"misdirectedMessages":0,"paused":false,"clockMs":1796003689125,"faults":{"pause":false,"clockSkewMs":0},"faultCounters":{},"quorum":{"n":3,"readQuorum":2,"writeQuorum":2,"overlapping":true,"replicas":{"1":{"reachable":true,"lastContactMs":0},"2":{"reachable":false,"lastContactMs":null,"lastError":"connection refused"}},"antiEntropyIntervalMs":1000,"lwwLostWrites":{"2":1},"readRepairs":3,"antiEntropyRepairedKeys":0,"lastConvergenceMs":null}}"#;

#[test]
fn a_quorum_members_status() {
    let status: Status = round_trip(QUORUM_REPLICA);
    assert_eq!(status.engine.role, Role::Replica);
    assert_eq!(status.engine.replication, Replication::Quorum);
    let quorum = status.quorum.expect("the quorum section");
    assert!(!quorum.replicas[&2].reachable);
    assert_eq!(quorum.counters.lww_lost_writes[&2], 1);
}

#[test]
fn an_older_members_status_still_reads() {
    // Before snapshotIndex, fenced, misdirectedMessages, clockMs and faultCounters.
    let old = r#"{"id":1,"incarnation":"60bba55118befe94","voter":true,"replication":"raft","role":"follower","term":2,"leader":3,"commitIndex":3,"appliedIndex":3,"lastLogIndex":3,"voters":[1,2,3],"learners":[],"peers":{},"paused":false,"faults":{}}"#;
    let status: Status = serde_json::from_str(old).unwrap();
    assert_eq!(
        (status.engine.role, status.engine.leader),
        (Role::Follower, Some(3))
    );
    assert_eq!(status.engine.snapshot_index, 0);
}

#[test]
fn register_answers() {
    let reply: ValueReply = round_trip(r#"{"key":"x","value":5}"#);
    assert_eq!(reply.value, 5);
    let mismatch: ErrorBody =
        round_trip(r#"{"current":5,"error":"compare-and-set failed: the current value is 5"}"#);
    assert_eq!(mismatch.current, Some(5));
    round_trip::<ErrorBody>(
        r#"{"error":"member is paused by an injected fault","outcome":"not-applied"}"#,
    );
    round_trip::<ErrorBody>(
        r#"{"error":"unknown consistency \"eventual\": use linearizable or local"}"#,
    );
    round_trip::<ErrorBody>(
        r#"{"error":"this is member 1, not member 9: its address now belongs to another member","reason":"wrong-member"}"#,
    );
}

#[test]
fn admin_answers() {
    assert_eq!(round_trip::<Ack>(r#"{"ok":true}"#), Ack::OK);
    assert_eq!(round_trip::<Ack>(r#"{"epoch":1,"ok":true}"#).epoch, Some(1));
    let peers: PeersView = round_trip_sorted(
        r#"{"incarnations":{"2":"4fb19f34ca8f6755"},"peers":{"1":"127.0.0.1:18432","2":"127.0.0.1:18434"}}"#,
    );
    assert_eq!(peers.peers.len(), 2);
    let faults: FaultsView = round_trip_sorted(
        r#"{"counters":{},"faults":{"clockSkewMs":5,"delay":{"jitterMs":0,"latencyMs":1,"peers":[]},"pause":false}}"#,
    );
    assert_eq!(faults.faults.delay.map(|d| d.latency_ms), Some(1));
    round_trip_sorted::<FaultsView>(r#"{"counters":{},"faults":{"clockSkewMs":0,"pause":false}}"#);
}

#[test]
fn admin_bodies_in_both_address_forms() {
    let init: InitRequest = serde_json::from_str(
        r#"{"members":{"1":"127.0.0.1:7001","2":{"addr":"127.0.0.1:7002","incarnation":"4fb19f34ca8f6755"}}}"#,
    )
    .unwrap();
    assert_eq!(init.members[&1].incarnation(), None);
    assert_eq!(
        init.members[&2].incarnation().map(|i| i.as_str()),
        Some("4fb19f34ca8f6755")
    );
    assert!(serde_json::from_str::<FaultSet>(r#"{"pause":true,"extra":1}"#).is_err());
}
