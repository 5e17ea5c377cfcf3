//! `caplab report`: checks a history and renders a self-contained HTML report of it
//! (timeline, violations, and the fault windows of `--events` shaded).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use caplab_checker::check;

use crate::check::{load_history, Deadlines, Source};
use crate::exit::bad_input;
use crate::report::{messages, render_with, Window};
use crate::ui::lamport::Diagram;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The history, or - for standard input.
    #[arg(value_parser = Source::parse)]
    history: Source,
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
    /// Fault windows to shade: a JSON array of {"name", "start", "end"} in ns from the start.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Show only this key's operations in the timeline.
    #[arg(long)]
    key: Option<String>,
    /// A trace recorded during the run (`caplab trace --json`): adds the peer messages per
    /// operation over the span it covers.
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    deadlines: Deadlines,
}

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let history = load_history(&args.history)?;
    let windows = windows(args)?;
    let trace = args.trace.as_deref().map(load_trace).transpose();
    let trace = trace.map_err(bad_input)?;
    let report = check(&history, &args.deadlines.options());
    let title = format!("caplab report: {}", args.history.name());
    let extra = match &trace {
        Some(diagram) => {
            let cost = messages::cost(&history, diagram);
            if let Err(why) = &cost {
                eprintln!("caplab report: no messages per operation: {why}");
            }
            messages::html(&cost)
        }
        None => String::new(),
    };
    let key = args.key.as_deref();
    let html = render_with(&history, &report, &windows, key, &title, &extra);
    let output = &args.output;
    std::fs::write(output, html).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {} ({})", output.display(), report.overall().label());
    Ok(ExitCode::SUCCESS)
}

/// The diagram of `--trace`.
fn load_trace(path: &std::path::Path) -> Result<Diagram> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a trace diagram: write one with caplab trace --json -o FILE",
            path.display()
        )
    })
}

/// The fault windows of `--events` (none without it).
fn windows(args: &ReportArgs) -> Result<Vec<Window>> {
    let Some(path) = &args.events else {
        return Ok(Vec::new());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected [{{\"name\",\"start\",\"end\"}}]",
            path.display()
        )
    })
}
