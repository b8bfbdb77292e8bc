//! One parsed `/metrics` page: [`Scrape`].
//!
//! Parsing is done by the `prometheus-parse` crate (0.2). Two things in real
//! engine pages defeat it, so the text is pre-filtered line by line first —
//! nothing else is touched:
//!
//! * **Colons in metric names.** Every vLLM and SGLang metric is called
//!   `vllm:…` / `sglang:…`, but prometheus-parse matches names with `\w+`,
//!   which has no `:`, so it would silently drop all of them. In the metric
//!   name of sample, `# HELP` and `# TYPE` lines (never in label values) each
//!   `:` is replaced by U+02D0 `ː` (MODIFIER LETTER TRIANGULAR COLON), which
//!   Unicode `\w` accepts and which cannot occur in a valid name (names are
//!   ASCII), and mapped back after parsing.
//! * **Empty label sets.** `name{} 1` is valid but does not match its regex;
//!   the `{}` is dropped.
//!
//! `# UNIT`, `# EOF` and other comments are ignored by prometheus-parse
//! already. Known limits of prometheus-parse 0.2 that are *not* worked
//! around (none occurs on vLLM 0.32 or SGLang pages): label values containing
//! `,`, `=`, `}` or escaped quotes are split wrongly or the line is skipped.
//! Lines it cannot read are skipped and reported by
//! [`Scrape::skipped_lines`]; only a page with no readable sample at all is an
//! error.
//!
//! Accessors aggregate over label sets: [`gauge`](Scrape::gauge) and
//! [`counter`](Scrape::counter) sum, [`histogram`](Scrape::histogram) merges
//! bucket-wise. The `*_where` variants first keep only the series with one
//! label equal to a value. A metric absent from the page is `None`.

use crate::error::MetricsError;
use crate::histogram::Histogram;
use prometheus_parse::{LineInfo, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;

/// Stand-in for `:` in metric names while prometheus-parse reads them.
const COLON: char = '\u{02D0}';

/// The labels of one series, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the series has no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn matches(&self, filter: Option<(&str, &str)>) -> bool {
        filter.is_none_or(|(k, v)| self.get(k) == Some(v))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Labels(iter.into_iter().collect())
    }
}

/// The value of one series as the page typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValue {
    /// `# TYPE … counter`.
    Counter(f64),
    /// `# TYPE … gauge`.
    Gauge(f64),
    /// No (or an unknown) `# TYPE`; also a histogram's `_sum` and `_count`.
    Untyped(f64),
    /// A histogram's `_bucket` series as `(le, cumulative count)`, in page
    /// order; the series is named after the histogram (no `_bucket`).
    Buckets(Vec<(f64, f64)>),
    /// A summary's quantile series as `(quantile, value)`.
    Quantiles(Vec<(f64, f64)>),
}

impl SampleValue {
    /// The number, for counters, gauges and untyped samples.
    pub fn scalar(&self) -> Option<f64> {
        match *self {
            SampleValue::Counter(v) | SampleValue::Gauge(v) | SampleValue::Untyped(v) => Some(v),
            SampleValue::Buckets(_) | SampleValue::Quantiles(_) => None,
        }
    }
}

/// One series of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name as on the page (`vllm:prompt_tokens_total`); for
    /// histogram buckets the histogram's name.
    pub name: String,
    /// Its labels (without `le` / `quantile` for buckets and quantiles).
    pub labels: Labels,
    /// Its value.
    pub value: SampleValue,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
    by_name: HashMap<String, Vec<usize>>,
    skipped: Vec<usize>,
}

impl Scrape {
    /// Parse a Prometheus text-format page (vLLM's and SGLang's `/metrics`).
    ///
    /// Unreadable lines are skipped (see [`skipped_lines`](Scrape::skipped_lines));
    /// the result is an error only if the text has non-comment lines and not
    /// one of them is a sample, i.e. it is not a metrics page. An empty page is
    /// an empty scrape.
    pub fn parse(text: &str) -> Result<Scrape, MetricsError> {
        let mut rewritten = String::with_capacity(text.len() + 64);
        let mut skipped = Vec::new();
        let mut any_sample = false;
        for (i, line) in text.lines().enumerate() {
            let start = rewritten.len();
            rewrite_line(line, &mut rewritten);
            match LineInfo::parse(&rewritten[start..]) {
                LineInfo::Sample { value, .. } => {
                    if parse_float(value).is_some() {
                        any_sample = true;
                    } else {
                        skipped.push(i + 1);
                    }
                }
                LineInfo::Ignored if !line.trim_start().starts_with('#') => skipped.push(i + 1),
                _ => {}
            }
            rewritten.push('\n');
        }
        if !any_sample {
            if let Some(&line) = skipped.first() {
                let text: String = text
                    .lines()
                    .nth(line - 1)
                    .unwrap_or_default()
                    .chars()
                    .take(120)
                    .collect();
                return Err(MetricsError::NotExposition { line, text });
            }
        }
        let lines = rewritten.lines().map(|l| Ok::<_, io::Error>(l.to_string()));
        // The iterator never yields an error, so neither does the parser.
        let parsed =
            prometheus_parse::Scrape::parse(lines).map_err(|e| MetricsError::NotExposition {
                line: 0,
                text: e.to_string(),
            })?;

        let mut scrape = Scrape {
            skipped,
            ..Scrape::default()
        };
        for s in parsed.samples {
            let value = match s.value {
                Value::Counter(v) => SampleValue::Counter(v),
                Value::Gauge(v) => SampleValue::Gauge(v),
                Value::Untyped(v) => SampleValue::Untyped(v),
                Value::Histogram(b) => {
                    SampleValue::Buckets(b.iter().map(|h| (h.less_than, h.count)).collect())
                }
                Value::Summary(q) => {
                    SampleValue::Quantiles(q.iter().map(|h| (h.quantile, h.count)).collect())
                }
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.trim().to_string(), unescape(v)))
                .collect();
            scrape.push(Sample {
                name: s.metric.replace(COLON, ":"),
                labels,
                value,
            });
        }
        Ok(scrape)
    }

    fn push(&mut self, sample: Sample) {
        self.by_name
            .entry(sample.name.clone())
            .or_default()
            .push(self.samples.len());
        self.samples.push(sample);
    }

    /// 1-based numbers of lines that were neither comments, blank, nor
    /// readable samples.
    pub fn skipped_lines(&self) -> &[usize] {
        &self.skipped
    }

    /// Number of series (a histogram's buckets count as one series, its
    /// `_sum` and `_count` as one each).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when the page had no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Every series, in no particular order.
    pub fn all_samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Distinct sample names, sorted (histograms appear under their own name
    /// and as `_sum` / `_count`).
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// True if some series is called `name` (for counters, also `name_total`).
    pub fn contains(&self, name: &str) -> bool {
        counter_names(name)
            .iter()
            .any(|n| self.by_name.contains_key(n.as_str()))
            || self.by_name.contains_key(&format!("{name}_bucket"))
    }

    /// The series called exactly `name`.
    pub fn samples<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(move |&i| &self.samples[i])
    }

    fn scalar_sum(&self, name: &str, filter: Option<(&str, &str)>) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for s in self.samples(name).filter(|s| s.labels.matches(filter)) {
            if let Some(v) = s.value.scalar() {
                found = true;
                sum += v;
            }
        }
        found.then_some(sum)
    }

    /// Sum of gauge `name` over its label sets (any scalar series of that
    /// name counts); `None` if absent.
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.scalar_sum(name, None)
    }

    /// Like [`gauge`](Scrape::gauge), over the series whose `label` equals `value`.
    pub fn gauge_where(&self, name: &str, label: &str, value: &str) -> Option<f64> {
        self.scalar_sum(name, Some((label, value)))
    }

    /// Mean of gauge `name` over its label sets, for ratios such as KV-cache
    /// usage where a sum over data-parallel engines would exceed 1.
    pub fn gauge_mean(&self, name: &str) -> Option<f64> {
        let (n, sum) = self
            .samples(name)
            .filter_map(|s| s.value.scalar())
            .fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
        (n > 0).then(|| sum / n as f64)
    }

    /// Sum of counter `name` over its label sets. `name` may be given with or
    /// without the `_total` suffix; the first spelling present on the page
    /// wins (`x` is looked up as `x_total`, then `x`).
    pub fn counter(&self, name: &str) -> Option<f64> {
        counter_names(name)
            .iter()
            .find_map(|n| self.scalar_sum(n, None))
    }

    /// Like [`counter`](Scrape::counter), over the series whose `label`
    /// equals `value`.
    pub fn counter_where(&self, name: &str, label: &str, value: &str) -> Option<f64> {
        counter_names(name)
            .iter()
            .find_map(|n| self.scalar_sum(n, Some((label, value))))
    }

    /// Counter `name` summed per value of `label` (e.g. `finished_reason` of
    /// `vllm:request_success_total`); series without the label are left out.
    pub fn counter_by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let Some(n) = counter_names(name)
            .into_iter()
            .find(|n| self.by_name.contains_key(n))
        else {
            return out;
        };
        for s in self.samples(&n) {
            if let (Some(k), Some(v)) = (s.labels.get(label), s.value.scalar()) {
                *out.entry(k.to_string()).or_insert(0.0) += v;
            }
        }
        out
    }

    /// The creation timestamp (Unix seconds) Python's client exports as
    /// `<name>_created` for counters and histograms (a counter's `_total`
    /// suffix is dropped first); the largest over label sets. A change between
    /// two scrapes means the series was re-created, i.e. reset.
    pub fn created(&self, name: &str) -> Option<f64> {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.samples(&format!("{base}_created"))
            .filter_map(|s| s.value.scalar())
            .reduce(f64::max)
    }

    /// Histogram `name`, its label sets merged bucket-wise
    /// ([`Histogram::merge`]); `None` if absent.
    ///
    /// Buckets come from the `name_bucket` series (typed `histogram` or
    /// untyped with an `le` label), `sum` and `count` from `name_sum` and
    /// `name_count` of the same label set (a missing `_count` is taken from the
    /// `+Inf` bucket, a missing `_sum` is NaN).
    pub fn histogram(&self, name: &str) -> Option<Histogram> {
        self.histogram_filtered(name, None)
    }

    /// Like [`histogram`](Scrape::histogram), over the series whose `label`
    /// equals `value`.
    pub fn histogram_where(&self, name: &str, label: &str, value: &str) -> Option<Histogram> {
        self.histogram_filtered(name, Some((label, value)))
    }

    fn histogram_filtered(&self, name: &str, filter: Option<(&str, &str)>) -> Option<Histogram> {
        #[derive(Default)]
        struct Series {
            buckets: Vec<(f64, f64)>,
            sum: Option<f64>,
            count: Option<f64>,
        }
        let mut untyped_labels: Vec<Labels> = Vec::new();
        let mut untyped_buckets: Vec<(usize, f64, f64)> = Vec::new();
        // Buckets exposed without a `# TYPE … histogram` line arrive as
        // untyped `name_bucket{le=…}` samples.
        for s in self.samples(&format!("{name}_bucket")) {
            let (Some(le), Some(v)) = (s.labels.get("le").and_then(parse_float), s.value.scalar())
            else {
                continue;
            };
            let labels: Labels = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if !labels.matches(filter) {
                continue;
            }
            let idx = match untyped_labels.iter().position(|l| *l == labels) {
                Some(i) => i,
                None => {
                    untyped_labels.push(labels);
                    untyped_labels.len() - 1
                }
            };
            untyped_buckets.push((idx, le, v));
        }
        let mut series: BTreeMap<&Labels, Series> = BTreeMap::new();
        for s in self.samples(name).filter(|s| s.labels.matches(filter)) {
            if let SampleValue::Buckets(b) = &s.value {
                series.entry(&s.labels).or_default().buckets.extend(b);
            }
        }
        for (idx, le, v) in untyped_buckets {
            series
                .entry(&untyped_labels[idx])
                .or_default()
                .buckets
                .push((le, v));
        }
        for s in self
            .samples(&format!("{name}_sum"))
            .filter(|s| s.labels.matches(filter))
        {
            if let Some(v) = s.value.scalar() {
                series.entry(&s.labels).or_default().sum = Some(v);
            }
        }
        for s in self
            .samples(&format!("{name}_count"))
            .filter(|s| s.labels.matches(filter))
        {
            if let Some(v) = s.value.scalar() {
                series.entry(&s.labels).or_default().count = Some(v);
            }
        }
        let mut total: Option<Histogram> = None;
        for (_, s) in series {
            if s.buckets.is_empty() && s.count.is_none() {
                // A lone `_sum` is not a histogram.
                continue;
            }
            let mut h = Histogram::new(s.buckets, s.sum.unwrap_or(f64::NAN), 0.0);
            h.count = s.count.unwrap_or_else(|| {
                h.buckets
                    .last()
                    .filter(|b| b.0 == f64::INFINITY)
                    .map_or(0.0, |b| b.1)
            });
            match &mut total {
                Some(t) => t.merge(&h),
                None => total = Some(h),
            }
        }
        total
    }

    /// Distinct values of `label` over the series of `name` (any kind), sorted.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .samples(name)
            .filter_map(|s| s.labels.get(label))
            .collect();
        set.into_iter().collect()
    }

    /// The labels of the first series of `name`: the payload of an info
    /// metric such as `vllm:cache_config_info`.
    pub fn info(&self, name: &str) -> Option<&Labels> {
        self.samples(name).next().map(|s| &s.labels)
    }
}

/// The spellings a counter may have on the page, in lookup order.
fn counter_names(name: &str) -> Vec<String> {
    match name.strip_suffix("_total") {
        Some(base) => vec![name.to_string(), base.to_string()],
        None => vec![format!("{name}_total"), name.to_string()],
    }
}

/// Float syntax of the text format (Go's `ParseFloat`: `+Inf`, `NaN`, ...).
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    if s.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    s.parse::<f64>().ok()
}

/// Undo the text format's label escapes (`\\`, `\"`, `\n`).
fn unescape(v: &str) -> String {
    if !v.contains('\\') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Copy `line` to `out`, with the metric name's colons replaced by [`COLON`]
/// and an empty `{}` label set dropped (see the module docs for why).
fn rewrite_line(line: &str, out: &mut String) {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    out.push_str(indent);
    if let Some(rest) = body.strip_prefix('#') {
        // `# HELP name doc` / `# TYPE name type`: the third token is the name.
        let after_hash = rest.trim_start();
        let keyword_len = after_hash
            .find(char::is_whitespace)
            .unwrap_or(after_hash.len());
        let keyword = &after_hash[..keyword_len];
        if keyword == "HELP" || keyword == "TYPE" {
            let after_kw = &after_hash[keyword_len..];
            let name_start = after_kw.len() - after_kw.trim_start().len();
            let name_part = &after_kw[name_start..];
            let name_len = name_part
                .find(char::is_whitespace)
                .unwrap_or(name_part.len());
            out.push_str(&body[..body.len() - name_part.len()]);
            push_name(&name_part[..name_len], out);
            out.push_str(&name_part[name_len..]);
        } else {
            out.push_str(body);
        }
        return;
    }
    let name_len = body
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(body.len());
    push_name(&body[..name_len], out);
    let rest = &body[name_len..];
    out.push_str(rest.strip_prefix("{}").unwrap_or(rest));
}

fn push_name(name: &str, out: &mut String) {
    out.extend(name.chars().map(|c| if c == ':' { COLON } else { c }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 20.0
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e+09
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 4.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 6.0
# TYPE vllm:ttft_seconds histogram
vllm:ttft_seconds_bucket{engine="0",le="0.1",model_name="m"} 1.0
vllm:ttft_seconds_bucket{engine="0",le="1.0",model_name="m"} 3.0
vllm:ttft_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0
vllm:ttft_seconds_count{engine="0",model_name="m"} 4.0
vllm:ttft_seconds_sum{engine="0",model_name="m"} 2.5
vllm:ttft_seconds_bucket{engine="1",le="0.1",model_name="m"} 0.0
vllm:ttft_seconds_bucket{engine="1",le="1.0",model_name="m"} 1.0
vllm:ttft_seconds_bucket{engine="1",le="+Inf",model_name="m"} 1.0
vllm:ttft_seconds_count{engine="1",model_name="m"} 1.0
vllm:ttft_seconds_sum{engine="1",model_name="m"} 0.5
plain_untyped{} 7
# UNIT foo seconds
untyped_hist_bucket{le="1"} 2
untyped_hist_bucket{le="+Inf"} 3
untyped_hist_sum 4
untyped_hist_count 3
"#;

    fn scrape() -> Scrape {
        Scrape::parse(PAGE).unwrap()
    }

    #[test]
    fn colon_names_survive_parsing() {
        let s = scrape();
        assert!(s.names().contains(&"vllm:num_requests_running"));
        assert!(s.names().iter().all(|n| !n.contains(COLON)));
        assert!(s.skipped_lines().is_empty(), "{:?}", s.skipped_lines());
    }

    #[test]
    fn gauges_sum_or_average_over_label_sets() {
        let s = scrape();
        assert_eq!(s.gauge("vllm:num_requests_running"), Some(5.0));
        assert_eq!(
            s.gauge_where("vllm:num_requests_running", "engine", "1"),
            Some(2.0)
        );
        assert_eq!(
            s.gauge_where("vllm:num_requests_running", "engine", "9"),
            None
        );
        assert_eq!(s.gauge_mean("vllm:kv_cache_usage_perc"), Some(0.375));
        assert_eq!(s.gauge("vllm:nope"), None);
        assert_eq!(s.gauge("plain_untyped"), Some(7.0));
    }

    #[test]
    fn counters_accept_either_spelling() {
        let s = scrape();
        assert_eq!(s.counter("vllm:prompt_tokens_total"), Some(120.0));
        assert_eq!(s.counter("vllm:prompt_tokens"), Some(120.0));
        assert_eq!(
            s.counter_where("vllm:prompt_tokens", "engine", "1"),
            Some(20.0)
        );
        assert_eq!(s.counter("vllm:request_success"), Some(10.0));
        let by = s.counter_by("vllm:request_success_total", "finished_reason");
        assert_eq!(by.get("stop"), Some(&4.0));
        assert_eq!(by.get("length"), Some(&6.0));
        assert_eq!(s.counter("vllm:missing"), None);
        // `plain_untyped` has no `_total` but is still found as written.
        assert_eq!(s.counter("plain_untyped"), Some(7.0));
        assert!(s.contains("vllm:prompt_tokens"));
        assert!(s.contains("vllm:ttft_seconds"));
        assert!(!s.contains("vllm:missing"));
    }

    #[test]
    fn created_timestamps_strip_total() {
        let s = scrape();
        assert_eq!(s.created("vllm:prompt_tokens_total"), Some(1.7e9));
        assert_eq!(s.created("vllm:ttft_seconds"), None);
    }

    #[test]
    fn histograms_merge_label_sets() {
        let s = scrape();
        let h = s.histogram("vllm:ttft_seconds").unwrap();
        assert_eq!(
            h.buckets,
            vec![(0.1, 1.0), (1.0, 4.0), (f64::INFINITY, 5.0)]
        );
        assert_eq!((h.sum, h.count), (3.0, 5.0));
        let h1 = s
            .histogram_where("vllm:ttft_seconds", "engine", "1")
            .unwrap();
        assert_eq!((h1.sum, h1.count), (0.5, 1.0));
        assert!(s.histogram("vllm:nope").is_none());
        assert!(s
            .histogram_where("vllm:ttft_seconds", "engine", "7")
            .is_none());
    }

    #[test]
    fn untyped_buckets_form_a_histogram() {
        let h = scrape().histogram("untyped_hist").unwrap();
        assert_eq!(h.buckets, vec![(1.0, 2.0), (f64::INFINITY, 3.0)]);
        assert_eq!((h.sum, h.count), (4.0, 3.0));
    }

    #[test]
    fn labels_and_info() {
        let s = scrape();
        assert_eq!(
            s.label_values("vllm:num_requests_running", "engine"),
            vec!["0", "1"]
        );
        let info = s.info("vllm:request_success_total").unwrap();
        assert_eq!(info.get("model_name"), Some("m"));
        assert!(s.info("vllm:nope").is_none());
    }

    #[test]
    fn garbage_lines_are_skipped_and_reported() {
        let s = Scrape::parse("a 1\nthis is not { a sample\nb{x=\"y\"} notanumber\nc 2\n").unwrap();
        assert_eq!(s.skipped_lines(), &[2, 3]);
        assert_eq!(s.gauge("a"), Some(1.0));
        assert_eq!(s.gauge("c"), Some(2.0));
    }

    #[test]
    fn a_page_without_samples_is_an_error() {
        let err = Scrape::parse("<html>\n<body>502 Bad Gateway</body>\n").unwrap_err();
        assert!(
            matches!(err, MetricsError::NotExposition { line: 1, .. }),
            "{err}"
        );
        // Comments only, or nothing at all, is a valid empty page.
        assert!(Scrape::parse("# HELP x y\n\n").unwrap().is_empty());
        assert!(Scrape::parse("").unwrap().is_empty());
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        assert_eq!(unescape(r"a\\b\nc"), "a\\b\nc");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn rewrite_touches_only_names() {
        let mut out = String::new();
        rewrite_line(r#"vllm:a{u="http://x:1"} 1"#, &mut out);
        assert_eq!(out, "vllm\u{02D0}a{u=\"http://x:1\"} 1");
        out.clear();
        rewrite_line("# TYPE vllm:a counter", &mut out);
        assert_eq!(out, "# TYPE vllm\u{02D0}a counter");
        out.clear();
        rewrite_line("# HELP vllm:a Time: in s.", &mut out);
        assert_eq!(out, "# HELP vllm\u{02D0}a Time: in s.");
        out.clear();
        rewrite_line("x{} 3", &mut out);
        assert_eq!(out, "x 3");
    }
}
