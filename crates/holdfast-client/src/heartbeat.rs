//! Heartbeat intervals: what a subscriber asks the server for (`?heartbeat=SECONDS`), what it
//! watches for (the server's `Holdfast-Heartbeat` answer), and the adaptive search for the longest
//! interval the network path keeps alive.
//!
//! The adaptive algorithm, in full:
//!
//! 1. Start at `min` (short intervals keep every NAT and proxy mapping alive; the cost is bytes).
//! 2. A heartbeat received means the link just survived a whole interval of silence (the server
//!    sends one only after that much quiet). Remember the interval as *survived*; if it is below
//!    `max`, raise it by `step` (up to `max`) and reconnect at once with the last cursor to ask for
//!    it (the server takes the interval when the subscription starts; nothing is lost).
//! 3. When the heartbeat watch fires (no byte for `interval × k`: a silent death, typically a NAT
//!    or proxy that dropped the idle flow without telling anyone), go back to the last interval
//!    that survived (or one `step` down if none did, never below `min`) and **hold** it: no more
//!    probing for the life of the subscriber. A later silent death at the held interval steps it
//!    down again. A new subscriber probes afresh (paths change; holding forever within one
//!    subscriber avoids a death every probe period).
//! 4. Reaching `max` (or the server's own cap: it clamps to `[heartbeat_min, heartbeat_max]`)
//!    with a survived interval also settles.
//!
//! Each settle is reported as [`State::HeartbeatSettled`](crate::State::HeartbeatSettled), and
//! every connection's interval in [`State::Connected`](crate::State::Connected).

use std::time::Duration;

/// Used for the heartbeat watch when the server sends no `Holdfast-Heartbeat` and nothing was
/// configured: above the server's default `heartbeat_interval` (25 s).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// How a subscriber chooses its heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Heartbeat {
    /// Take the server's interval (its `Holdfast-Heartbeat` answer); [`DEFAULT_HEARTBEAT`] if it
    /// sends none.
    #[default]
    Server,
    /// Ask for this interval (`?heartbeat=`, millisecond precision, at least 100 ms). The server clamps it to its
    /// `[heartbeat_min, heartbeat_max]`; the watch uses what the server answers, or this value if it
    /// answers nothing.
    Fixed(Duration),
    /// Search for the longest interval that survives (see the module docs and the crate docs).
    Adaptive {
        /// The first (safe) interval.
        min: Duration,
        /// The longest interval tried.
        max: Duration,
        /// How much to raise the interval after it survives.
        step: Duration,
    },
}

/// The shortest interval asked for: the server refuses less than 100 ms.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `d` at millisecond precision, at least [`MIN_INTERVAL`] (what `?heartbeat=` can express).
pub(crate) fn askable(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u32::MAX)) as u64).max(MIN_INTERVAL)
}

/// The `?heartbeat=` value: seconds, with a decimal fraction when not whole (`1`, `2.5`).
pub(crate) fn seconds_text(d: Duration) -> String {
    let (whole, millis) = (d.as_secs(), d.subsec_millis());
    if millis == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{millis:03}").trim_end_matches('0').to_string()
    }
}

/// What to do after a heartbeat arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterHeartbeat {
    /// Nothing changes.
    Keep,
    /// Reconnect to ask for this longer interval.
    Raise(Duration),
    /// The adaptive search settled on this interval.
    Settled(Duration),
}

/// The heartbeat state of one subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Tuner {
    policy: Heartbeat,
    /// What is asked of the server next (adaptive: the probe in progress).
    current: Duration,
    /// The longest interval seen to survive a whole silence.
    survived: Option<Duration>,
    /// Whether probing stopped.
    settled: bool,
    /// The server capped what we asked (its `heartbeat_max`): raising further is pointless.
    capped: bool,
}

impl Tuner {
    pub(crate) fn new(policy: Heartbeat) -> Tuner {
        let current = match policy {
            Heartbeat::Server => DEFAULT_HEARTBEAT,
            Heartbeat::Fixed(d) => askable(d),
            Heartbeat::Adaptive { min, .. } => askable(min),
        };
        Tuner { policy, current, survived: None, settled: false, capped: false }
    }

    /// The interval to ask for with `?heartbeat=`, if any.
    pub(crate) fn ask(&self) -> Option<Duration> {
        match self.policy {
            Heartbeat::Server => None,
            _ => Some(self.current),
        }
    }

    /// The interval to assume before a server announced one (the configured value, or
    /// [`DEFAULT_HEARTBEAT`]).
    pub(crate) fn fallback(&self) -> Duration {
        self.current
    }

    /// A connection was made; `answer` is its `Holdfast-Heartbeat`. Gives the interval in force
    /// (what the watch multiplies by k).
    pub(crate) fn connected(&mut self, answer: Option<Duration>) -> Duration {
        let Some(actual) = answer.filter(|d| !d.is_zero()) else {
            // A server without the header ignores `?heartbeat=` too: nothing to search.
            if matches!(self.policy, Heartbeat::Adaptive { .. }) {
                self.settled = true;
                return DEFAULT_HEARTBEAT;
            }
            return self.current;
        };
        if let Heartbeat::Adaptive { .. } = self.policy {
            if actual < self.current {
                self.capped = true;
            }
            self.current = actual;
        }
        actual
    }

    /// A heartbeat arrived after `interval` (the one in force) without data: the link survived
    /// that much silence. (A heartbeat while data flows proves nothing: a WebSocket server also
    /// pings a client that only reads while messages flow.)
    pub(crate) fn heartbeat(&mut self, interval: Duration) -> AfterHeartbeat {
        let Heartbeat::Adaptive { max, step, .. } = self.policy else {
            return AfterHeartbeat::Keep;
        };
        if self.settled || interval != self.current {
            return AfterHeartbeat::Keep;
        }
        self.survived = Some(self.survived.map_or(interval, |s| s.max(interval)));
        if self.capped || interval >= max || step.is_zero() {
            self.settled = true;
            return AfterHeartbeat::Settled(interval);
        }
        self.current = (interval + step).min(max);
        AfterHeartbeat::Raise(self.current)
    }

    /// The heartbeat watch fired. Gives the interval now held if it changed (adaptive only).
    pub(crate) fn silent_death(&mut self) -> Option<Duration> {
        let Heartbeat::Adaptive { min, step, .. } = self.policy else {
            return None;
        };
        let min = askable(min);
        let back = match self.survived {
            Some(s) if s < self.current => s,
            _ => self.current.saturating_sub(step).max(min),
        };
        let changed = back != self.current || !self.settled;
        self.current = back;
        self.survived = self.survived.map(|s| s.min(back));
        self.settled = true;
        changed.then_some(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn adaptive(min: u64, max: u64, step: u64) -> Tuner {
        Tuner::new(Heartbeat::Adaptive { min: secs(min), max: secs(max), step: secs(step) })
    }

    #[test]
    fn adaptive_probes_up_and_holds_the_last_survivor_after_a_death() {
        let mut t = adaptive(1, 10, 2);
        assert_eq!(t.ask(), Some(secs(1)));
        assert_eq!(t.connected(Some(secs(1))), secs(1));
        assert_eq!(t.heartbeat(secs(1)), AfterHeartbeat::Raise(secs(3)));
        assert_eq!(t.ask(), Some(secs(3)));
        assert_eq!(t.connected(Some(secs(3))), secs(3));
        assert_eq!(t.heartbeat(secs(3)), AfterHeartbeat::Raise(secs(5)));
        t.connected(Some(secs(5)));
        assert_eq!(t.silent_death(), Some(secs(3)));
        assert_eq!(t.ask(), Some(secs(3)));
        t.connected(Some(secs(3)));
        assert_eq!(t.heartbeat(secs(3)), AfterHeartbeat::Keep, "held: no more probing");
        assert_eq!(t.ask(), Some(secs(3)));
    }

    #[test]
    fn adaptive_settles_at_max() {
        let mut t = adaptive(1, 3, 2);
        t.connected(Some(secs(1)));
        assert_eq!(t.heartbeat(secs(1)), AfterHeartbeat::Raise(secs(3)));
        t.connected(Some(secs(3)));
        assert_eq!(t.heartbeat(secs(3)), AfterHeartbeat::Settled(secs(3)));
        assert_eq!(t.heartbeat(secs(3)), AfterHeartbeat::Keep);
    }

    #[test]
    fn adaptive_follows_the_servers_clamp() {
        let mut t = adaptive(1, 100, 10);
        // Server heartbeat_min 5: it answers 5 for 1.
        assert_eq!(t.connected(Some(secs(5))), secs(5));
        assert_eq!(t.heartbeat(secs(5)), AfterHeartbeat::Raise(secs(15)));
        // Server heartbeat_max 12: it answers 12 for 15, and that is as far as it goes.
        assert_eq!(t.connected(Some(secs(12))), secs(12));
        assert_eq!(t.heartbeat(secs(12)), AfterHeartbeat::Settled(secs(12)));
    }

    #[test]
    fn a_death_before_anything_survived_steps_down_but_not_below_min() {
        let mut t = adaptive(2, 10, 2);
        t.connected(Some(secs(2)));
        assert_eq!(t.silent_death(), Some(secs(2)), "settles at min");
        assert_eq!(t.silent_death(), None);
        assert_eq!(t.ask(), Some(secs(2)));
    }

    #[test]
    fn a_server_without_the_header_settles_the_search() {
        let mut t = adaptive(1, 10, 1);
        assert_eq!(t.connected(None), DEFAULT_HEARTBEAT);
        assert_eq!(t.heartbeat(DEFAULT_HEARTBEAT), AfterHeartbeat::Keep);
    }

    #[test]
    fn intervals_are_sent_as_seconds_with_a_fraction_when_needed() {
        assert_eq!(seconds_text(secs(5)), "5");
        assert_eq!(seconds_text(Duration::from_millis(2500)), "2.5");
        assert_eq!(seconds_text(Duration::from_millis(1250)), "1.25");
        assert_eq!(seconds_text(askable(Duration::from_millis(1))), "0.1");
    }

    #[test]
    fn fixed_and_server_policies_never_probe() {
        let mut fixed = Tuner::new(Heartbeat::Fixed(Duration::from_millis(1500)));
        assert_eq!(fixed.ask(), Some(Duration::from_millis(1500)));
        assert_eq!(
            fixed.connected(None),
            Duration::from_millis(1500),
            "the configured value when the server says nothing"
        );
        assert_eq!(fixed.heartbeat(secs(2)), AfterHeartbeat::Keep);
        assert_eq!(fixed.silent_death(), None);
        let mut server = Tuner::new(Heartbeat::Server);
        assert_eq!(server.ask(), None);
        assert_eq!(server.connected(Some(secs(7))), secs(7));
        assert_eq!(server.connected(None), DEFAULT_HEARTBEAT);
    }
}
