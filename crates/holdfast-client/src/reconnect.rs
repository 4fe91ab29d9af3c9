//! Reconnection pacing: exponential backoff with full jitter, and the choice of server.
//!
//! Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): the delay before attempt
//! `n` (from 0) is uniformly random in `[0, min(cap, base · 2ⁿ)]`. Many clients cut at once (a
//! server restart) then come back spread over the whole window rather than in waves. The defaults
//! are Socket.IO's: 1 s base, 30 s cap.

use std::time::Duration;

/// Default first backoff window.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default largest backoff window.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Backoff settings and the count of attempts since the last healthy connection.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap: cap.max(base), attempt: 0 }
    }

    /// The window for the current attempt: `min(cap, base · 2^attempt)`.
    pub(crate) fn window(&self) -> Duration {
        // 2^20 · base is beyond any sane cap; stop doubling there (no overflow).
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Draws the next delay (full jitter) and counts the attempt; gives (attempt from 1, delay).
    pub(crate) fn next_delay(&mut self) -> (u32, Duration) {
        let window = self.window();
        let delay = window.mul_f64(fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        (self.attempt, delay)
    }

    /// A connection proved healthy: the next failure starts from the first window again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Which server to use: sticky while healthy, the next one on a failure (wrapping around to the
/// first only after the last one failed too).
#[derive(Debug, Clone)]
pub(crate) struct Servers {
    list: Vec<String>,
    current: usize,
}

impl Servers {
    pub(crate) fn new(list: Vec<String>) -> Servers {
        Servers { list, current: 0 }
    }

    pub(crate) fn current(&self) -> &str {
        &self.list[self.current]
    }

    /// Moves to the next server after a failure of the current one.
    pub(crate) fn fail_over(&mut self) {
        self.current = (self.current + 1) % self.list.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut windows = Vec::new();
        for _ in 0..7 {
            windows.push(b.window().as_secs());
            let (_, delay) = b.next_delay();
            assert!(delay <= Duration::from_secs(30));
        }
        assert_eq!(windows, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.window(), Duration::from_secs(1));
    }

    #[test]
    fn delays_spread_over_the_whole_window() {
        let mut low = false;
        let mut high = false;
        for _ in 0..1000 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            let (attempt, delay) = b.next_delay();
            assert_eq!(attempt, 1);
            assert!(delay <= Duration::from_secs(1));
            low |= delay < Duration::from_millis(100);
            high |= delay > Duration::from_millis(900);
        }
        assert!(low && high, "full jitter draws from [0, window]");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        b.attempt = u32::MAX - 1;
        assert_eq!(b.window(), Duration::from_secs(30));
        b.next_delay();
        b.next_delay();
    }

    #[test]
    fn servers_stay_until_a_failure_and_wrap_after_the_last() {
        let mut s = Servers::new(vec!["a".into(), "b".into()]);
        assert_eq!(s.current(), "a");
        s.fail_over();
        assert_eq!(s.current(), "b");
        s.fail_over();
        assert_eq!(s.current(), "a");
    }
}
