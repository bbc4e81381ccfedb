//! `bench --plot FILE.svg`: the run as a picture. Two panels over the same seconds: the
//! operations per second above, the p99 latency of each operation kind below (log scale, so a
//! steady millisecond and an outage's seconds both show), with the phases (grey) and the
//! faults (red) as labelled vertical lines across both.
//!
//! The SVG leaves text to the viewer's fonts, so drawing needs no font files.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::stats::OpKind;
use super::timeline::{MarkKind, Series};

/// Size of the picture (px).
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 640;
const FONT: &str = "sans-serif";
/// One colour per operation kind, in [`OpKind::ALL`] order.
const KIND_COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), GREEN_DARK];
const GREEN_DARK: RGBColor = RGBColor(44, 160, 44);
const OPS_COLOUR: RGBColor = RGBColor(31, 119, 180);
const ERRORS_COLOUR: RGBColor = RGBColor(214, 39, 40);
const PHASE_COLOUR: RGBColor = RGBColor(120, 120, 120);
const FAULT_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// Why the picture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("drawing the plot: {0}")]
    Draw(String),
    /// The file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

fn draw_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// The picture of `series` as an SVG document, under `title`.
pub fn svg(series: &Series, title: &str) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let body = root.titled(title, (FONT, 20)).map_err(draw_error)?;
        let (upper, lower) = body.split_vertically((HEIGHT - 30) / 2);
        let span = series.span_s().max(1.0);
        throughput_panel(&upper, series, span)?;
        latency_panel(&lower, series, span)?;
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

/// Draws `series` under `title` into the SVG file `path`.
pub fn write_svg(path: &Path, series: &Series, title: &str) -> Result<(), PlotError> {
    let text = svg(series, title)?;
    std::fs::write(path, text).map_err(|source| PlotError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The middle of second `s` on the time axis.
fn mid(second: u64) -> f64 {
    second as f64 + 0.5
}

fn throughput_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &Series,
    span: f64,
) -> Result<(), PlotError> {
    let top = series
        .points
        .iter()
        .map(|p| p.ops_per_s().max(p.errors_per_s()))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..span, 0.0..top)
        .map_err(draw_error)?;
    draw_mesh(&mut chart, "ops/s", &|v| format!("{v:.0}"))?;
    chart
        .draw_series(LineSeries::new(
            series.points.iter().map(|p| (mid(p.second), p.ops_per_s())),
            OPS_COLOUR.stroke_width(2),
        ))
        .map_err(draw_error)?
        .label("ops/s (succeeded)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], OPS_COLOUR.stroke_width(2)));
    if series.points.iter().any(|p| p.errors > 0) {
        chart
            .draw_series(LineSeries::new(
                series
                    .points
                    .iter()
                    .map(|p| (mid(p.second), p.errors_per_s())),
                ERRORS_COLOUR,
            ))
            .map_err(draw_error)?
            .label("errors/s")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ERRORS_COLOUR));
    }
    draw_mark_lines(&mut chart, series, 0.0, top)?;
    let rows = label_rows(series, span);
    for (mark, row) in series.marks.iter().zip(rows) {
        let colour = mark_colour(mark.kind);
        // Labels sit just right of their line, near the top of the panel, one row lower
        // for each label that would otherwise run into it.
        let height = 0.97 - 0.08 * row as f64;
        let style = (FONT, 14).into_font().color(&colour);
        let label = EmptyElement::at((mark.at_s, top * height))
            + Text::new(mark.label.clone(), (4, 0), style);
        chart
            .draw_series(std::iter::once(label))
            .map_err(draw_error)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn latency_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &Series,
    span: f64,
) -> Result<(), PlotError> {
    // Milliseconds, on a log axis from the decade below the fastest second's p99 to the one
    // above the slowest's: the axis is labelled at whole decades.
    let all_ms = || {
        series
            .points
            .iter()
            .flat_map(|p| p.p99_us.iter().flatten())
            .map(|&us| us as f64 / 1000.0)
    };
    let low = all_ms().fold(f64::INFINITY, f64::min);
    let high = all_ms().fold(0.0, f64::max);
    let (low, high) = if low.is_finite() && low > 0.0 && high > 0.0 {
        (
            10f64.powf((low / 1.2).log10().floor()),
            10f64.powf((high * 1.2).log10().ceil()),
        )
    } else {
        (0.1, 10.0)
    };
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..span, (low..high).log_scale())
        .map_err(draw_error)?;
    draw_mesh(&mut chart, "p99 latency (ms)", &|v| short(*v))?;
    for op in OpKind::ALL {
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter_map(|p| {
                let us = p.p99_us[op.index()]?;
                Some((mid(p.second), us as f64 / 1000.0))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let colour = KIND_COLOURS[op.index()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(draw_error)?
            .label(format!("{} p99", op.name()))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    draw_mark_lines(&mut chart, series, low, high)?;
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// A vertical line at each phase or fault mark, from `low` to `high` on the value axis.
fn draw_mark_lines<CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, CT>,
    series: &Series,
    low: f64,
    high: f64,
) -> Result<(), PlotError> {
    for mark in &series.marks {
        chart
            .draw_series(std::iter::once(PathElement::new(
                [(mark.at_s, low), (mark.at_s, high)],
                mark_colour(mark.kind).stroke_width(1),
            )))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// The panel's grid and axes: seconds across, `y_desc` up with values labelled by `y_label`.
fn draw_mesh<Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    y_desc: &str,
    y_label: &dyn Fn(&f64) -> String,
) -> Result<(), PlotError> {
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 12))
        .light_line_style(WHITE)
        .x_label_formatter(&|v| seconds_label(*v))
        .y_label_formatter(y_label)
        .draw()
        .map_err(draw_error)
}

/// The panel's legend box at `position`.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(draw_error)
}

/// The row (0 at the top) of each mark's label: the first row where the label before it
/// ends far enough to its left; a label is taken to be as wide as a tenth of the span.
fn label_rows(series: &Series, span: f64) -> Vec<usize> {
    let width = span / 10.0;
    let mut row_ends: Vec<f64> = Vec::new();
    series
        .marks
        .iter()
        .map(|mark| {
            let row = row_ends
                .iter()
                .position(|&end| end <= mark.at_s)
                .unwrap_or(row_ends.len());
            if row == row_ends.len() {
                row_ends.push(0.0);
            }
            row_ends[row] = mark.at_s + width;
            row
        })
        .collect()
}

/// A time label: whole seconds bare, others to a tenth.
fn seconds_label(s: f64) -> String {
    if (s - s.round()).abs() < 1e-9 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// A latency label without trailing noise: `0.25`, `2.5`, `40`.
fn short(ms: f64) -> String {
    match ms {
        ms if ms >= 10.0 => format!("{ms:.0}"),
        ms if ms >= 1.0 => format!("{ms:.1}"),
        ms => format!("{ms:.2}"),
    }
}

fn mark_colour(kind: MarkKind) -> RGBColor {
    match kind {
        MarkKind::Phase => PHASE_COLOUR,
        MarkKind::Fault => FAULT_COLOUR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::timeline::{Mark, Point};

    fn series() -> Series {
        let points = (0..12)
            .map(|second| Point {
                second,
                ops: if (5..8).contains(&second) {
                    4_000
                } else {
                    30_000
                },
                errors: u64::from(second == 5) * 12,
                p99_us: [Some(2_000 + second * 100), Some(4_000), None],
                covered_s: 1.0,
            })
            .collect();
        let mark = |at_s, kind, label: &str| Mark {
            at_s,
            kind,
            label: label.into(),
        };
        Series {
            points,
            marks: vec![
                mark(0.0, MarkKind::Phase, "load"),
                mark(2.0, MarkKind::Phase, "steady"),
                mark(5.0, MarkKind::Fault, "kill n3"),
                mark(8.0, MarkKind::Fault, "restart n3"),
            ],
        }
    }

    /// The contents of the SVG's `<text>` elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                Some(body.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn the_picture_has_both_panels_their_axes_the_phases_and_the_faults() {
        let text = svg(&series(), "recovery: n3 killed and restarted").unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
        assert!(text.trim_end().ends_with("</svg>"));
        let texts = texts(&text);
        for needle in [
            "recovery: n3 killed and restarted",
            "ops/s",
            "p99 latency (ms)",
            "ops/s (succeeded)",
            "errors/s",
            "read p99",
            "update p99",
            "load",
            "steady",
            "kill n3",
            "restart n3",
        ] {
            assert!(
                texts.iter().any(|t| t == needle),
                "no {needle:?} in {texts:?}"
            );
        }
        let seconds = texts.iter().filter(|t| *t == "seconds").count();
        assert_eq!(seconds, 2, "one time axis per panel: {texts:?}");
        assert!(
            !texts.iter().any(|t| t == "insert p99"),
            "a kind that never ran"
        );
        // The lines: ops, errors, two latency kinds, a legend sample each, and 4 marks x 2.
        let lines = text.matches("<polyline").count() + text.matches("<path").count();
        assert!(lines >= 4 + 4 + 8, "{lines} lines");
        // Faults in red, phases in grey.
        assert!(text.contains("#D62728"), "no red fault line");
        assert!(text.contains("#787878"), "no grey phase line");
    }

    #[test]
    fn labels_of_marks_close_together_go_to_rows_of_their_own() {
        let mut s = series();
        // load 0, steady 2, kill 5, restart 8 over 12 s: each 1.2 s wide, none overlaps.
        assert_eq!(label_rows(&s, 12.0), [0, 0, 0, 0]);
        s.marks[1].at_s = 0.5;
        s.marks[2].at_s = 1.0;
        assert_eq!(label_rows(&s, 12.0), [0, 1, 2, 0]);
    }

    #[test]
    fn an_empty_run_still_draws_and_the_file_is_written() {
        let empty = texts(&svg(&Series::default(), "nothing ran").unwrap());
        assert!(empty.iter().any(|t| t == "nothing ran"), "{empty:?}");
        assert!(empty.iter().any(|t| t == "seconds"), "{empty:?}");
        let dir = crate::testing::TempDir::new("bench-plot");
        let path = dir.join("run.svg");
        write_svg(&path, &series(), "t").unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(texts(&written).iter().any(|t| t == "kill n3"));
        let missing = dir.join("no/such/dir/run.svg");
        let err = write_svg(&missing, &series(), "t").unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
