//! The report's charts, drawn by the benchmark from what it measured (plotters, SVG).

use std::path::Path;

use plotters::prelude::*;

use super::ingest::Run;

const SIZE: (u32, u32) = (900, 420);

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Messages a second published and committed, second by second, of one run.
pub fn throughput(path: &Path, run: &Run) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let seconds = run.timeline.len().max(1) as u32;
    let top = run
        .timeline
        .iter()
        .map(|(_, s, c)| (*s).max(*c))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Ingest, {}: messages per second", run.label),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0_u32..seconds, 0.0..top)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first publish")
        .y_desc("messages/s")
        .draw()
        .map_err(fail)?;
    let published = run.timeline.iter().map(|(s, p, _)| (*s, *p as f64));
    chart
        .draw_series(LineSeries::new(published, BLUE.stroke_width(2)))
        .map_err(fail)?
        .label("published (PUBACKed by the broker)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let committed = run.timeline.iter().map(|(s, _, c)| (*s, *c as f64));
    chart
        .draw_series(LineSeries::new(committed, RED.stroke_width(2)))
        .map_err(fail)?
        .label("committed rows' messages (PostgreSQL)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(fail)?;
    root.present().map_err(fail)
}

/// The latency distribution of each run: the share of messages committed within x ms
/// (log scale), one curve per run.
pub fn latency(path: &Path, runs: &[&Run]) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let max = runs
        .iter()
        .filter_map(|r| r.latencies_ms.last().copied())
        .fold(10.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Ingest: publish to committed row, share of messages within",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((1.0..max).log_scale(), 0.0..1.0)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("share of messages")
        .draw()
        .map_err(fail)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, run) in runs.iter().enumerate() {
        let color = colors[i % colors.len()];
        let n = run.latencies_ms.len().max(1) as f64;
        // At most 500 points a curve: the SVG stays small.
        let step = (run.latencies_ms.len() / 500).max(1);
        let points = run
            .latencies_ms
            .iter()
            .enumerate()
            .step_by(step)
            .chain(run.latencies_ms.iter().enumerate().next_back())
            .map(move |(k, ms)| (ms.max(1.0), (k + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(fail)?
            .label(run.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(fail)?;
    root.present().map_err(fail)
}
