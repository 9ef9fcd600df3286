//! The chart: failed transfers over time, one line per setup, waves shaded.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::run::SetupResult;

const BIN_S: f64 = 0.5;

/// A line: its legend, colour and points (seconds, failures in the bin).
type Series = (String, RGBColor, Vec<(f64, f64)>);

pub fn failures_svg(path: &Path, results: &[SetupResult]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("chart {}: {e}", path.display());
    let x_max = results
        .iter()
        .map(|r| r.duration_s)
        .fold(1.0_f64, f64::max)
        .ceil();
    let bins = (x_max / BIN_S).ceil() as usize + 1;
    let series: Vec<Series> = results
        .iter()
        .map(|r| {
            let mut counts = vec![0usize; bins];
            for t in r.transactions.iter().filter(|t| t.failure.is_some()) {
                let b = ((t.end_s / BIN_S) as usize).min(bins - 1);
                counts[b] += 1;
            }
            let points = counts
                .iter()
                .enumerate()
                .map(|(i, &c)| (i as f64 * BIN_S, c as f64))
                .collect();
            let lost: usize = counts.iter().sum();
            let all = r.transactions.len();
            // One colour per setup, whichever setups were run.
            let color = match r.setup.as_str() {
                "round-robin" => RED,
                "retry-409" => MAGENTA,
                "sticky" => BLUE,
                "mixmode+affinity" => RGBColor(0, 150, 150),
                _ => GREEN,
            };
            (
                format!("{}: {lost} of {all} transfers lost", r.setup),
                color,
                points,
            )
        })
        .collect();
    let y_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0_f64, f64::max)
        * 1.15;

    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Rolling deploy v1 -> v2: failed transfers per 0.5 s (shaded: waves, drain to back up)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the users started")
        .y_desc("failed transfers")
        .draw()
        .map_err(|e| err(&e))?;
    if let Some(first) = results.first() {
        for (i, w) in first.waves.iter().enumerate() {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(w.drain_at, 0.0), (w.up_at, y_max)],
                    BLACK.mix(0.08).filled(),
                )))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("wave {} ({})", i + 1, w.servers),
                    (w.drain_at, y_max * 0.97),
                    ("sans-serif", 13),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    for (label, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        // The end of the run has the fewest failures, and the wave labels sit at the top.
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
