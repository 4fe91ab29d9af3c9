//! What every `holdfast bench` client shares for showing its results: latency histograms, the
//! summary table printed at the end (or JSON lines with `--json`), and the progress bar drawn on
//! stderr while a bench runs. It does not measure anything itself.

use std::io::Write;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Largest latency a histogram keeps apart from the others (larger ones count as this): one hour.
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant digits kept: 3 is a relative error of 0.1 % at any magnitude, in ~30 KiB.
const LATENCY_DIGITS: u8 = 3;

/// Adds `--json` to a bench's command.
pub fn json_arg(command: Command) -> Command {
    command.arg(
        Arg::new("json")
            .long("json")
            .num_args(0)
            .help("print JSON lines for machines (the bench/ scripts read these) instead of the summary table"),
    )
}

/// Whether the bench was asked for `--json`.
pub fn wants_json(args: &ArgMatches) -> bool {
    args.get_flag("json")
}

/// Latencies in microseconds. Merges exactly with another (`add`), also across processes: a
/// `--procs` child sends its histogram as `[value, count]` pairs (`to_json`, `from_json`).
/// The largest value is also kept exactly, and no percentile is reported above it (a histogram
/// bucket's upper edge can be up to 0.1 % above the values in it).
#[derive(Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
    max_us: u64,
}

impl Default for Latency {
    fn default() -> Latency {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_DIGITS).expect("valid bounds");
        Latency { histogram, max_us: 0 }
    }
}

impl Latency {
    /// Records one latency in microseconds (above an hour counts as an hour).
    pub fn record_us(&mut self, us: u64) {
        let us = us.min(LATENCY_MAX_US);
        self.histogram.saturating_record(us);
        self.max_us = self.max_us.max(us);
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_us(latency.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at percentile `p` (0 to 100) in milliseconds, to the microsecond; `None` when
    /// nothing was recorded.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let us = self.histogram.value_at_percentile(p).min(self.max_us);
        (!self.histogram.is_empty()).then(|| round3(us as f64 / 1000.0))
    }

    /// The largest latency in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        (!self.histogram.is_empty()).then(|| round3(self.max_us as f64 / 1000.0))
    }

    /// `p50_ms`, `p90_ms`, `p99_ms`, `max_ms` under `prefix` (e.g. `"sse_"`), for a JSON line.
    pub fn summary_json(&self, prefix: &str) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)] {
            map.insert(format!("{prefix}{name}_ms"), json!(self.percentile_ms(p)));
        }
        map.insert(format!("{prefix}max_ms"), json!(self.max_ms()));
        map
    }

    /// The recorded values as `{"max": µs, "counts": [[value, count], …]}` (only buckets that
    /// hold any).
    pub fn to_json(&self) -> Value {
        let pairs: Vec<Value> =
            self.histogram.iter_recorded().map(|v| json!([v.value_iterated_to(), v.count_at_value()])).collect();
        json!({"max": self.max_us, "counts": pairs})
    }

    /// The inverse of [`Latency::to_json`].
    pub fn from_json(value: &Value) -> Result<Latency, String> {
        let mut latency = Latency::default();
        let pairs = value["counts"].as_array().ok_or("a histogram has a list of counts")?;
        for pair in pairs {
            let (Some(v), Some(n)) = (pair.get(0).and_then(Value::as_u64), pair.get(1).and_then(Value::as_u64)) else {
                return Err(format!("bad histogram pair {pair}"));
            };
            latency.histogram.saturating_record_n(v.min(LATENCY_MAX_US), n);
        }
        latency.max_us = value["max"].as_u64().ok_or("a histogram has a max")?;
        Ok(latency)
    }
}

/// Rounds to three decimals (milliseconds to the microsecond, seconds to the millisecond).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `x` per second over `seconds` (0 when no time passed).
pub fn per_second(x: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        (x / seconds).round()
    } else {
        0.0
    }
}

/// Prints one JSON line on stdout and flushes it (scripts poll for lines while a client runs).
pub fn print_json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// A JSON value as a table cell: numbers as they are (big counts with thousands separators),
/// `null` as `-`, strings without quotes.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => thousands(n.as_i64().unwrap_or(i64::MAX)),
        Value::Number(n) => {
            // Rates: whole numbers from 1,000 up; smaller figures to three decimals at most.
            let x = n.as_f64().unwrap_or(0.0);
            if x.abs() >= 1000.0 {
                thousands(x.round() as i64)
            } else {
                let text = format!("{x:.3}");
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        }
        other => other.to_string(),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut groups: Vec<&str> =
        digits.as_bytes().rchunks(3).map(|g| std::str::from_utf8(g).expect("ASCII digits")).collect();
    groups.reverse();
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", groups.join(","))
}

/// A summary table: a header row and rows of cells; the first column left-aligned, the others
/// right-aligned.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(headers: &[&str]) -> Table {
        Table { rows: vec![headers.iter().map(|h| h.to_string()).collect()] }
    }

    /// A row of the keys `keys` of a JSON object (missing keys show as `-`).
    pub fn row_of(&mut self, line: &Value, keys: &[&str]) {
        self.rows.push(keys.iter().map(|k| cell(line.get(*k).unwrap_or(&Value::Null))).collect());
    }

    /// A row of ready-made cells.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let text = row.get(c).map_or("", String::as_str);
                if c == 0 {
                    line.push_str(&format!("{text:<width$}"));
                } else {
                    line.push_str(&format!("  {text:>width$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.render().as_bytes());
        let _ = out.flush();
    }
}

/// A progress bar on stderr for `len` steps (0: a spinner with a count), labelled `label`.
/// Hidden when stderr is not a terminal (indicatif draws nothing then) and in `--procs` children
/// (`hidden`), whose parent draws its own.
pub fn progress(len: u64, label: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = if len == 0 {
        "{spinner} {msg}: {pos} ({per_sec}, {elapsed})"
    } else {
        "{msg} [{bar:30}] {pos}/{len} ({per_sec}, {elapsed}, eta {eta})"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    if len == 0 {
        bar.set_length(u64::MAX);
    }
    bar.set_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_through_json() {
        let (mut a, mut b, mut direct) = (Latency::default(), Latency::default(), Latency::default());
        for us in 1..=1000 {
            a.record_us(us);
            direct.record_us(us);
        }
        for us in [5_000_000, 0] {
            b.record_us(us);
            direct.record_us(us);
        }
        let mut merged = Latency::from_json(&a.to_json()).unwrap();
        merged.add(&Latency::from_json(&b.to_json()).unwrap());
        assert_eq!(merged.len(), 1002);
        for p in [0.0, 50.0, 90.0, 99.0, 100.0] {
            assert_eq!(merged.percentile_ms(p), direct.percentile_ms(p), "p{p}");
        }
        // The largest value is exact, and no percentile above it.
        assert_eq!(merged.max_ms(), Some(5000.0));
        assert_eq!(merged.percentile_ms(100.0), Some(5000.0));
        let mut one = Latency::default();
        one.record_us(15_038);
        assert_eq!((one.percentile_ms(99.0), one.max_ms()), (Some(15.038), Some(15.038)));
        assert_eq!(Latency::default().percentile_ms(50.0), None);
        assert!(Latency::from_json(&json!({"max": 1, "counts": [[1]]})).is_err());
        assert!(Latency::from_json(&json!([[1, 1]])).is_err());
    }

    #[test]
    fn tables_align_and_show_missing_keys() {
        let mut table = Table::new(&["mode", "req/s", "p50_ms"]);
        table.row_of(
            &json!({"mode": "keepalive", "req_per_s": 250000.0, "p50_ms": 0.12}),
            &["mode", "req_per_s", "p50_ms"],
        );
        table.row_of(&json!({"mode": "close"}), &["mode", "req_per_s", "p50_ms"]);
        assert_eq!(
            table.render(),
            "mode         req/s  p50_ms\nkeepalive  250,000    0.12\nclose            -       -\n"
        );
        assert_eq!(cell(&json!(1234567)), "1,234,567");
        assert_eq!(cell(&json!(-1000)), "-1,000");
    }
}
