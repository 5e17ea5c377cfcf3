//! Headless Chromium (Debian's `chromium`, or `CAPLAB_CHROMIUM`) for the page tests: the DOM a
//! page builds after its scripts ran, and screenshots kept as test artifacts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser to use, or why the test is skipped (a failure when `CI=true`).
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("CAPLAB_CHROMIUM") {
        return Some(PathBuf::from(explicit));
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome", "chrome"]
                .iter()
                .map(|name| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    });
    if found.is_none() {
        let reason = "no chromium on PATH (install Debian's `chromium` or set CAPLAB_CHROMIUM)";
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "CI=true but {reason}");
        eprintln!("SKIPPED {test}: {reason}");
    }
    found
}

/// Where screenshots go: `<target dir>/artifacts/` (kept after the test).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts dir");
    dir
}

/// Runs chromium headless on `url` with `extra` flags, letting the page's scripts run for
/// `script_ms` of virtual time; returns (stdout, stderr).
fn run(
    chromium: &Path,
    url: &str,
    profile: &Path,
    script_ms: u64,
    extra: &[String],
) -> (String, String) {
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
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--window-size=1400,1100",
        ])
        .arg(format!("--virtual-time-budget={script_ms}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
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
    let (out, log) = (out.join().expect("stdout"), err.join().expect("stderr"));
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    (out, log)
}

/// The DOM of `url` after its scripts ran for `script_ms` (virtual time); fails on a page
/// that logged an uncaught error.
pub fn dom(chromium: &Path, url: &str, profile: &Path, script_ms: u64) -> String {
    let (dom, log) = run(chromium, url, profile, script_ms, &["--dump-dom".into()]);
    assert!(!log.contains("Uncaught"), "the page logged errors:\n{log}");
    dom
}

/// Saves a screenshot of `url` as `<artifacts>/<name>.png` and returns its path.
pub fn screenshot(
    chromium: &Path,
    url: &str,
    profile: &Path,
    script_ms: u64,
    name: &str,
) -> PathBuf {
    let path = artifacts_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    run(
        chromium,
        url,
        profile,
        script_ms,
        &[format!("--screenshot={}", path.display())],
    );
    assert!(path.is_file(), "no screenshot at {}", path.display());
    path
}
