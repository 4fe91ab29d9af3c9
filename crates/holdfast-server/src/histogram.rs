//! Latency histograms that never lock: fixed buckets of `AtomicU64` and a sum, read by
//! `/metrics` (through prometheus-client's encoders) and `/admin/stats`.
//!
//! prometheus-client's own `Histogram` takes a lock per observation; the push shards observe
//! every delivery (~100k a second on two cores), so they count into a [`LocalHistogram`] of plain
//! integers and add it to the shared [`Histogram`] once per round. The connection tasks, which
//! observe once per request, add to the shared one directly: a few relaxed atomic adds.
//!
//! What it does not own: what is measured, and when (the connection loop, the shards).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets, in seconds: 0.1 ms to 10 s in 1-2.5-5 steps (×2 to ×2.5), from
/// a loopback delivery to a broker round trip that is about to time out. A last bucket (+Inf)
/// takes the rest.
pub(crate) const BOUNDS_SECONDS: [f64; BUCKETS - 1] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The same bounds in nanoseconds, for the bucket search.
const BOUNDS_NANOS: [u64; BUCKETS - 1] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets, the last one (+Inf) included.
const BUCKETS: usize = 17;

/// The bucket of a duration: the first whose upper bound it does not exceed (`le`).
fn bucket_of(nanos: u64) -> usize {
    BOUNDS_NANOS.partition_point(|&bound| bound < nanos)
}

fn nanos_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram shared by threads: each observation is two relaxed atomic adds.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative).
    counts: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let nanos = nanos_of(duration);
        self.counts[bucket_of(nanos)].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Adds what a thread counted on its own, and empties it.
    pub fn absorb(&self, local: &mut LocalHistogram) {
        if local.sum_nanos == 0 && local.counts.iter().all(|&n| n == 0) {
            return;
        }
        for (shared, count) in self.counts.iter().zip(&mut local.counts) {
            if *count > 0 {
                shared.fetch_add(std::mem::take(count), Relaxed);
            }
        }
        self.sum_nanos.fetch_add(std::mem::take(&mut local.sum_nanos), Relaxed);
    }

    /// A copy of the counts now (each bucket read once: the copy's count is its buckets' sum).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_nanos: self.sum_nanos.load(Relaxed),
        }
    }
}

/// A histogram one thread fills without atomics, added to a shared [`Histogram`] now and then
/// ([`Histogram::absorb`]).
#[derive(Debug, Default)]
pub(crate) struct LocalHistogram {
    counts: [u64; BUCKETS],
    sum_nanos: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, duration: Duration) {
        let nanos = nanos_of(duration);
        self.counts[bucket_of(nanos)] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), one per bound of [`HistogramSnapshot::bounds`]
    /// and a last one for +Inf.
    pub counts: Vec<u64>,
    /// Sum of the observations, in nanoseconds.
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Upper bounds of the buckets, in seconds (without the last, +Inf).
    pub fn bounds() -> &'static [f64] {
        &BOUNDS_SECONDS
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

/// `/admin/stats`: `{"bounds":[…],"counts":[…],"count":N,"sum":seconds}`; `counts` has one more
/// entry than `bounds` (+Inf) and is not cumulative.
impl serde::Serialize for HistogramSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("Histogram", 4)?;
        out.serialize_field("bounds", HistogramSnapshot::bounds())?;
        out.serialize_field("counts", &self.counts)?;
        out.serialize_field("count", &self.count())?;
        out.serialize_field("sum", &self.sum_seconds())?;
        out.end()
    }
}

/// `/metrics`: a classic Prometheus histogram (`_bucket{le=…}` cumulative, `_sum`, `_count`).
impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // (upper bound, count in that bucket): the encoders make them cumulative.
        let buckets: Vec<(f64, u64)> =
            BOUNDS_SECONDS.iter().copied().chain([f64::INFINITY]).zip(self.counts.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl TypedMetric for HistogramSnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_same_in_seconds_and_nanoseconds() {
        for (seconds, nanos) in BOUNDS_SECONDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
        assert!(BOUNDS_NANOS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn a_value_on_a_bound_goes_in_that_bound_s_bucket() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100_000), 0);
        assert_eq!(bucket_of(100_001), 1);
        assert_eq!(bucket_of(10_000_000_000), BUCKETS - 2);
        assert_eq!(bucket_of(10_000_000_001), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn local_counts_add_to_the_shared_histogram_once() {
        let shared = Histogram::default();
        shared.observe(Duration::from_micros(50));
        let mut local = LocalHistogram::default();
        local.observe(Duration::from_millis(3));
        local.observe(Duration::from_secs(30));
        shared.absorb(&mut local);
        shared.absorb(&mut local);
        let snap = shared.snapshot();
        assert_eq!(snap.count(), 3);
        assert_eq!(snap.counts[0], 1);
        assert_eq!(snap.counts[5], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(snap.counts[BUCKETS - 1], 1, "30 s is past the last bound");
        assert!((snap.sum_seconds() - 30.00305).abs() < 1e-9);
    }

    #[test]
    fn admin_json_has_one_count_per_bucket_and_the_inf_one() {
        let shared = Histogram::default();
        shared.observe(Duration::from_millis(1));
        let json = serde_json::to_value(shared.snapshot()).unwrap();
        assert_eq!(json["bounds"].as_array().unwrap().len() + 1, json["counts"].as_array().unwrap().len());
        assert_eq!(json["count"], 1);
        assert_eq!(json["counts"][3], 1);
        assert_eq!(json["sum"], 0.001);
    }
}
