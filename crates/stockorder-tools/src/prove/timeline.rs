//! The picture of a proof run: what the clients saw, 50 ms at a time, with the moments of the
//! shutdown marked (the signal, readiness off, listeners closed, database closed, exit), taken
//! from the target's own log.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::tally::Request;

/// Width of one bar of the timeline.
const BIN: f64 = 0.05;

/// A moment to mark on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mark {
    /// Seconds since the load started.
    pub at: f64,
    /// What happened.
    pub label: &'static str,
}

/// When a log line was written, in seconds since the load started.
pub(super) fn seconds_since(line: &Value, load_started: OffsetDateTime) -> Option<f64> {
    let ts = OffsetDateTime::parse(line["timestamp"].as_str()?, &Rfc3339).ok()?;
    Some((ts - load_started).as_seconds_f64())
}

/// The shutdown's moments as the target logged them, placed on the load's clock.
pub(super) fn marks_from_log(log: &[Value], load_started: OffsetDateTime) -> Vec<Mark> {
    let at = |line: &Value| seconds_since(line, load_started);
    let first = |label: &'static str, pick: &dyn Fn(&Value) -> bool| {
        log.iter()
            .find(|l| pick(l))
            .and_then(&at)
            .map(|t| Mark { at: t, label })
    };
    let event = crate::service::event;
    [
        first("unready", &|l| event(l) == "shutdown.started"),
        first("listeners closed", &|l| event(l) == "listener.closed"),
        first("database closed", &|l| {
            (event(l) == "component.stopped" && l["component"] == "database") || event(l) == "database.closed"
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Writes the timeline as SVG: requests per second by outcome, and the marks.
pub(super) fn render(
    path: &Path,
    title: &str,
    requests: &[Request],
    marks: &[Mark],
    end: Duration,
) -> anyhow::Result<()> {
    let end = end.as_secs_f64() + 0.25;
    let rates = rates_by_outcome(requests, end);
    let top = rates.iter().flatten().copied().fold(1.0, f64::max) * 1.15;

    let (legend, numbers) = number_marks(marks);
    let rows = legend.len().div_ceil(3);

    let mut svg = String::new();
    {
        let height = 430 + 26 * rows as u32 + 16;
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the timeline failed: {e}");
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let (upper, lower) = root.split_vertically(430);
        let mut chart = ChartBuilder::on(&upper)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds since the load started")
            .y_desc("requests per second")
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| draw(&e))?;
        let colours = [GREEN.mix(0.9), RED.mix(0.9), BLUE.mix(0.6)];
        let names = ["acknowledged", "failed", "refused (never accepted)"];
        for ((rate, colour), name) in rates.iter().zip(colours).zip(names) {
            let points = rate.iter().enumerate().map(|(i, r)| (i as f64 * BIN, *r));
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        // Each mark: a thin line and its number at the top, moved down a row when it would
        // touch the number of the mark before it.
        let near = end / 60.0;
        let mut last: Option<(f64, usize)> = None;
        for (mark, number) in marks.iter().zip(&numbers) {
            chart
                .draw_series(LineSeries::new([(mark.at, 0.0), (mark.at, top)], BLACK.mix(0.4)))
                .map_err(|e| draw(&e))?;
            let row = match last {
                Some((at, row)) if mark.at - at < near => (row + 1) % 6,
                _ => 0,
            };
            last = Some((mark.at, row));
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" {number}"),
                    (mark.at, top * (0.98 - 0.05 * row as f64)),
                    ("sans-serif", 13).into_font().style(FontStyle::Bold),
                )))
                .map_err(|e| draw(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        draw_legend(&lower, &legend).map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// Requests per second in bins of `BIN` seconds up to `end`, by when they were answered: the
/// acknowledged, the failed, and the refused (never accepted).
fn rates_by_outcome(requests: &[Request], end: f64) -> [Vec<f64>; 3] {
    let bins = (end / BIN).ceil() as usize + 1;
    let mut rates = [vec![0.0; bins], vec![0.0; bins], vec![0.0; bins]];
    for r in requests {
        let series = match (r.id.is_some(), r.outcome) {
            (true, _) => 0,
            (false, o) if o.never_accepted() => 2,
            (false, _) => 1,
        };
        let bin = ((r.answered.as_secs_f64() / BIN) as usize).min(bins - 1);
        rates[series][bin] += 1.0 / BIN;
    }
    rates
}

/// A mark's label, its number, and every time it happened.
type Legend<'a> = Vec<(usize, &'a str, Vec<f64>)>;

/// Marks are numbered on the chart and listed with their times in a strip below it, so marks a
/// few milliseconds apart (the signal, readiness off, listeners closed) neither hide each other
/// nor the data; a label that repeats (twenty SIGHUPs) is listed once. Returns the strip and
/// each mark's number.
fn number_marks(marks: &[Mark]) -> (Legend<'_>, Vec<usize>) {
    let mut legend: Legend<'_> = Vec::new();
    let numbers: Vec<usize> = marks
        .iter()
        .map(|m| match legend.iter_mut().find(|(_, label, _)| *label == m.label) {
            Some((n, _, times)) => {
                times.push(m.at);
                *n
            }
            None => {
                legend.push((legend.len() + 1, m.label, vec![m.at]));
                legend.len()
            }
        })
        .collect();
    (legend, numbers)
}

/// The strip below the chart: the marks, three to a row, with their times.
fn draw_legend(
    lower: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    legend: &Legend<'_>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    for (i, (number, label, times)) in legend.iter().enumerate() {
        let at = match times.as_slice() {
            [one] => format!("{one:.3} s"),
            [first, .., last] => format!("{} times, {first:.2}–{last:.2} s", times.len()),
            [] => String::new(),
        };
        let (x, y) = (82 + 310 * (i % 3) as i32, 8 + 26 * (i / 3) as i32);
        lower.draw(&Text::new(
            format!("{number}  {label}  {at}"),
            (x, y),
            ("sans-serif", 14),
        ))?;
    }
    Ok(())
}
