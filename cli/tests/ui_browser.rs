//! `caplab ui` against a loopback cluster of real members, read by headless Chromium: the
//! leader is marked, a partitioned member's links are drawn cut, a killed member is shown
//! down within 2 s and a new leader is marked after the old one is killed. Screenshots are
//! kept under `<target dir>/artifacts/`. Under client load the page shows each member's log
//! tail and the live ops/s, errors and latency with the fault windows shaded. `caplab trace`
//! under a clock skew draws messages received before they were sent on the members' clocks,
//! and none on the observer's; `caplab report --trace` counts a traced run's peer messages per
//! operation.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `caplab ui`, killed when dropped.
struct Ui {
    child: Child,
    url: String,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `caplab ui --addr <members> --listen 127.0.0.1:0` and reads the URL it prints.
fn start_ui(addrs: &str) -> Ui {
    let mut child = common::caplab()
        .args(["ui", "--addr", addrs, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn caplab ui");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the URL line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    Ui { child, url }
}

/// The view JSON the page fetches.
async fn view(ui: &Ui) -> Option<Value> {
    let response = reqwest::get(format!("{}state", ui.url)).await.ok()?;
    response.json().await.ok()
}

fn member(view: &Value, id: u64) -> Option<&Value> {
    view["members"].as_array()?.iter().find(|m| m["id"] == id)
}

/// The `data-state` the page gave member `id`'s node in `dom`.
fn drawn_state(dom: &str, id: u64) -> Option<String> {
    let node = dom
        .split("<g ")
        .find(|g| g.starts_with("class=\"member") && g.contains(&format!("data-id=\"{id}\"")))?;
    let state = node.split("data-state=\"").nth(1)?.split('"').next()?;
    Some(state.to_string())
}

/// The faults drawn on the links leaving (`from`) member `id`.
fn drawn_link_faults(dom: &str, id: u64) -> Vec<String> {
    dom.split("<line ")
        .filter(|l| l.starts_with("class=\"link") && l.contains(&format!("data-from=\"{id}\"")))
        .filter_map(|l| {
            Some(
                l.split("data-fault=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_leader_partition_crash_and_failover() {
    let Some(chromium) = browser::chromium_or_skip("ui_shows_leader_partition_crash_and_failover")
    else {
        return;
    };
    let mut cluster = common::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let ui = start_ui(&cluster.client_addrs());
    let profile = tempfile::tempdir().expect("profile dir");
    let dom_now = |what: &str| {
        let dom = browser::dom(&chromium, &ui.url, profile.path(), 3000);
        assert!(
            dom.contains("data-polled"),
            "{what}: the page never drew a poll:\n{dom}"
        );
        dom
    };

    // The leader marked, and its heartbeats counted on its links (from the message traces).
    common::wait_until("the ui to see the leader and its messages", || async {
        let v = view(&ui).await?;
        let sending = v["links"].as_array()?.iter().any(|l| {
            l["from"] == leader && l["messagesPerSecond"].as_f64().is_some_and(|r| r > 0.0)
        });
        (member(&v, leader)?["status"]["role"] == "leader" && sending).then_some(())
    })
    .await;
    let dom = dom_now("healthy");
    assert_eq!(
        drawn_state(&dom, leader).as_deref(),
        Some("leader"),
        "leader not marked"
    );
    browser::screenshot(&chromium, &ui.url, profile.path(), 3000, "ui-healthy");
    // The messages tab draws the members' traces (heartbeats at least).
    let messages = format!("{}#messages", ui.url);
    let dom = browser::dom(&chromium, &messages, profile.path(), 3000);
    let summary = dom
        .split("id=\"lamport-summary\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no diagram in the messages tab:\n{dom}"));
    assert!(
        !summary.starts_with(">0 messages"),
        "no messages drawn: {summary}"
    );
    browser::screenshot(&chromium, &messages, profile.path(), 3000, "ui-messages");

    // Cut a follower off from every peer: its links are drawn cut both ways.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster
        .set_faults(follower, json!({"partition": {"peers": []}}))
        .await;
    common::wait_until("the ui to see the partition", || async {
        let v = view(&ui).await?;
        let links = v["links"].as_array()?;
        let cut = links
            .iter()
            .filter(|l| (l["from"] == follower || l["to"] == follower) && l["fault"] == "cut")
            .count();
        (cut == 4).then_some(())
    })
    .await;
    let dom = dom_now("partitioned");
    let faults = drawn_link_faults(&dom, follower);
    assert!(
        faults.len() == 2 && faults.iter().all(|f| f == "cut"),
        "the partitioned member's links are not drawn cut: {faults:?}"
    );
    browser::screenshot(&chromium, &ui.url, profile.path(), 3000, "ui-partition");
    cluster.set_faults(follower, json!({})).await;

    // Kill the leader: shown down within 2 s, then another member marked leader.
    cluster.kill(leader);
    let killed = Instant::now();
    loop {
        let down = view(&ui)
            .await
            .and_then(|v| Some(member(&v, leader)?["up"] == false))
            .unwrap_or(false);
        if down {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the killed leader n{leader} was not shown down within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = common::wait_until("the ui to see a new leader", || async {
        let v = view(&ui).await?;
        v["members"].as_array()?.iter().find_map(|m| {
            (m["up"] == true && m["status"]["role"] == "leader").then(|| m["id"].as_u64())?
        })
    })
    .await;
    assert_ne!(new_leader, leader);
    let dom = dom_now("after the kill");
    assert_eq!(
        drawn_state(&dom, leader).as_deref(),
        Some("down"),
        "killed member not down"
    );
    assert_eq!(
        drawn_state(&dom, new_leader).as_deref(),
        Some("leader"),
        "new leader not marked"
    );
    assert!(
        dom.contains("data-leader=\"") && dom.contains("class=\"strip-fault\""),
        "no strip"
    );
    browser::screenshot(&chromium, &ui.url, profile.path(), 3000, "ui-failover");
}

/// Writes through every member at `addrs` (comma separated) as fast as they answer, until
/// the task is aborted: the client load the live view counts.
fn load(addrs: &str) -> tokio::task::JoinHandle<()> {
    let urls: Vec<String> = addrs
        .split(',')
        .map(|a| format!("http://{a}/v1/kv/load"))
        .collect();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for value in 0u64.. {
            let url = &urls[value as usize % urls.len()];
            // Refusals and timeouts are part of the load: the view counts them as errors.
            let _ = http
                .put(url)
                .json(&json!({ "value": value }))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_log_tails_and_live_workload() {
    let Some(chromium) = browser::chromium_or_skip("ui_shows_log_tails_and_live_workload") else {
        return;
    };
    let cluster = common::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let ui = start_ui(&cluster.client_addrs());
    let writer = load(&cluster.client_addrs());
    // A follower cut off for a while: its window is shaded on the workload charts.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster
        .set_faults(follower, json!({"partition": {"peers": []}}))
        .await;
    common::wait_until("the ui to see the load under the partition", || async {
        let v = view(&ui).await?;
        let busy = v["history"].as_array()?.iter().any(|s| {
            s["ops"]["opsPerSecond"].as_f64().is_some_and(|r| r > 0.0)
                && !s["faults"].as_array().is_some_and(|f| f.is_empty())
        });
        busy.then_some(())
    })
    .await;
    cluster.set_faults(follower, json!({})).await;
    // The leader's tail holds the writes, with index and term.
    let entry = common::wait_until("the leader's log tail", || async {
        let v = view(&ui).await?;
        let log = member(&v, leader)?["log"].as_array()?.clone();
        log.into_iter()
            .find(|e| e["op"].as_str().is_some_and(|op| op.starts_with("load=")))
    })
    .await;
    assert!(
        entry["index"].as_u64().is_some() && entry["term"].as_u64().is_some(),
        "{entry}"
    );
    common::wait_until("a few more seconds of load after the partition", || async {
        let v = view(&ui).await?;
        let h = v["history"].as_array()?;
        let healed = h.iter().rev().take(3).all(|s| {
            s["faults"].as_array().is_some_and(|f| f.is_empty())
                && s["ops"]["opsPerSecond"].as_f64().is_some_and(|r| r > 0.0)
        });
        healed.then_some(())
    })
    .await;
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = browser::dom(&chromium, &ui.url, profile.path(), 3000);
    let workload = dom
        .split("<section id=\"workload\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no workload section:\n{dom}"));
    assert!(
        !workload
            .split('>')
            .next()
            .unwrap_or_default()
            .contains("hidden"),
        "the workload section is hidden under load"
    );
    assert!(
        workload.contains("data-ops=\"") && workload.contains("ops/s"),
        "no live ops/s drawn"
    );
    assert!(
        dom.contains(&format!("class=\"tail\" data-member=\"{leader}\"")) && dom.contains("load="),
        "no log tail drawn for the leader"
    );
    browser::screenshot(&chromium, &ui.url, profile.path(), 3000, "ui-workload");
    writer.abort();
}

/// The value of `data-<name>` on the diagram's `<svg id="lamport">` in `dom`.
fn diagram_count(dom: &str, name: &str) -> u64 {
    let svg = dom
        .split("<svg id=\"lamport\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no diagram in the DOM:\n{dom}"));
    let head = svg.split('>').next().unwrap_or_default();
    head.split(&format!("data-{name}=\""))
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no data-{name} on the diagram: {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_draws_skewed_and_dropped_messages() {
    let Some(chromium) = browser::chromium_or_skip("trace_draws_skewed_and_dropped_messages")
    else {
        return;
    };
    let cluster = common::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let mut followers = (1..=3).filter(|id| *id != leader);
    let (skewed, cut) = (
        followers.next().expect("a follower"),
        followers.next().expect("two"),
    );
    // The skewed follower's clock is 3 s behind: the leader's heartbeats reach it "before"
    // they left. The other refuses the leader's messages: they end in crosses.
    cluster
        .set_faults(skewed, json!({"clockSkewMs": -3000}))
        .await;
    cluster
        .set_faults(
            cut,
            json!({"partition": {"peers": [leader], "direction": "incoming"}}),
        )
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("trace.html");
    common::wait_until("a trace with skewed and dropped messages", || async {
        let out = common::run(
            common::caplab()
                .args([
                    "trace",
                    "--addr",
                    &cluster.client_addrs(),
                    "--window-seconds",
                    "2",
                    "--out",
                ])
                .arg(&page),
        );
        assert_eq!(out.code, Some(0), "caplab trace failed: {}", out.stderr);
        let html = std::fs::read_to_string(&page).ok()?;
        (html.contains("\"outcome\":\"droppedAtReceiver\"")
            && html.contains("\"receivedSkewMs\":-3000"))
        .then_some(())
    })
    .await;
    let html = std::fs::read_to_string(&page).expect("the page");
    for needle in ["src=", "href=", "@import"] {
        assert!(!html.contains(needle), "the trace page references {needle}");
    }
    let profile = tempfile::tempdir().expect("profile dir");
    let own = format!("file://{}", page.display());
    let dom = browser::dom(&chromium, &own, profile.path(), 1000);
    assert!(
        diagram_count(&dom, "backwards") > 0,
        "nothing received before sent on the members' clocks"
    );
    assert!(
        diagram_count(&dom, "dropped") > 0,
        "no dropped message drawn"
    );
    browser::screenshot(&chromium, &own, profile.path(), 1000, "trace-own-clocks");
    let observer = format!("{own}#observer");
    let dom = browser::dom(&chromium, &observer, profile.path(), 1000);
    assert_eq!(
        diagram_count(&dom, "backwards"),
        0,
        "received before sent on the observer's clock"
    );
    browser::screenshot(
        &chromium,
        &observer,
        profile.path(),
        1000,
        "trace-observer-clock",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_counts_messages_per_operation_of_a_traced_run() {
    let cluster = common::start(3, &[]).await;
    cluster.wait_for_leader().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (history, trace, page) = (
        dir.path().join("history.json"),
        dir.path().join("trace.json"),
        dir.path().join("report.html"),
    );
    let addrs = cluster.client_addrs();
    let ran = common::run(
        common::caplab()
            .args([
                "workload",
                "--addr",
                &addrs,
                "--clients",
                "2",
                "--duration",
                "3",
                "--settle",
                "0",
                "--quiet",
                "--out",
            ])
            .arg(&history),
    );
    assert_eq!(ran.code, Some(0), "workload: {}", ran.stderr);
    // Right after the run: the members' rings still hold its messages.
    let ran = common::run(
        common::caplab()
            .args([
                "trace",
                "--addr",
                &addrs,
                "--window-seconds",
                "60",
                "--json",
                "--out",
            ])
            .arg(&trace),
    );
    assert_eq!(ran.code, Some(0), "trace: {}", ran.stderr);
    let ran = common::run(
        common::caplab()
            .arg("report")
            .arg(&history)
            .arg("--trace")
            .arg(&trace)
            .arg("-o")
            .arg(&page),
    );
    assert_eq!(ran.code, Some(0), "report: {}", ran.stderr);
    let html = std::fs::read_to_string(&page).expect("the report");
    let table = html
        .split("<table id=\"message-costs\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no message costs in the report: {}", ran.stderr));
    let all = table
        .split("<td>all</td>")
        .nth(1)
        .and_then(|row| row.split("<td>").nth(2))
        .and_then(|cell| cell.split('<').next())
        .and_then(|per| per.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no per-operation total: {table}"));
    assert!(all > 0.0, "no messages per operation: {table}");
    assert!(
        table.contains("<td>append</td>"),
        "Raft's appends not counted: {table}"
    );

    let ran = common::run(
        common::caplab()
            .arg("report")
            .arg(&history)
            .arg("--trace")
            .arg(&history)
            .arg("-o")
            .arg(&page),
    );
    assert_eq!(
        ran.code,
        Some(3),
        "a history is not a trace: {}",
        ran.stderr
    );
    assert!(ran.stderr.contains("caplab trace --json"), "{}", ran.stderr);
}

/// A one-minute history: four processes writing every 100 ms, failing while "partition" and
/// "crash-leader" (both starting at 20 s) last.
fn one_minute_history() -> String {
    let mut ops = Vec::new();
    for process in 0..4u64 {
        for step in 0..600u64 {
            let invoke = step * 100_000_000 + process * 7_000_000;
            let faulty = (20_000_000_000..30_000_000_000).contains(&invoke);
            let latency = if faulty {
                80_000_000
            } else {
                4_000_000 + step % 7 * 1_000_000
            };
            ops.push(
                json!({"process": process, "type": "write", "key": format!("k{process}"),
                "value": step, "invoke": invoke, "complete": invoke + latency,
                "status": if faulty { "fail" } else { "ok" }}),
            );
        }
    }
    serde_json::to_string(&ops).expect("history JSON")
}

#[test]
fn report_plots_fit_a_laptop_and_keep_fault_labels_apart() {
    let Some(chromium) =
        browser::chromium_or_skip("report_plots_fit_a_laptop_and_keep_fault_labels_apart")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("history.json");
    std::fs::write(&history, one_minute_history()).expect("write history");
    let events = dir.path().join("events.json");
    std::fs::write(
        &events,
        r#"[{"name": "partition", "start": 20000000000, "end": 30000000000},
        {"name": "crash-leader", "start": 20000000000, "end": 25000000000}]"#,
    )
    .expect("events");
    let page = dir.path().join("report.html");
    common::report(&history, &page, Some(&events));
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("file://{}", page.display());
    let dom = browser::dom(&chromium, &url, profile.path(), 500);
    for plot in ["latency", "throughput", "availability"] {
        let svg = dom
            .split(&format!("id=\"plot-{plot}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {plot} plot in the DOM"));
        let svg = svg.split("</svg>").next().unwrap_or_default();
        assert_eq!(
            svg.matches("class=\"fault\"").count(),
            2,
            "{plot}: fault windows not shaded"
        );
        // The two faults start together: their names sit in different rows.
        let rows: Vec<&str> = svg
            .split("data-row=\"")
            .skip(1)
            .filter_map(|r| r.split('"').next())
            .collect();
        assert_eq!(rows.len(), 2, "{plot}: {rows:?}");
        assert_ne!(rows[0], rows[1], "{plot}: fault labels overlap");
    }
    assert!(
        dom.contains("class=\"dot fail\"") && dom.contains("class=\"dot ok\""),
        "latency dots"
    );
    // The timeline of a one-minute run needs no horizontal scrolling on a laptop.
    let timeline = dom
        .split("class=\"timeline\"><svg")
        .nth(1)
        .expect("a timeline");
    let width: f64 = timeline
        .split("width=\"")
        .nth(1)
        .and_then(|w| w.split('"').next())
        .and_then(|w| w.parse().ok())
        .expect("the timeline's width");
    assert!(width <= 1200.0, "the timeline is {width} px wide");
    browser::screenshot(&chromium, &url, profile.path(), 500, "report-plots");
}
