//! How a graceful drain spreads the reconnect wave: when each streaming subscriber is closed,
//! the jittered `retry:` an SSE client is told, and the `Retry-After` a subscription refused
//! meanwhile gets. (`run` and the push shards do the draining; this is only the arithmetic.)

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A uniformly distributed number in [0, 1). A few draws per subscriber, once per drain: std's
/// randomly keyed SipHash over a counter is random enough for jitter and needs no dependency.
pub(crate) fn unit_random() -> f64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = KEYS.get_or_init(RandomState::new).build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// When each of `count` subscribers is closed, in milliseconds after the drain began: the spread
/// is cut into `count` equal slices, each subscriber gets one slice (in random order) and a
/// random moment inside it. Any stretch of the spread then holds its share of the closes to
/// within one per shard (uniform draws alone would let a second hold twice its share by chance
/// with a few hundred subscribers), and no two drains close in the same order.
pub(crate) fn close_offsets_ms(count: usize, spread: Duration) -> Vec<u64> {
    let spread_ms = spread.as_secs_f64() * 1000.0;
    let mut slices: Vec<usize> = (0..count).collect();
    // Fisher–Yates: which subscriber gets which slice.
    for i in (1..count).rev() {
        let j = ((unit_random() * (i + 1) as f64) as usize).min(i);
        slices.swap(i, j);
    }
    slices.into_iter().map(|slice| ((slice as f64 + unit_random()) / count as f64 * spread_ms) as u64).collect()
}

/// The reconnection delay an SSE subscriber closed by the drain is told (`retry:`): `sse_retry`
/// jittered to between half and one and a half of it, so clients closed in the same moment
/// do not come back in the same moment either.
pub(crate) fn jittered_retry(sse_retry: Duration) -> Duration {
    sse_retry.mul_f64(0.5 + unit_random())
}

/// `Retry-After` (whole seconds, at least 1) for a subscription refused during a drain: spread
/// over the drain, as the subscribers being closed are.
pub(crate) fn retry_after_secs(spread: Duration) -> u64 {
    let most = spread.as_secs_f64().ceil().max(1.0);
    1 + (unit_random() * most) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_offsets_fill_every_second_of_the_spread_evenly() {
        let offsets = close_offsets_ms(1000, Duration::from_secs(4));
        let mut buckets = [0usize; 4];
        for offset in &offsets {
            assert!(*offset < 4000, "offset {offset} ms is past the spread");
            buckets[(*offset / 1000) as usize] += 1;
        }
        // Stratified: each second holds 250 to within one subscriber.
        assert!(buckets.iter().all(|&n| (249..=251).contains(&n)), "{buckets:?}");
        // In random order, not slice order.
        assert!(offsets.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn no_spread_closes_everyone_at_once() {
        assert_eq!(close_offsets_ms(3, Duration::ZERO), vec![0, 0, 0]);
        assert!(close_offsets_ms(0, Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        for _ in 0..1000 {
            let retry = jittered_retry(Duration::from_secs(2));
            assert!(retry >= Duration::from_secs(1) && retry < Duration::from_secs(3), "{retry:?}");
            let after = retry_after_secs(Duration::from_secs(10));
            assert!((1..=10).contains(&after), "{after}");
        }
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
