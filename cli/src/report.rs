//! A self-contained HTML report: the verdict and the ladder per key, what a violation consists
//! of, the anomalies in plain words, and an SVG timeline with one lane per process, operations
//! as bars, fault windows shaded, violating operations and those an anomaly involves
//! highlighted. No scripts, fonts or anything else from the network.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use caplab_checker::anomalies::counts;
use caplab_checker::{
    anomalies, ladder, Anomaly, CheckOptions, Entry, History, Ladder, Report, Status, Verdict,
};
use serde::{Deserialize, Serialize};

pub use crate::html::escape;
use crate::plots::Shade;

pub mod messages;

/// A fault window to shade: `{"name": "leader partitioned", "start": ns, "end": ns|null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub name: String,
    pub start: u64,
    #[serde(default)]
    pub end: Option<u64>,
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn describe(index: usize, e: &Entry) -> String {
    format!("#{index} {}", crate::check::describe(e))
}

const LANE: f64 = 26.0;
const BAR: f64 = 18.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 30.0;
/// Height of one row of fault names above the timeline.
const LABEL_ROW: f64 = 13.0;
/// The timeline's width for runs up to [`FIT_NS`]: a laptop screen without scrolling.
const FIT_WIDTH: f64 = 1000.0;
const FIT_NS: u64 = 90 * 1_000_000_000;

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
.linearizable { color: #1b5e20; font-weight: bold; }
.not-linearizable { color: #b71c1c; font-weight: bold; }
.unknown { color: #e65100; font-weight: bold; }
.timeline { overflow-x: auto; border: 1px solid #ddd; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 1.2em; height: 0.8em; vertical-align: middle; margin-right: 0.3em; }
svg text { font-size: 11px; font-family: ui-monospace, monospace; }
rect.op.read { fill: #90caf9; } rect.op.write { fill: #a5d6a7; } rect.op.cas { fill: #ce93d8; }
rect.op.fail { fill: #e0e0e0; } rect.op.unknown { fill-opacity: 0.45; stroke: #ef6c00; stroke-dasharray: 3 2; }
rect.op.anomaly { stroke: #6a1b9a; stroke-width: 2.5; }
rect.op.violation { stroke: #d50000; stroke-width: 2.5; fill: #ff8a80; }
li.anomaly { margin: 0.2em 0; }
rect.fault { fill: #fff3e0; stroke: #ffb74d; }
code { background: #f5f5f5; padding: 0 0.2em; }
"#;

/// How many sentences of each kind the report lists.
const SENTENCES_PER_KIND: usize = 200;

/// Renders the report. `key`: only that key's operations in the timeline. The ladder's
/// sequential searches run here, with the checker's default deadlines.
pub fn render(
    history: &History,
    report: &Report,
    windows: &[Window],
    key: Option<&str>,
    title: &str,
) -> String {
    render_with(history, report, windows, key, title, "")
}

/// [`render`], with `extra` (HTML sections, e.g. [`messages::html`]) after the plots.
pub fn render_with(
    history: &History,
    report: &Report,
    windows: &[Window],
    key: Option<&str>,
    title: &str,
    extra: &str,
) -> String {
    let violating: HashSet<usize> = report.violating_ops();
    let ladder = ladder(history, report, &CheckOptions::default());
    let found = anomalies(history);
    let involved: HashSet<usize> = found
        .iter()
        .flat_map(|a| a.operations.iter().copied())
        .collect();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t}</title><style>{STYLE}{}</style></head><body>\n<h1>{t}</h1>\n",
        crate::plots::STYLE,
        t = escape(title)
    );
    let overall = report.overall();
    let _ = writeln!(
        html,
        "<p id=\"verdict\">Verdict: <span class=\"{}\">{}</span> · {} operations, {} processes, {} keys, {}</p>",
        overall.as_str(),
        overall.label(),
        history.entries.len(),
        history.processes().len(),
        report.keys.len(),
        ms(history.end_time())
    );
    html.push_str(&ladder_html(&ladder));
    html.push_str(
        "<table id=\"keys\"><tr><th>key</th><th>verdict</th><th>sequential</th>\
         <th>converged</th><th>strongest</th><th>operations checked</th>\
         <th>unknown pruned</th><th>time</th></tr>\n",
    );
    for k in &report.keys {
        let kind = k.verdict.kind();
        let rungs = ladder.keys.iter().find(|l| l.key == k.key);
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{:.1} ms</td></tr>",
            escape(&k.key),
            kind.as_str(),
            kind.label(),
            crate::check::rung(rungs.and_then(|l| l.sequential)),
            crate::check::rung(rungs.and_then(|l| l.converged)),
            rungs.and_then(|l| l.strongest()).unwrap_or("unknown"),
            k.operations,
            k.pruned_unknown,
            k.elapsed_ms
        );
    }
    html.push_str("</table>\n");

    for k in &report.keys {
        match &k.verdict {
            Verdict::NotLinearizable(v) => {
                let _ = writeln!(
                    html,
                    "<h2 class=\"violation\">Violation on key <code>{}</code></h2>",
                    escape(&k.key)
                );
                let _ = writeln!(
                    html,
                    "<p>After ordering {} operations (register value <code>{}</code>), no order \
                     can place the operation below, which had already completed:</p><ul>",
                    v.linearized, v.last_state
                );
                if let Some(e) = history.entries.get(v.stuck) {
                    let _ = writeln!(html, "<li><b>{}</b></li>", escape(&describe(v.stuck, e)));
                }
                html.push_str("</ul>");
                if !v.concurrent.is_empty() {
                    html.push_str(
                        "<p>Nor could any of the operations pending at that point:</p><ul>",
                    );
                    for &i in &v.concurrent {
                        if let Some(e) = history.entries.get(i) {
                            let _ = writeln!(html, "<li>{}</li>", escape(&describe(i, e)));
                        }
                    }
                    html.push_str("</ul>");
                }
                if !v.linearized_tail.is_empty() {
                    html.push_str("<p>The last operations of that partial order:</p><ol>");
                    for &i in &v.linearized_tail {
                        if let Some(e) = history.entries.get(i) {
                            let _ = writeln!(html, "<li>{}</li>", escape(&describe(i, e)));
                        }
                    }
                    html.push_str("</ol>");
                }
            }
            Verdict::Unknown { reason } => {
                let _ = writeln!(
                    html,
                    "<h2>Key <code>{}</code>: unknown</h2><p>{}</p>",
                    escape(&k.key),
                    escape(reason)
                );
            }
            Verdict::Linearizable => {}
        }
    }

    html.push_str(&anomalies_html(&found));
    let shades: Vec<Shade> = windows
        .iter()
        .map(|w| Shade {
            name: &w.name,
            start: w.start,
            end: w.end,
        })
        .collect();
    html.push_str(&crate::plots::render(history, &shades));
    html.push_str(extra);
    html.push_str(&timeline(history, &violating, &involved, windows, key));
    html.push_str("</body></html>\n");
    html
}

/// The overall ladder, saying plainly that sequential consistency is per key.
fn ladder_html(l: &Ladder) -> String {
    format!(
        "<p id=\"ladder\">Ladder: linearizable <b>{}</b> · sequentially consistent <b>{}</b> \
         (per key: sequential consistency does not compose across keys) · converged <b>{}</b> \
         · strongest: <b>{}</b></p>\n",
        crate::check::rung(l.linearizable),
        crate::check::rung(l.sequential),
        crate::check::rung(l.converged),
        l.strongest().unwrap_or("unknown")
    )
}

/// The anomalies, counted by kind, each sentence with the operations it involves (highlighted
/// in the timeline below).
fn anomalies_html(found: &[Anomaly]) -> String {
    let counts = counts(found);
    let summary: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.words()))
        .collect();
    let mut html = format!(
        "<h2>Anomalies</h2>\n<p id=\"anomaly-counts\">{}</p>\n<ul id=\"anomalies\">\n",
        escape(&summary.join(", "))
    );
    for (kind, n) in &counts {
        for a in found
            .iter()
            .filter(|a| a.kind == *kind)
            .take(SENTENCES_PER_KIND)
        {
            let entries: Vec<String> = a.operations.iter().map(|i| format!("#{i}")).collect();
            let _ = writeln!(
                html,
                "<li class=\"anomaly\" data-kind=\"{}\">{} <small>{}</small></li>",
                kind.as_str(),
                escape(&a.sentence),
                escape(&entries.join(" "))
            );
        }
        if *n > SENTENCES_PER_KIND {
            let _ = writeln!(
                html,
                "<li>… and {} more of {} (<code>caplab check --json</code> lists them all)</li>",
                n - SENTENCES_PER_KIND,
                kind.words()
            );
        }
    }
    html.push_str("</ul>\n");
    html
}

fn timeline(
    history: &History,
    violating: &HashSet<usize>,
    involved: &HashSet<usize>,
    windows: &[Window],
    key: Option<&str>,
) -> String {
    let shown: Vec<(usize, &Entry)> = history
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| key.is_none_or(|k| e.key == k))
        .collect();
    let mut lanes: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, e) in &shown {
        *lanes.entry(e.process).or_default() += 1;
    }
    let busiest = lanes.values().copied().max().unwrap_or(0);
    let end = shown
        .iter()
        .map(|(_, e)| e.complete.unwrap_or(e.invoke))
        .chain(windows.iter().map(|w| w.end.unwrap_or(w.start)))
        .max()
        .unwrap_or(0)
        .max(1);
    // A run up to FIT_NS fits a laptop screen; a longer one gets about ten pixels per
    // operation of the busiest lane (scrolling), within sane limits.
    let width = if end <= FIT_NS {
        FIT_WIDTH
    } else {
        ((busiest * 10) as f64).clamp(FIT_WIDTH, 60_000.0)
    };
    let x = |t: u64| LEFT + t as f64 / end as f64 * width;
    // Fault names in rows above the lanes, so names of faults that start together never
    // overlap.
    let spans: Vec<(f64, f64)> = windows
        .iter()
        .map(|w| (x(w.start), crate::plots::label_width(&w.name)))
        .collect();
    let rows = crate::plots::label_rows(&spans);
    let label_rows = rows.iter().max().map_or(0, |r| r + 1) as f64;
    let top = TOP + LABEL_ROW * label_rows.max(1.0) - LABEL_ROW;
    let height = top + LANE * lanes.len() as f64 + 10.0;
    let lane_of: BTreeMap<u64, usize> = lanes.keys().enumerate().map(|(i, p)| (*p, i)).collect();

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<h2>Timeline{}</h2>\n<p class=\"legend\">\
         <span><i class=\"swatch\" style=\"background:#90caf9\"></i>read</span>\
         <span><i class=\"swatch\" style=\"background:#a5d6a7\"></i>write</span>\
         <span><i class=\"swatch\" style=\"background:#ce93d8\"></i>cas</span>\
         <span><i class=\"swatch\" style=\"background:#e0e0e0\"></i>failed</span>\
         <span><i class=\"swatch\" style=\"border:1px dashed #ef6c00\"></i>unknown outcome</span>\
         <span><i class=\"swatch\" style=\"background:#ff8a80;border:2px solid #d50000\"></i>violation</span>\
         <span><i class=\"swatch\" style=\"border:2px solid #6a1b9a\"></i>in an anomaly</span>\
         <span><i class=\"swatch\" style=\"background:#fff3e0;border:1px solid #ffb74d\"></i>fault</span>\
         · hover an operation for details</p>",
        key.map_or_else(String::new, |k| format!(" of key <code>{}</code>", escape(k)))
    );
    let _ = writeln!(
        svg,
        "<div class=\"timeline\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\">",
        LEFT + width + 20.0
    );
    for (w, row) in windows.iter().zip(&rows) {
        let x0 = x(w.start);
        let x1 = x(w.end.unwrap_or(end));
        let _ = writeln!(
            svg,
            "<g class=\"fault-window\"><rect class=\"fault\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            top - 4.0,
            (x1 - x0).max(1.0),
            height - top,
            escape(&w.name),
            x0 + 2.0,
            top - 8.0 - LABEL_ROW * (label_rows - 1.0 - *row as f64),
            escape(&w.name)
        );
    }
    // Time axis: ten ticks.
    for i in 0..=10u64 {
        let t = end / 10 * i;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"12\" fill=\"#777\">{:.0} ms</text>",
            x(t),
            t as f64 / 1e6
        );
    }
    for (process, lane) in &lane_of {
        let y = top + LANE * *lane as f64;
        let _ = writeln!(
            svg,
            "<g class=\"lane\" data-process=\"{process}\"><text x=\"4\" y=\"{:.1}\">process {process}</text>\
             <line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/></g>",
            y + BAR * 0.75,
            LEFT + width,
            y + BAR + 3.0,
            y + BAR + 3.0
        );
    }
    for (index, e) in &shown {
        let Some(lane) = lane_of.get(&e.process) else {
            continue;
        };
        let y = top + LANE * *lane as f64;
        let x0 = x(e.invoke);
        let x1 = x(e.complete.unwrap_or(end)).max(x0 + 2.0);
        let mut class = vec!["op", e.op.kind()];
        match e.status {
            Status::Ok => {}
            Status::Fail => class.push("fail"),
            Status::Unknown => class.push("unknown"),
        }
        if involved.contains(index) {
            class.push("anomaly");
        }
        if violating.contains(index) {
            class.push("violation");
        }
        let _ = write!(
            svg,
            "<rect class=\"{}\" data-entry=\"{index}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR}\" rx=\"2\"><title>{}</title></rect>",
            class.join(" "),
            x1 - x0,
            escape(&describe(*index, e))
        );
        let label = format!("{} {}", e.key, e.op.label());
        if x1 - x0 > 7.0 * label.chars().count() as f64 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" pointer-events=\"none\">{}</text>",
                x0 + 3.0,
                y + BAR * 0.72,
                escape(&label)
            );
        }
        svg.push('\n');
    }
    svg.push_str("</svg></div>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_checker::{check, CheckOptions, Op};

    fn entry(process: u64, op: Op, invoke: u64, complete: u64) -> Entry {
        Entry {
            process,
            key: "x".into(),
            op,
            invoke,
            complete: Some(complete),
            status: Status::Ok,
        }
    }

    #[test]
    fn marks_the_violation_and_lists_processes() {
        let history = History::new(vec![
            entry(0, Op::Write { value: 1 }, 0, 10),
            entry(1, Op::Read { output: Some(1) }, 20, 30),
            entry(2, Op::Read { output: Some(0) }, 40, 50),
        ])
        .expect("valid");
        let report = check(&history, &CheckOptions::default());
        let windows = [Window {
            name: "partition <leader>".into(),
            start: 5,
            end: Some(25),
        }];
        let html = render(&history, &report, &windows, None, "test & report");
        assert!(html.contains("NOT linearizable"));
        for p in 0..3 {
            assert!(html.contains(&format!("data-process=\"{p}\"")), "lane {p}");
        }
        assert!(
            html.contains("class=\"op read anomaly violation\" data-entry=\"2\""),
            "{html}"
        );
        // The stale read, in words, with the write it missed highlighted too.
        assert!(
            html.contains(
                "read of x returned 0 at 0.0 ms although the write of 1 was acknowledged at \
                 0.0 ms (stale read)"
            ),
            "{html}"
        );
        assert!(html.contains("class=\"op write anomaly\" data-entry=\"0\""));
        assert!(html.contains("id=\"ladder\""));
        assert!(!html.contains("class=\"op write violation\""));
        assert!(html.contains("partition &lt;leader&gt;"));
        assert!(html.contains("test &amp; report"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") || html.matches("http://").count() == 1);
        // the SVG namespace only
    }

    #[test]
    fn a_key_filter_keeps_only_that_key() {
        let mut other = entry(1, Op::Write { value: 3 }, 0, 10);
        other.key = "y".into();
        let history =
            History::new(vec![entry(0, Op::Write { value: 1 }, 0, 10), other]).expect("valid");
        let report = check(&history, &CheckOptions::default());
        let html = render(&history, &report, &[], Some("y"), "t");
        assert!(html.contains("data-entry=\"1\""));
        assert!(!html.contains("data-entry=\"0\""));
    }
}
