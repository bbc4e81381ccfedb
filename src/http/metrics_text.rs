//! Reading numbers back out of the Prometheus text that `GET /metrics` serves.

/// The sum of every sample of metric `name` whose label set (the text between the braces,
/// empty when there are none) passes `labels`; `None` when no sample matched.
pub fn metric_sum(text: &str, name: &str, labels: impl Fn(&str) -> bool) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name || !labels(series_labels) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP dynamo_requests Client requests\n\
        # TYPE dynamo_requests counter\n\
        dynamo_requests_total{op=\"get\",outcome=\"ok\"} 7\n\
        dynamo_requests_total{op=\"put\",outcome=\"insufficient_acks\"} 2\n\
        dynamo_requests_total_extra 100\n\
        dynamo_keys 42\n\
        garbage\n";

    #[test]
    fn sums_matching_samples_only() {
        assert_eq!(
            metric_sum(TEXT, "dynamo_requests_total", |_| true),
            Some(9.0)
        );
        let failed = metric_sum(TEXT, "dynamo_requests_total", |l| !l.contains("\"ok\""));
        assert_eq!(failed, Some(2.0));
        assert_eq!(metric_sum(TEXT, "dynamo_keys", |_| true), Some(42.0));
        assert_eq!(metric_sum(TEXT, "dynamo_missing", |_| true), None);
    }
}
