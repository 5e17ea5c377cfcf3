//! The `caplab` binary's contract: exit codes and messages of `check`, `report` output, and
//! `kv`/`status` against a real single member.

mod common;

use std::path::Path;

use caplab_checker::generate::{generate, GenConfig};
use caplab_checker::{History, Op, Status};
use common::{caplab, check, report, run};

fn write_history(dir: &Path, name: &str, history: &History) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, history.to_json()).expect("write history");
    path
}

fn generated() -> History {
    generate(&GenConfig {
        keys: 3,
        processes: 5,
        operations: 2_000,
        unknown_rate: 0.05,
        fail_rate: 0.05,
        seed: 3,
        ..GenConfig::default()
    })
}

fn corrupted() -> (History, usize) {
    let mut history = generated();
    let middle = history.end_time() / 2;
    let victim = history
        .entries
        .iter()
        .position(|e| {
            e.status == Status::Ok && matches!(e.op, Op::Read { .. }) && e.invoke > middle
        })
        .expect("a late ok read");
    history.entries[victim].op = Op::Read { output: Some(-5) };
    (history, victim)
}

#[test]
fn check_exits_0_for_a_linearizable_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_history(dir.path(), "ok.json", &generated());
    let out = check(&path);
    let stdout = out.stdout;
    assert_eq!(out.code, Some(0), "{stdout}");
    for key in ["k0", "k1", "k2"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(key) && l.ends_with("linearizable")),
            "{stdout}"
        );
    }
}

#[test]
fn check_exits_1_and_names_the_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (history, victim) = corrupted();
    let path = write_history(dir.path(), "bad.json", &history);
    let out = check(&path);
    let stdout = out.stdout;
    assert_eq!(out.code, Some(1), "{stdout}");
    assert!(stdout.contains("NOT linearizable"), "{stdout}");
    assert!(stdout.contains(&format!("#{victim} ")), "{stdout}");
    assert!(stdout.contains("r→-5"), "{stdout}");

    let json = run(caplab().arg("check").arg("--json").arg(&path));
    assert_eq!(json.code, Some(1));
    let verdicts: serde_json::Value = serde_json::from_str(&json.stdout).expect("json report");
    let flagged = verdicts["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["verdict"] == "not-linearizable")
        .expect("a violating key");
    let stuck = flagged["stuck"].as_u64().expect("stuck");
    let concurrent: Vec<u64> = flagged["concurrent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(stuck == victim as u64 || concurrent.contains(&(victim as u64)));

    let html_path = dir.path().join("report.html");
    let html = report(&path, &html_path, None);
    assert!(html.contains("NOT linearizable"));
    assert!(
        html.contains(&format!("violation\" data-entry=\"{stuck}\"")),
        "stuck op not highlighted"
    );
    for p in history.processes() {
        assert!(html.contains(&format!("data-process=\"{p}\"")));
    }
}

#[test]
fn check_exits_2_with_a_one_line_reason_on_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("malformed.json");
    std::fs::write(
        &path,
        r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":0,"complete":5,"status":"ok"},
            {"process":1,"type":"read","key":"x","invoke":0,"complete":5,"status":"ok"}]"#,
    )
    .expect("write");
    let out = check(&path);
    let stderr = out.stderr;
    assert_eq!(out.code, Some(2));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("entry 1") && stderr.contains("output"),
        "{stderr}"
    );

    let out = check(&dir.path().join("missing.json"));
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("missing.json"));
}

#[test]
fn check_exits_2_when_the_search_runs_out_of_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 24 fully concurrent writes and an impossible read: far too many orders for no time.
    let mut entries: Vec<String> = (0..24)
        .map(|p| format!(r#"{{"process":{p},"type":"write","key":"x","value":{},"invoke":0,"complete":1000,"status":"ok"}}"#, p + 1))
        .collect();
    entries.push(r#"{"process":99,"type":"read","key":"x","output":-1,"invoke":2000,"complete":2100,"status":"ok"}"#.into());
    let path = dir.path().join("hard.json");
    std::fs::write(&path, format!("[{}]", entries.join(","))).expect("write");
    let out = run(caplab().args(["check", "--timeout-secs", "0"]).arg(&path));
    let stdout = out.stdout;
    assert_eq!(out.code, Some(2), "{stdout}");
    assert!(stdout.contains("unknown"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_and_status_against_a_member() {
    let c = common::start(1, &[]).await;
    c.wait_for_leader_among(&[1], None).await;
    let addr = c.members[&1].client.clone();
    let run = |args: &[&str]| {
        let out = run(caplab().args(args).args(["--addr", &addr]));
        (out.code, out.stdout, out.stderr)
    };
    let (code, stdout, _) = run(&["kv", "put", "demo", "5"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"value\":5"), "{stdout}");
    let (code, stdout, _) = run(&["kv", "get", "demo"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"value\":5"), "{stdout}");
    let (code, stdout, _) = run(&["kv", "cas", "demo", "5", "-7"]);
    assert_eq!(code, Some(0), "{stdout}");
    let (code, _, stderr) = run(&["kv", "cas", "demo", "5", "9"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("409") && stderr.contains("-7"), "{stderr}");
    let (code, stdout, _) = run(&["kv", "get", "demo", "--consistency", "local"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"value\":-7"), "{stdout}");

    let (code, stdout, _) = run(&["status"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("ADDRESS"), "{stdout}");
    assert!(stdout.contains("leader"), "{stdout}");
    // An address nobody answers on makes the table say so and the exit code 1.
    let out = common::run(caplab().args(["status", "--addr", &format!("{addr},127.0.0.1:1")]));
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("unreachable"));
}
