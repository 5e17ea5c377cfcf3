//! The Markdown report: the throughput/latency table with the caplab/etcd ratios, replication
//! lag, failover, and notes (sample errors, what was skipped and why).

use std::fmt::Write as _;
use std::time::Duration;

use crate::lag::LagSamples;
use crate::workload::{Cell, Op};

pub struct Row {
    /// "caplab raft", "caplab async", "caplab sync", "caplab 2pc" or "etcd".
    pub system: String,
    pub op: Op,
    pub clients: usize,
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub errors: usize,
}

impl Row {
    pub fn new(system: &str, op: Op, clients: usize, cell: &Cell) -> Self {
        Self {
            system: system.to_string(),
            op,
            clients,
            throughput: cell.throughput(),
            p50: cell.percentile_ms(0.50),
            p99: cell.percentile_ms(0.99),
            max: cell.percentile_ms(1.0),
            errors: cell.errors,
        }
    }
}

pub struct LagRow {
    pub system: String,
    pub clients: usize,
    pub samples: LagSamples,
}

pub struct FailoverRow {
    pub system: String,
    pub trials: Vec<Duration>,
    pub failed: usize,
}

#[derive(Default)]
pub struct Report {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
    pub lag: Vec<LagRow>,
    pub failover: Vec<FailoverRow>,
    pub notes: Vec<String>,
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

impl Report {
    fn etcd(&self, op: Op, clients: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.system == "etcd" && r.op == op && r.clients == clients)
    }

    pub fn row_line(&self, r: &Row) -> String {
        let (ratio, p99_ratio) = match self.etcd(r.op, r.clients) {
            Some(e) if r.system != "etcd" && e.throughput > 0.0 => (
                format!("{:.2}×", r.throughput / e.throughput),
                if e.p99 > 0.0 && !r.p99.is_nan() {
                    format!("{:.2}×", r.p99 / e.p99)
                } else {
                    "–".into()
                },
            ),
            _ => ("–".into(), "–".into()),
        };
        format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.system,
            r.op.name(),
            r.clients,
            r.throughput,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.errors,
            ratio,
            p99_ratio
        )
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        for h in &self.header {
            let _ = writeln!(s, "{h}");
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "| system | operation | clients | ops/s | p50 ms | p99 ms | max ms | errors | ops/s ÷ etcd | p99 ÷ etcd |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        // Grouped by operation and client count so each caplab row sits next to etcd's.
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        let op_rank = |op: Op| Op::ALL.iter().position(|o| *o == op).unwrap_or(0);
        let sys_rank = |s: &str| match s {
            "etcd" => 0,
            "caplab raft" => 1,
            "caplab sync" => 2,
            "caplab 2pc" => 3,
            "caplab quorum" => 4,
            "caplab quorum-r1w1" => 5,
            "caplab async" => 6,
            _ => 7,
        };
        rows.sort_by_key(|r| (op_rank(r.op), r.clients, sys_rank(&r.system)));
        for r in rows {
            let _ = writeln!(s, "{}", self.row_line(r));
        }
        if !self.lag.is_empty() {
            let _ = writeln!(
                s,
                "\nReplication lag under the write load, sampled from the leader/primary's \
                 `GET /v1/status` (every peer, every sample):\n"
            );
            let _ = writeln!(
                s,
                "| system | clients | samples | lag entries p50 | lag entries p99 | lag ms p50 | lag ms p99 |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
            for l in &self.lag {
                let e = &l.samples.entries;
                let m = &l.samples.ms;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    l.system,
                    l.clients,
                    e.len(),
                    opt(LagSamples::percentile(e, 0.5)),
                    opt(LagSamples::percentile(e, 0.99)),
                    opt(LagSamples::percentile(m, 0.5)),
                    opt(LagSamples::percentile(m, 0.99)),
                );
            }
        }
        if !self.failover.is_empty() {
            let _ = writeln!(
                s,
                "\nFailover: SIGKILL of the leader → first acknowledged write through a survivor \
                 (default timeouts):\n"
            );
            let _ = writeln!(
                s,
                "| system | trials | failed | median ms | max ms | every trial ms |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
            for f in &self.failover {
                let mut t: Vec<f64> = f.trials.iter().map(|d| d.as_secs_f64() * 1e3).collect();
                let all = t.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>();
                t.sort_by(f64::total_cmp);
                let median = if t.is_empty() {
                    f64::NAN
                } else {
                    t[t.len() / 2]
                };
                let max = t.last().copied().unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    f.system,
                    f.trials.len() + f.failed,
                    f.failed,
                    ms(median),
                    ms(max),
                    all.join(", ")
                );
            }
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}
