//! What a member refuses at its edges: flags that do not fit its mode (it exits with one line
//! before it touches its data directory) and requests too long to serve.

mod common;

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Runs `caplab-node` with `args` and `envs` (no other `CAPLAB_` variable) until it exits,
/// listening on ports the system picks: its exit code and stderr. Panics when it is still
/// running after [`common::DEADLINE`], i.e. when it accepted the flags.
async fn run_until_exit(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caplab-node"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CAPLAB_") {
            command.env_remove(name);
        }
    }
    command
        .args([
            "--client-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("CAPLAB_ADMIN_TOKEN", common::TOKEN)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(common::DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("caplab-node {args:?} {envs:?} is still running"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// Asserts that the member exited 1 with one line of stderr containing every one of `says`,
/// and left `data_dir` alone.
fn assert_refused(outcome: (Option<i32>, String), says: &[&str], data_dir: &Path) {
    let (code, stderr) = outcome;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for part in says {
        assert!(stderr.contains(part), "{part:?} missing in {stderr}");
    }
    assert!(!data_dir.exists(), "{} was created", data_dir.display());
}

#[tokio::test]
async fn a_read_lease_outside_raft_stops_the_member_before_it_touches_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["async", "sync", "quorum", "2pc"] {
        let dir = tmp.path().join(mode);
        let dir_arg = dir.to_string_lossy().into_owned();
        let args = ["--id", "1", "--replication", mode, "--data-dir", &dir_arg];
        let says = [
            "--read-lease-ms (CAPLAB_READ_LEASE_MS) applies only to --replication raft",
            "drop the flag",
        ];
        let with_flag = [&args[..], &["--read-lease-ms", "50"]].concat();
        assert_refused(run_until_exit(&with_flag, &[]).await, &says, &dir);
        let with_env = [("CAPLAB_READ_LEASE_MS", "0")];
        assert_refused(run_until_exit(&args, &with_env).await, &says, &dir);
    }
}

/// A Raft member takes the flag (here 0, the lease off) and serves writes and linearizable
/// reads with it. That a read without a lease confirms with a round, and that a cut-off leader
/// serves no stale read under its lease, are checked in `faults.rs` and `read_lease.rs`.
#[tokio::test(flavor = "multi_thread")]
async fn a_raft_member_takes_the_read_lease_flag() {
    let c = common::start_with(1, &["--read-lease-ms", "0"]).await;
    assert_eq!(c.put(1, "k", 1).await.0, 200);
    let (status, body) = c.get(1, "k", "linearizable").await;
    assert_eq!(
        (status, &body["value"]),
        (200, &serde_json::json!(1)),
        "{body}"
    );
}

/// A key of 20 KiB gets the JSON 400 naming the limit (256 bytes). A request line over
/// 64 KiB gets hyper's own 414, written by its HTTP/1 parser before any handler runs (so
/// without a JSON body: hyper has no hook for it); the member serves on.
#[tokio::test(flavor = "multi_thread")]
async fn keys_too_long_are_refused_and_the_member_keeps_serving() {
    let c = common::start(1).await;
    let m = &c.members[&1];
    let url = m.url(&format!("/v1/kv/{}", "k".repeat(20 * 1024)));
    let long = c.http.get(url).send().await.unwrap();
    assert_eq!(long.status().as_u16(), 400);
    let body: serde_json::Value = long.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert_eq!(message, "key is 20480 bytes long; the limit is 256");
    // reqwest refuses to send a URI this long: the request goes out by hand.
    let mut tcp = tokio::net::TcpStream::connect(&m.client).await.unwrap();
    let request = format!(
        "GET /v1/kv/{} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        "k".repeat(70_000),
        m.client
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(common::DEADLINE, tcp.read_to_end(&mut answer)).await;
    read.unwrap_or_else(|_| panic!("no answer to a 70,000-byte key"))
        .unwrap();
    let status_line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    assert_eq!(status_line, b"HTTP/1.1 414 URI Too Long");
    assert_eq!(c.put(1, "k", 1).await.0, 200);
}
