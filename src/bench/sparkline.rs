//! The run as a few lines of text: ops/s, errors and the worst p99 per column, drawn with
//! block characters, and the marks under them. It shows in a terminal and in a Markdown file
//! (BENCHMARKS.md keeps such pictures), where the SVG of `--plot` needs a viewer.

use super::timeline::{MarkKind, Point, Series};

/// The widest picture drawn: longer runs put several seconds in one column.
pub const MAX_COLUMNS: usize = 72;

const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The lines of the picture of `series`, or none when it has no point.
pub fn sparkline(series: &Series) -> Vec<String> {
    if series.points.is_empty() {
        return Vec::new();
    }
    let seconds = series.span_s().ceil().max(1.0) as usize;
    let per_column = seconds.div_ceil(MAX_COLUMNS);
    let columns = seconds.div_ceil(per_column);
    let mut ops = vec![0u64; columns];
    let mut errors = vec![0u64; columns];
    let mut p99 = vec![0u64; columns];
    let mut covered_s = vec![0f64; columns];
    for point in &series.points {
        let column = (point.second as usize / per_column).min(columns - 1);
        ops[column] += point.ops;
        errors[column] += point.errors;
        p99[column] = p99[column].max(worst_p99(point));
        covered_s[column] += point.covered_s;
    }
    // Per second of the time covered, so that a column of several seconds, or the run's
    // last and partial second, reads like any other.
    let per_second = |(v, s): (u64, &f64)| if *s > 0.0 { (v as f64 / s) as u64 } else { 0 };
    let ops: Vec<u64> = ops.into_iter().zip(&covered_s).map(per_second).collect();
    let errors: Vec<u64> = errors.into_iter().zip(&covered_s).map(per_second).collect();
    let peak_ops = ops.iter().copied().max().unwrap_or(0);
    let peak_errors = errors.iter().copied().max().unwrap_or(0);
    let peak_p99 = p99.iter().copied().max().unwrap_or(0);
    let mut lines = vec![
        format!("ops/s   {}  peak {peak_ops}", bars(&ops)),
        format!("errors  {}  peak {peak_errors}/s", bars(&errors)),
        format!(
            "p99     {}  peak {:.1} ms",
            bars(&p99),
            peak_p99 as f64 / 1000.0
        ),
    ];
    lines.push(format!(
        "        {}",
        marks_row(series, per_column, columns)
    ));
    let unit = if per_column == 1 {
        "1 s".to_string()
    } else {
        format!("{per_column} s")
    };
    let legend: Vec<String> = series
        .marks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kind = match m.kind {
                MarkKind::Phase => "phase",
                MarkKind::Fault => "fault",
            };
            format!("{} {kind} {} at {:.0} s", mark_symbol(i), m.label, m.at_s)
        })
        .collect();
    lines.push(format!(
        "        one column = {unit}{}{}",
        if legend.is_empty() { "" } else { "; " },
        legend.join(", ")
    ));
    lines
}

/// The highest p99 of any operation kind in `point` (µs), 0 without operations.
fn worst_p99(point: &Point) -> u64 {
    point.p99_us.iter().flatten().copied().max().unwrap_or(0)
}

/// One block per value, scaled to the largest; a zero is a blank, so gaps stand out.
fn bars(values: &[u64]) -> String {
    let top = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v == 0 || top == 0 {
                ' '
            } else {
                let level = ((v as f64 / top as f64) * (LEVELS.len() - 1) as f64).round();
                LEVELS[level as usize]
            }
        })
        .collect()
}

/// The symbol of the `i`-th mark: 1..9, then a..z, then `*`.
fn mark_symbol(i: usize) -> char {
    match i {
        0..=8 => char::from(b'1' + i as u8),
        9..=34 => char::from(b'a' + (i - 9) as u8),
        _ => '*',
    }
}

/// Each mark's symbol under the column it falls in (a later mark wins a shared column).
fn marks_row(series: &Series, per_column: usize, columns: usize) -> String {
    let mut row = vec![' '; columns];
    for (i, mark) in series.marks.iter().enumerate() {
        let column = ((mark.at_s.max(0.0) as usize) / per_column).min(columns - 1);
        row[column] = mark_symbol(i);
    }
    row.into_iter().collect::<String>().trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::timeline::Mark;

    fn point(second: u64, ops: u64, errors: u64, p99: u64) -> Point {
        Point {
            second,
            ops,
            errors,
            p99_us: [Some(p99), None, None],
            covered_s: 1.0,
        }
    }

    #[test]
    fn a_kill_shows_as_a_dip_in_ops_a_rise_in_errors_and_a_mark() {
        let mut points: Vec<Point> = (0..10).map(|s| point(s, 1000, 0, 2000)).collect();
        points[5] = point(5, 0, 300, 9000);
        let series = Series {
            points,
            marks: vec![
                Mark {
                    at_s: 0.0,
                    kind: MarkKind::Phase,
                    label: "run".into(),
                },
                Mark {
                    at_s: 5.2,
                    kind: MarkKind::Fault,
                    label: "kill n3".into(),
                },
            ],
        };
        let lines = sparkline(&series);
        assert_eq!(lines[0], "ops/s   █████ ████  peak 1000");
        assert_eq!(lines[1], "errors       █      peak 300/s");
        assert_eq!(lines[2], "p99     ▃▃▃▃▃█▃▃▃▃  peak 9.0 ms");
        assert_eq!(lines[3], "        1    2");
        assert_eq!(
            lines[4],
            "        one column = 1 s; 1 phase run at 0 s, 2 fault kill n3 at 5 s"
        );
    }

    #[test]
    fn a_long_run_is_folded_into_at_most_the_widest_picture() {
        let points: Vec<Point> = (0..300).map(|s| point(s, 100, 0, 1000)).collect();
        let series = Series {
            points,
            marks: Vec::new(),
        };
        let lines = sparkline(&series);
        let width = lines[0].chars().filter(|c| LEVELS.contains(c)).count();
        assert!((MAX_COLUMNS / 2..=MAX_COLUMNS).contains(&width), "{width}");
        assert!(lines[0].ends_with("peak 100"), "{}", lines[0]);
        assert!(lines[4].contains("one column = 5 s"), "{}", lines[4]);
        assert!(sparkline(&Series::default()).is_empty());
    }
}
