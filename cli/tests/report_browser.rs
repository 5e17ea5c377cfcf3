//! A report renders in headless Chromium (Debian's `chromium`): the DOM the browser builds lists
//! every process, marks the violating operation, shows the ladder and the anomaly sentences
//! with the operations involved highlighted, shades the fault window, and the page loads
//! nothing from the network.
//!
//! Without a Chromium the test fails when `CI=true` and is skipped (with a printed reason)
//! otherwise. `CAPLAB_CHROMIUM` names a browser binary explicitly.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::report;

fn find_chromium() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("CAPLAB_CHROMIUM") {
        return Some(PathBuf::from(explicit));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs `chromium --headless --dump-dom` on `page`; returns (DOM, stderr).
fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> (String, String) {
    let url = format!("file://{}", page.display());
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--enable-logging=stderr",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    // Drain both pipes on threads so a chatty browser cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        match child.try_wait().expect("waiting for chromium") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 120 s");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let dom = out.join().expect("stdout reader");
    let log = err.join().expect("stderr reader");
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    (dom, log)
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        let reason = "no chromium on PATH (install Debian's `chromium`, see hack/install-deps.sh, \
                      or set CAPLAB_CHROMIUM)";
        if in_ci() {
            panic!("CI=true but {reason}");
        }
        eprintln!("SKIPPED report_renders_in_headless_chromium: {reason}");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // A stale read: p0 writes 1, p1 then writes 2, p2 afterwards still reads 1; p3 reads 2.
    let history = r#"[
      {"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1000000, "status": "ok"},
      {"process": 1, "type": "write", "key": "x", "value": 2, "invoke": 2000000, "complete": 3000000, "status": "ok"},
      {"process": 3, "type": "read", "key": "x", "output": 2, "invoke": 3500000, "complete": 3900000, "status": "ok"},
      {"process": 2, "type": "read", "key": "x", "output": 1, "invoke": 4000000, "complete": 5000000, "status": "ok"},
      {"process": 4, "type": "cas", "key": "y", "expected": 0, "new": 5, "invoke": 100000, "complete": null, "status": "unknown"}
    ]"#;
    let history_path = dir.path().join("history.json");
    std::fs::write(&history_path, history).expect("write history");
    let events_path = dir.path().join("history.events.json");
    std::fs::write(
        &events_path,
        r#"[{"name": "partition-leader", "start": 1500000, "end": 4500000}]"#,
    )
    .expect("write events");
    let page = dir.path().join("report.html");
    let html = report(&history_path, &page, Some(&events_path));
    // Self-contained: nothing to fetch (the SVG namespace is an identifier, not a fetch).
    for needle in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(needle), "the report references {needle}");
    }

    let (dom, log) = dump_dom(&chromium, &page, &dir.path().join("profile"));
    assert!(
        !log.contains("Uncaught") && !log.contains(":CONSOLE("),
        "the page logged errors:\n{log}"
    );
    assert!(dom.contains("</svg>"), "no timeline in the DOM:\n{dom}");
    // Every process has a lane.
    for p in 0..5 {
        assert!(
            dom.contains(&format!("data-process=\"{p}\"")) && dom.contains(&format!("process {p}")),
            "process {p} missing from the DOM:\n{dom}"
        );
    }
    // The verdict, the violation section and the stale read's bar marked as the violation.
    let verdict = dom
        .split("id=\"verdict\"")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_else(|| panic!("no verdict in the DOM:\n{dom}"));
    assert!(verdict.contains("NOT linearizable"), "{verdict}");
    assert!(dom.contains("class=\"violation\""), "no violation heading");
    let violating: Vec<&str> = dom
        .split("<rect ")
        .skip(1)
        .filter(|r| r.starts_with("class=\"op") && r.contains(" violation\""))
        .collect();
    assert!(
        !violating.is_empty(),
        "no operation marked as violating:\n{dom}"
    );
    assert!(
        violating
            .iter()
            .any(|r| r.contains("class=\"op read") && r.contains("process 2 x")),
        "the stale read (process 2) is not the marked one: {violating:?}"
    );
    // The ladder, and the anomaly in plain words, counted, with its operations highlighted:
    // the stale read (#3) and the write of 2 it missed (#1).
    let ladder = dom
        .split("id=\"ladder\"")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_else(|| panic!("no ladder in the DOM:\n{dom}"));
    assert!(
        ladder.contains("per key") && ladder.contains("strongest"),
        "{ladder}"
    );
    assert!(
        dom.contains(
            "read of x returned 1 at 4.0 ms although the write of 2 was acknowledged at 3.0 ms \
             (stale read)"
        ),
        "the stale read sentence is missing:\n{dom}"
    );
    assert!(
        dom.contains("1 stale read, 0 lost acknowledged write"),
        "no anomaly counts:\n{dom}"
    );
    let in_anomaly: Vec<&str> = dom
        .split("<rect ")
        .skip(1)
        .filter(|r| r.starts_with("class=\"op") && r.contains(" anomaly"))
        .collect();
    for entry in ["data-entry=\"1\"", "data-entry=\"3\""] {
        assert!(
            in_anomaly.iter().any(|r| r.contains(entry)),
            "{entry} is not highlighted as part of the anomaly: {in_anomaly:?}"
        );
    }
    // The fault window is shaded and named.
    assert!(
        dom.contains("class=\"fault-window\"") && dom.contains("partition-leader"),
        "no fault window in the DOM"
    );
}
