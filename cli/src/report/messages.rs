//! Message counts per operation, where a trace was recorded: the peer messages of a diagram
//! (`caplab trace --json`) set against the operations the history completed over the span
//! the trace covers. A history's times count from its run's start, which `caplab workload`
//! (and the experiment Job) also write into every key, taken at the same instant
//! (`w<unix ms>-…`): that puts the messages, on the observer's clock (each end's time minus
//! its injected skew), on the history's axis.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use caplab_checker::History;

use crate::html::escape;
use crate::ui::lamport::{Diagram, Message};

/// The messages of a trace next to the operations of the same span.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// The span the trace's messages cover, in ns from the history's start.
    pub span: (u64, u64),
    /// Operations invoked and completed within the span.
    pub operations: usize,
    /// Messages sent within the span, by kind.
    pub by_kind: BTreeMap<String, usize>,
}

/// When the history's run started (unix ms), from its keys' `w<unix ms>-` prefix; `None`
/// for histories not recorded by `caplab workload`.
pub fn run_origin_ms(history: &History) -> Option<u64> {
    let key = &history.entries.first()?.key;
    key.strip_prefix('w')?.split('-').next()?.parse().ok()
}

/// When `m` left its sender on the observer's clock (its receipt when the sender's end was
/// not read), in unix ms.
fn observed_ms(m: &Message) -> Option<i64> {
    let sent = m.sent_ms.map(|t| t as i64 - m.sent_skew_ms);
    sent.or(m.received_ms.map(|t| t as i64 - m.received_skew_ms))
}

/// Counts the messages of `diagram` and the operations of `history` over the span the
/// messages cover; why not, in words, when the two cannot be placed on one axis or do not
/// overlap.
pub fn cost(history: &History, diagram: &Diagram) -> Result<Cost, String> {
    let origin = run_origin_ms(history).ok_or(
        "the history's keys do not name its start (w<unix ms>-…): record it with caplab workload",
    )? as i64;
    let times: Vec<(i64, &Message)> = diagram
        .messages
        .iter()
        .filter_map(|m| Some(((observed_ms(m)? - origin) * 1_000_000, m)))
        .filter(|(t, _)| *t >= 0 && (*t as u64) <= history.end_time())
        .collect();
    let (Some(first), Some(last)) = (
        times.iter().map(|(t, _)| *t).min(),
        times.iter().map(|(t, _)| *t).max(),
    ) else {
        return Err(format!(
            "no message of the trace ({} recorded) falls within the run: record the trace \
             while the workload runs or right after it (caplab trace --json)",
            diagram.messages.len()
        ));
    };
    let span = (first as u64, last as u64);
    let mut by_kind = BTreeMap::new();
    for (_, m) in &times {
        *by_kind.entry(m.kind.clone()).or_default() += 1;
    }
    let operations = history
        .entries
        .iter()
        .filter(|e| e.invoke >= span.0 && e.complete.is_some_and(|c| c <= span.1))
        .count();
    Ok(Cost {
        span,
        operations,
        by_kind,
    })
}

/// The report's section: messages by kind, and per operation.
pub fn html(cost: &Result<Cost, String>) -> String {
    let mut out = String::from("<h2 id=\"messages\">Peer messages per operation</h2>\n");
    let cost = match cost {
        Ok(cost) => cost,
        Err(why) => {
            let _ = writeln!(out, "<p>{}</p>", escape(why));
            return out;
        }
    };
    let seconds = |ns: u64| ns as f64 / 1e9;
    let _ = writeln!(
        out,
        "<p>The trace covers {:.1} s to {:.1} s of the run: {} operations completed within it. \
         Heartbeats count too: with few operations they dominate.</p>",
        seconds(cost.span.0),
        seconds(cost.span.1),
        cost.operations
    );
    out.push_str("<table id=\"message-costs\"><tr><th>kind</th><th>messages</th><th>per operation</th></tr>\n");
    let total: usize = cost.by_kind.values().sum();
    let rows = cost.by_kind.iter().map(|(k, n)| (k.as_str(), *n));
    for (kind, n) in rows.chain([("all", total)]) {
        let per = if cost.operations == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", n as f64 / cost.operations as f64)
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{n}</td><td>{per}</td></tr>",
            escape(kind)
        );
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_checker::{Entry, Op, Status};

    fn op(key: &str, invoke_ms: u64, complete_ms: u64) -> Entry {
        Entry {
            process: 0,
            key: key.into(),
            op: Op::Write { value: 1 },
            invoke: invoke_ms * 1_000_000,
            complete: Some(complete_ms * 1_000_000),
            status: Status::Ok,
        }
    }

    fn message(kind: &str, sent_ms: u64, skew_ms: i64) -> Message {
        serde_json::from_value(serde_json::json!({
            "from": 1, "to": 2, "kind": kind, "sentMs": sent_ms, "sentSkewMs": skew_ms,
            "receivedMs": null, "receivedSkewMs": 0, "outcome": "unreceived"
        }))
        .expect("a message")
    }

    #[test]
    fn messages_are_placed_on_the_runs_axis_by_its_key_prefix() {
        let key = "w1000000-0badcafe-k0";
        let history = History {
            entries: vec![
                op(key, 0, 10),
                op(key, 100, 110),
                op(key, 200, 210),
                op(key, 400, 900),
            ],
            ..History::default()
        };
        assert_eq!(run_origin_ms(&history), Some(1_000_000));
        // Messages from 100 ms to 300 ms into the run; one member's clock 5 s ahead.
        let diagram = Diagram {
            members: vec![1, 2],
            now_ms: 0,
            window_ms: 0,
            messages: vec![
                message("append", 1_000_100, 0),
                message("append", 1_005_200, 5_000),
                message("vote", 1_000_300, 0),
                message("append", 2_000_000, 0),
            ],
            unread: Vec::new(),
        };
        let cost = cost(&history, &diagram).expect("a cost");
        assert_eq!(cost.span, (100_000_000, 300_000_000));
        assert_eq!(cost.operations, 2, "the ops completed within 100..300 ms");
        assert_eq!(cost.by_kind["append"], 2);
        let page = html(&Ok(cost));
        assert!(
            page.contains("<td>all</td><td>3</td><td>1.50</td>"),
            "{page}"
        );
    }

    #[test]
    fn a_history_without_a_start_says_why() {
        let history = History {
            entries: vec![op("x", 0, 1)],
            ..History::default()
        };
        let diagram = Diagram {
            members: vec![],
            now_ms: 0,
            window_ms: 0,
            messages: vec![],
            unread: vec![],
        };
        let why = cost(&history, &diagram).expect_err("no origin");
        assert!(why.contains("w<unix ms>"), "{why}");
    }
}
