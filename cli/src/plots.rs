//! The report's plots over time, as inline SVG (no script): latency (each operation a dot,
//! coloured by outcome), throughput (completed operations per second) and availability (the
//! share of operations invoked in each second that succeeded), with the fault windows shaded
//! on each and their names in rows that never overlap. Every plot is 1000 units wide and
//! scales to the page, so a run of any length fits a laptop screen.

use std::fmt::Write as _;

use caplab_checker::{History, Status};

use crate::html::escape;

/// A fault window to shade: its name and its span (ns from the start; `end` `None`: until the
/// end of the run).
#[derive(Debug, Clone, Copy)]
pub struct Shade<'a> {
    pub name: &'a str,
    pub start: u64,
    pub end: Option<u64>,
}

/// Plot width in SVG units (the page scales it to its width).
pub const WIDTH: f64 = 1000.0;
/// The left margin holding the y axis labels.
const LEFT: f64 = 60.0;
const PLOT_HEIGHT: f64 = 120.0;
/// Height of one row of fault labels.
const LABEL_ROW: f64 = 13.0;
/// Approximate width of one label character at the labels' 11px font.
const CHAR_WIDTH: f64 = 6.6;

/// Style rules of the plots (added to the report's stylesheet).
pub const STYLE: &str = r#"
.plot { width: 100%; max-width: 1100px; height: auto; display: block; margin-bottom: .6em; }
.plot .dot.ok { fill: #2e7d32; } .plot .dot.fail { fill: #9e9e9e; } .plot .dot.unknown { fill: #ef6c00; }
.plot .bar { fill: #64b5f6; } .plot .avail { fill: none; stroke: #1b5e20; stroke-width: 1.5; }
.plot .axis { stroke: #999; } .plot .grid { stroke: #eee; }
.plot rect.fault { fill: #fff3e0; stroke: #ffb74d; }
"#;

/// The row each label goes in so that no two overlap: labels in start order, each in the
/// first row whose last label ends left of this one's start. `spans` are (x, text width).
pub fn label_rows(spans: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|a, b| spans[*a].0.total_cmp(&spans[*b].0));
    let mut row_ends: Vec<f64> = Vec::new();
    let mut rows = vec![0; spans.len()];
    for i in order {
        let (x, w) = spans[i];
        let row = match row_ends.iter().position(|end| *end + 4.0 <= x) {
            Some(row) => row,
            None => {
                row_ends.push(f64::NEG_INFINITY);
                row_ends.len() - 1
            }
        };
        row_ends[row] = x + w;
        rows[i] = row;
    }
    rows
}

/// The width a label of `text` takes at the labels' font (estimated).
pub fn label_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

/// The three plots, or nothing for an empty history. Times are the history's (ns from the
/// start of the run).
pub fn render(history: &History, windows: &[Shade]) -> String {
    let end = history
        .entries
        .iter()
        .map(|e| e.complete.unwrap_or(e.invoke))
        .chain(windows.iter().map(|w| w.end.unwrap_or(w.start)))
        .max()
        .unwrap_or(0);
    if history.entries.is_empty() || end == 0 {
        return String::new();
    }
    let axis = Axis { end };
    let mut html = String::from("<h2>Over time</h2>\n");
    html.push_str(&plot(&axis, windows, "latency", &latency(history, &axis)));
    html.push_str(&plot(
        &axis,
        windows,
        "throughput",
        &throughput(history, &axis),
    ));
    html.push_str(&plot(
        &axis,
        windows,
        "availability",
        &availability(history, &axis),
    ));
    html
}

/// The shared time axis: `end` ns maps to the right edge.
struct Axis {
    end: u64,
}

impl Axis {
    fn x(&self, t: u64) -> f64 {
        LEFT + t as f64 / self.end as f64 * (WIDTH - LEFT - 10.0)
    }

    /// One-second bins covering the run.
    fn seconds(&self) -> usize {
        (self.end / 1_000_000_000) as usize + 1
    }
}

/// What a plot draws inside its frame: its y label and the SVG of its marks (y from 0 at the
/// top to [`PLOT_HEIGHT`] at the bottom).
struct Marks {
    y_label: String,
    svg: String,
}

/// One plot: fault labels in rows above, fault windows shaded, marks, time ticks.
fn plot(axis: &Axis, windows: &[Shade], id: &str, marks: &Marks) -> String {
    let spans: Vec<(f64, f64)> = windows
        .iter()
        .map(|w| (axis.x(w.start), label_width(w.name)))
        .collect();
    let rows = label_rows(&spans);
    let top = LABEL_ROW * (rows.iter().max().map_or(0, |r| r + 1)) as f64 + 4.0;
    let height = top + PLOT_HEIGHT + 18.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg class=\"plot\" id=\"plot-{id}\" viewBox=\"0 0 {WIDTH} {height:.0}\">"
    );
    for (w, row) in windows.iter().zip(&rows) {
        let (x0, x1) = (axis.x(w.start), axis.x(w.end.unwrap_or(axis.end)));
        let name = escape(w.name);
        let _ = writeln!(
            svg,
            "<g class=\"fault-window\"><rect class=\"fault\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{PLOT_HEIGHT}\"><title>{name}</title></rect>\
             <text class=\"fault-label\" data-row=\"{row}\" x=\"{x0:.1}\" y=\"{:.1}\">{name}</text></g>",
            (x1 - x0).max(1.0),
            LABEL_ROW * (*row as f64 + 1.0) - 2.0,
        );
    }
    let _ = writeln!(
        svg,
        "<g transform=\"translate(0 {top:.1})\">{}<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"0\" y2=\"{PLOT_HEIGHT}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.0}\" y1=\"{PLOT_HEIGHT}\" y2=\"{PLOT_HEIGHT}\"/>\
         <text x=\"2\" y=\"10\">{}</text></g>",
        marks.svg,
        WIDTH - 10.0,
        escape(&marks.y_label)
    );
    for i in 0..=10u64 {
        let t = axis.end / 10 * i;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#777\" text-anchor=\"middle\">{:.1} s</text>",
            axis.x(t),
            height - 4.0,
            t as f64 / 1e9
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Each operation a dot at its invocation and latency, coloured by outcome; operations that
/// never completed sit on the top edge.
fn latency(history: &History, axis: &Axis) -> Marks {
    let latency = |e: &caplab_checker::Entry| e.complete.map(|c| c.saturating_sub(e.invoke));
    let max = history
        .entries
        .iter()
        .filter_map(latency)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut svg = String::new();
    for e in &history.entries {
        let y = latency(e).map_or(0.0, |l| PLOT_HEIGHT - l as f64 / max as f64 * PLOT_HEIGHT);
        let outcome = match e.status {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        };
        let _ = write!(
            svg,
            "<circle class=\"dot {outcome}\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"1.8\"/>",
            axis.x(e.invoke)
        );
    }
    Marks {
        y_label: format!(
            "latency (max {:.0} ms; ● ok ● fail ● unknown)",
            max as f64 / 1e6
        ),
        svg,
    }
}

/// Operations completed successfully in each second, as bars.
fn throughput(history: &History, axis: &Axis) -> Marks {
    let mut bins = vec![0u64; axis.seconds()];
    for e in history.entries.iter().filter(|e| e.status == Status::Ok) {
        if let Some(bin) = e
            .complete
            .and_then(|c| bins.get_mut((c / 1_000_000_000) as usize))
        {
            *bin += 1;
        }
    }
    let max = bins.iter().copied().max().unwrap_or(1).max(1);
    let mut svg = String::new();
    for (i, n) in bins.iter().enumerate() {
        let (x0, x1) = (
            axis.x(i as u64 * 1_000_000_000),
            axis.x((i as u64 + 1) * 1_000_000_000),
        );
        let h = *n as f64 / max as f64 * PLOT_HEIGHT;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{n} ops/s</title></rect>",
            PLOT_HEIGHT - h,
            (x1 - x0 - 0.5).max(0.5)
        );
    }
    Marks {
        y_label: format!("successful ops/s (max {max})"),
        svg,
    }
}

/// The share of the operations invoked in each second that succeeded (seconds without
/// operations are left out).
fn availability(history: &History, axis: &Axis) -> Marks {
    let mut bins = vec![(0u64, 0u64); axis.seconds()];
    for e in &history.entries {
        if let Some((ok, all)) = bins.get_mut((e.invoke / 1_000_000_000) as usize) {
            *all += 1;
            *ok += u64::from(e.status == Status::Ok);
        }
    }
    let points: Vec<String> = bins
        .iter()
        .enumerate()
        .filter(|(_, (_, all))| *all > 0)
        .map(|(i, (ok, all))| {
            let x = axis.x(i as u64 * 1_000_000_000 + 500_000_000);
            let y = PLOT_HEIGHT - *ok as f64 / *all as f64 * PLOT_HEIGHT;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    Marks {
        y_label: "availability (share ok, 0-100 %)".to_string(),
        svg: format!(
            "<polyline class=\"avail\" points=\"{}\"/>",
            points.join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_that_start_together_go_in_different_rows() {
        // Two faults starting at once, a third after both labels end.
        let rows = label_rows(&[(100.0, 60.0), (100.0, 50.0), (300.0, 40.0), (120.0, 10.0)]);
        assert_eq!(rows, [0, 1, 0, 2]);
    }
}
