//! The `caplab` binary's contract: exit codes and messages of `check` (0 linearizable, 1 not,
//! 2 unknown, 3 bad input or usage), `report` output, and `kv`/`status` against a real single
//! member.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

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
    // Statuses in the history's own words.
    assert!(stdout.contains("r→-5: ok; invoked at"), "{stdout}");
    assert!(
        !stdout.contains(" Ok ") && !stdout.contains(" Unknown "),
        "{stdout}"
    );

    let json = run(caplab().arg("check").arg("--json").arg(&path));
    assert_eq!(json.code, Some(1));
    let verdicts: serde_json::Value = serde_json::from_str(&json.stdout).expect("json report");
    assert_eq!(verdicts["verdict"], "not-linearizable", "{verdicts}");
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

/// `caplab check` with `history` on standard input.
fn check_stdin(args: &[&str], history: &str) -> common::Ran {
    let mut child = caplab()
        .arg("check")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn caplab check -");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(history.as_bytes())
        .expect("write the history");
    let out = child.wait_with_output().expect("caplab check -");
    common::Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_reads_standard_input_and_reports_the_verdict_in_json() {
    let out = check_stdin(&["--json"], &generated().to_json());
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("json report");
    assert_eq!(report["verdict"], "linearizable", "{report}");
    assert_eq!(report["keys"].as_array().map(Vec::len), Some(3));

    let out = check_stdin(&[], &corrupted().0.to_json());
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.trim_end().ends_with("NOT linearizable"));

    let out = check_stdin(&[], "[{");
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("standard input"), "{}", out.stderr);
}

#[test]
fn check_exits_3_with_a_one_line_reason_on_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "invalid.json",
            r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":0,"complete":5,"status":"ok"},
            {"process":1,"type":"read","key":"x","invoke":0,"complete":5,"status":"ok"}]"#,
            "entry 1",
        ),
        ("malformed.json", "[{\"process\": 0,", "not valid JSON"),
        ("shape.json", r#"{"ops": []}"#, "\"operations\""),
    ];
    for (name, text, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = check(&path);
        let stderr = out.stderr;
        assert_eq!(out.code, Some(3), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(name) && stderr.contains(needle), "{stderr}");
    }

    let out = check(&dir.path().join("missing.json"));
    assert_eq!(out.code, Some(3));
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("missing.json"));

    // Usage errors are bad input too (clap's own code would be 2, "unknown").
    for args in [
        &["check"][..],
        &["check", "--no-such-flag", "h.json"],
        &["check", "--timeout", "-1", "h.json"],
        &["frobnicate"],
    ] {
        let out = run(caplab().args(args));
        assert_eq!(out.code, Some(3), "{args:?}: {}", out.stderr);
    }
    assert_eq!(run(caplab().args(["check", "--help"])).code, Some(0));
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
    for deadline in [
        &["--timeout", "0.001"][..],
        &["--timeout", "0", "--total-timeout", "0.001"],
    ] {
        let out = run(caplab().arg("check").args(deadline).arg(&path));
        let stdout = out.stdout;
        assert_eq!(out.code, Some(2), "{deadline:?}: {stdout}");
        assert!(stdout.trim_end().ends_with("unknown"), "{stdout}");
    }
    let out = run(caplab()
        .args(["check", "--json", "--total-timeout", "0.001"])
        .arg(&path));
    assert_eq!(out.code, Some(2));
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("json report");
    assert_eq!(report["verdict"], "unknown", "{report}");
}

#[test]
fn check_timeout_0_means_no_deadline() {
    // Thousands of operations per key take more than a moment to search: a zero deadline
    // that meant "give up at once" would make this unknown.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_history(dir.path(), "ok.json", &generated());
    let out = run(caplab().args(["check", "--timeout", "0"]).arg(&path));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    // The old spelling of the flag still works.
    let out = run(caplab().args(["check", "--timeout-secs", "0"]).arg(&path));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn a_workload_against_members_that_are_not_ready_fails_after_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on: no member is ready.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let history = dir.path().join("history.json");
    let out = run(caplab()
        .args(["workload", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--ready-timeout", "1s", "--duration", "1", "-q", "--out"])
        .arg(&history));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let last = out.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("caplab: the cluster was not ready within 1s")
            && last.contains("0 of 1 members ready"),
        "{}",
        out.stderr
    );
    assert!(!history.exists(), "nothing is recorded");
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

/// Workload arguments that cannot work are refused before anything runs (exit 3, a first
/// line naming the argument):
/// no clients or keys, an address without a port, an --out that is a directory.
#[test]
fn workload_refuses_arguments_that_cannot_work_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().to_string_lossy().into_owned();
    for args in [
        &["--addr", "127.0.0.1:1", "--clients", "0"][..],
        &["--addr", "127.0.0.1:1", "--keys", "0"],
        &["--addr", "127.0.0.1"],
        &["--addr", "127.0.0.1:1", "--out", &out_dir],
    ] {
        let started = std::time::Instant::now();
        let out = run(caplab().arg("workload").args(args));
        assert_eq!(out.code, Some(3), "{args:?}: {}", out.stderr);
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("--clients")
                || first.contains("--keys")
                || first.contains("--addr")
                || first.contains("--out"),
            "the first line names the argument: {}",
            out.stderr
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{args:?} waited for the cluster before refusing"
        );
    }
}
