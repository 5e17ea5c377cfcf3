//! The Markdown report: the throughput/latency table with the caplab/etcd ratios, replication
//! lag, failover, and notes (sample errors, what was skipped and why).

use std::fmt::Write as _;
use std::time::Duration;

use crate::lag::LagSamples;
use crate::workload::{Cell, Op};

pub struct Row {
    /// "caplab raft", "caplab async", "caplab sync", "caplab 2pc" or "etcd".
    pub system: String,
    /// Which round of `--rounds` measured it (from 1).
    pub round: usize,
    pub op: Op,
    pub clients: usize,
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub errors: usize,
}

impl Row {
    pub fn new(system: &str, round: usize, op: Op, clients: usize, cell: &Cell) -> Self {
        Self {
            system: system.to_string(),
            round,
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
    /// `--rounds`, and the round being measured (from 1).
    pub rounds: usize,
    pub round: usize,
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

/// One cell (system, operation, clients) over every round that measured it: the median
/// throughput, p50 and p99, the worst max, every error, and each round's ratio to the etcd
/// cell of the same round (so that a slow or fast minute weighs on both sides alike).
struct CellSummary<'a> {
    first: &'a Row,
    throughput: f64,
    p50: f64,
    p99: f64,
    max: f64,
    errors: usize,
    /// caplab ÷ etcd ops/s, one per round with both cells.
    ratios: Vec<f64>,
    /// caplab ÷ etcd p99, one per round with both cells.
    p99_ratios: Vec<f64>,
}

/// The median (mean of the two middle values for an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn times(v: f64) -> String {
    format!("{v:.2}×")
}

impl Report {
    fn etcd(&self, round: usize, op: Op, clients: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.system == "etcd" && r.round == round && r.op == op && r.clients == clients)
    }

    /// `system`, with the round when there are several (for the lag table).
    pub fn labelled(&self, system: &str) -> String {
        match self.rounds {
            0 | 1 => system.to_string(),
            _ => format!("{system} (round {})", self.round),
        }
    }

    /// `rows`: the same cell in one or more rounds (never empty).
    fn summarize<'a>(&'a self, rows: &[&'a Row]) -> CellSummary<'a> {
        let pick = |f: fn(&Row) -> f64| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        let mut ratios = vec![];
        let mut p99_ratios = vec![];
        for r in rows.iter().filter(|r| r.system != "etcd") {
            let Some(e) = self.etcd(r.round, r.op, r.clients) else {
                continue;
            };
            if e.throughput > 0.0 {
                ratios.push(r.throughput / e.throughput);
            }
            if e.p99 > 0.0 && !r.p99.is_nan() {
                p99_ratios.push(r.p99 / e.p99);
            }
        }
        CellSummary {
            first: rows[0],
            throughput: median(pick(|r| r.throughput)),
            p50: median(pick(|r| r.p50)),
            p99: median(pick(|r| r.p99)),
            max: pick(|r| r.max).into_iter().fold(f64::NAN, f64::max),
            errors: rows.iter().map(|r| r.errors).sum(),
            ratios,
            p99_ratios,
        }
    }

    /// One table line for one round's row, against the same round's etcd.
    pub fn row_line(&self, r: &Row) -> String {
        Self::line(&self.summarize(&[r]))
    }

    fn line(c: &CellSummary) -> String {
        let ratio = match c.ratios.len() {
            0 => "–".to_string(),
            1 => times(c.ratios[0]),
            _ => {
                let low = c.ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let high = c.ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(
                    "{} ({:.2}–{:.2})",
                    times(median(c.ratios.clone())),
                    low,
                    high
                )
            }
        };
        let p99_ratio = match c.p99_ratios.is_empty() {
            true => "–".to_string(),
            false => times(median(c.p99_ratios.clone())),
        };
        let r = c.first;
        format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.system,
            r.op.name(),
            r.clients,
            c.throughput,
            ms(c.p50),
            ms(c.p99),
            ms(c.max),
            c.errors,
            ratio,
            p99_ratio
        )
    }

    /// Every cell's rows over the rounds, grouped by operation and client count so that each
    /// caplab cell sits next to etcd's.
    fn cells(&self) -> Vec<Vec<&Row>> {
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
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| (op_rank(r.op), r.clients, sys_rank(&r.system), r.round));
        rows.chunk_by(|a, b| a.system == b.system && a.op == b.op && a.clients == b.clients)
            .map(<[&Row]>::to_vec)
            .collect()
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
        for cell in self.cells() {
            let _ = writeln!(s, "{}", Self::line(&self.summarize(&cell)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, round: usize, throughput: f64, p99: f64) -> Row {
        Row {
            system: system.to_string(),
            round,
            op: Op::Write,
            clients: 64,
            throughput,
            p50: p99 / 2.0,
            p99,
            max: p99 * 2.0,
            errors: round,
        }
    }

    #[test]
    fn medians_odd_even_and_without_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn each_round_is_compared_with_the_same_rounds_etcd() {
        // Round 2 was a slow minute for both: its ratio is 2×, like round 1's, while the
        // medians of the raw throughputs alone would give 1500 ÷ 1000 = 1.5×.
        let report = Report {
            rounds: 3,
            rows: vec![
                row("etcd", 1, 1000.0, 10.0),
                row("etcd", 2, 500.0, 20.0),
                row("etcd", 3, 1000.0, 10.0),
                row("caplab raft", 1, 2000.0, 5.0),
                row("caplab raft", 2, 1000.0, 10.0),
                row("caplab raft", 3, 1500.0, 5.0),
            ],
            ..Report::default()
        };
        let lines: Vec<String> = report
            .cells()
            .iter()
            .map(|cell| Report::line(&report.summarize(cell)))
            .collect();
        assert_eq!(
            lines,
            [
                "| etcd | write | 64 | 1000 | 5.00 | 10.0 | 40.0 | 6 | – | – |",
                "| caplab raft | write | 64 | 1500 | 2.50 | 5.00 | 20.0 | 6 | 2.00× (1.50–2.00) | 0.50× |",
            ]
        );
    }

    #[test]
    fn a_single_round_prints_its_ratio_without_a_range() {
        let report = Report {
            rounds: 1,
            rows: vec![
                row("etcd", 1, 1000.0, 10.0),
                row("caplab raft", 1, 1770.0, 4.5),
            ],
            ..Report::default()
        };
        let caplab = &report.rows[1];
        assert_eq!(
            report.row_line(caplab),
            "| caplab raft | write | 64 | 1770 | 2.25 | 4.50 | 9.00 | 1 | 1.77× | 0.45× |"
        );
    }
}
