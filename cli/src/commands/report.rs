//! `caplab report`: checks a history and renders a self-contained HTML report of it
//! (timeline, violations, and the fault windows of `--events` shaded).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use caplab_checker::check;

use crate::check::{load_history, Deadlines, Source};
use crate::report::{render, Window};

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
    #[command(flatten)]
    deadlines: Deadlines,
}

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let history = load_history(&args.history)?;
    let windows = windows(args)?;
    let report = check(&history, &args.deadlines.options());
    let title = format!("caplab report: {}", args.history.name());
    let html = render(&history, &report, &windows, args.key.as_deref(), &title);
    let output = &args.output;
    std::fs::write(output, html).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {} ({})", output.display(), report.overall().label());
    Ok(ExitCode::SUCCESS)
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
