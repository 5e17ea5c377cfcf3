//! Runs real `caplab-node` members on loopback ports (the shared `caplab-testkit` harness) and
//! the `caplab` binary against them.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use caplab_checker::History;
pub use caplab_testkit::Cluster;
use caplab_testkit::Harness;

pub const TOKEN: &str = "cli-test-token";

/// Generous: the CI machine has two busy cores.
pub const DEADLINE: Duration = Duration::from_secs(90);

pub fn harness() -> Harness {
    Harness {
        node_binary: caplab_testkit::workspace_node_binary(),
        token: TOKEN,
        deadline: DEADLINE,
        http_timeout: Duration::from_secs(10),
    }
}

/// Starts `n` members (ids 1..=n) with `extra_args` and initialises them as one cluster.
pub async fn start(n: u64, extra_args: &[&str]) -> Cluster {
    Cluster::start(harness(), n, extra_args).await
}

pub fn caplab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caplab"))
}

/// Polls `probe` until it yields a value or [`DEADLINE`] passes (then panics naming `what`).
pub async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    caplab_testkit::wait_until(DEADLINE, what, probe).await
}

/// Sends SIGINT to a child (the workload writes its history and exits on it).
pub fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");
}

/// Waits for a child to exit, killing it and failing the test past [`DEADLINE`].
pub async fn wait_for_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} did not exit within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a finished command printed.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion and collects its exit code and output.
pub fn run(cmd: &mut Command) -> Ran {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run caplab");
    Ran {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `caplab check <history>`.
pub fn check(history: &Path) -> Ran {
    run(caplab().arg("check").arg(history))
}

/// `caplab report <history> -o <page> [--events <events>]`, which must succeed; returns the
/// page written.
pub fn report(history: &Path, page: &Path, events: Option<&Path>) -> String {
    let mut cmd = caplab();
    cmd.arg("report").arg(history).arg("-o").arg(page);
    if let Some(events) = events {
        cmd.arg("--events").arg(events);
    }
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "caplab report failed: {}", out.stderr);
    std::fs::read_to_string(page).expect("report written")
}

/// A `caplab workload` running against a cluster, writing its history into the cluster's
/// directory (`history.json`, its log in `workload.log`).
pub struct Workload {
    child: Child,
    pub history_path: PathBuf,
    log_path: PathBuf,
}

impl Workload {
    /// Starts `caplab workload --addr <every member> <args…> --out <dir>/history.json`.
    pub fn start(c: &Cluster, args: &[&[&str]]) -> Workload {
        let dir = c.dir.path();
        let history_path = dir.join("history.json");
        let log_path = dir.join("workload.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let child = caplab()
            .args(["workload", "--addr", &c.client_addrs()])
            .args(args.concat())
            .arg("--out")
            .arg(&history_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn caplab workload");
        Workload {
            child,
            history_path,
            log_path,
        }
    }

    /// Interrupts the workload, which must exit successfully; returns the history it wrote
    /// and its log.
    pub async fn stop(mut self) -> (History, String) {
        interrupt(&self.child);
        let status = wait_for_exit(&mut self.child, "the workload").await;
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        assert!(status.success(), "workload failed: {log}");
        let text = std::fs::read_to_string(&self.history_path).expect("history written");
        let history = History::from_json(&text).expect("a valid history");
        (history, log)
    }
}
