//! Line charts of the bench's results as SVG files (plotters' SVG backend; text is left to
//! the viewer's fonts, so no font files are needed).

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

/// One line: its legend and its (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What a chart shows.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// A logarithmic x axis (for keys or clients spanning decades).
    pub log_x: bool,
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes `chart` to `path` as an 800×480 SVG.
pub fn write_svg(path: &Path, chart: &Chart) -> anyhow::Result<()> {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0_f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(anyhow!("{}: no points to plot", chart.title));
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if chart.log_x {
        let mut ctx = builder
            .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
            .map_err(plot_error)?;
        draw(&mut ctx, chart)?;
    } else {
        let mut ctx = builder
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(plot_error)?;
        draw(&mut ctx, chart)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw<'a, X>(
    ctx: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    chart: &Chart,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .draw()
        .map_err(plot_error)?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        ctx.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// plotters' errors borrow the backend's error type; the bench only reports them.
fn plot_error<E: std::error::Error + Send + Sync>(
    e: plotters::drawing::DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// The system → (clients, ops/s) lines of one operation in a `caplab-bench` Markdown table
/// (`| system | operation | clients | ops/s | …`).
pub fn throughput_from_table(markdown: &str, operation: &str) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for line in markdown.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [system, op, clients, ops, ..] = cells.as_slice() else {
            continue;
        };
        if *op != operation {
            continue;
        }
        let (Ok(clients), Ok(ops)) = (clients.parse::<f64>(), ops.parse::<f64>()) else {
            continue;
        };
        match out.iter_mut().find(|s| s.name == *system) {
            Some(s) => s.points.push((clients, ops)),
            None => out.push(Series {
                name: system.to_string(),
                points: vec![(clients, ops)],
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_table_becomes_one_line_per_system() {
        let table = "\
| system | operation | clients | ops/s | p50 ms |
|---|---|---:|---:|---:|
| etcd | write | 16 | 4612 | 3.21 |
| etcd | write | 1 | 1147 | 0.84 |
| caplab raft | write | 1 | 738 | 1.29 |
| caplab raft | linearizable read | 1 | 3347 | 0.29 |
";
        let series = throughput_from_table(table, "write");
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].name, "etcd");
        assert_eq!(series[0].points, vec![(1.0, 1147.0), (16.0, 4612.0)]);
        assert_eq!(series[1].points, vec![(1.0, 738.0)]);
    }

    #[test]
    fn a_chart_is_written_as_svg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.svg");
        let chart = Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            log_x: true,
            series: vec![Series {
                name: "s".into(),
                points: vec![(1.0, 2.0), (100.0, 3.0)],
            }],
        };
        write_svg(&path, &chart).expect("written");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    }
}
