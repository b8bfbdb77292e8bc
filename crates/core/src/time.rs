//! Time as the libraries see it: [`Nanos`] on a [`Clock`].
//!
//! No library crate calls `Instant::now()` itself. The live router passes a
//! [`SystemClock`]; the simulator passes a [`ManualClock`] that it advances
//! event by event, so the same policy and directory code runs on both.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A point in time (or a span) in nanoseconds since the clock's origin.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Zero.
    pub const ZERO: Nanos = Nanos(0);
    /// The largest representable time, used as "never".
    pub const MAX: Nanos = Nanos(u64::MAX);

    /// From seconds (negative and NaN become zero).
    pub fn from_secs_f64(s: f64) -> Nanos {
        if s.is_nan() || s <= 0.0 {
            Nanos(0)
        } else {
            Nanos((s * 1e9).min(u64::MAX as f64) as u64)
        }
    }

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }

    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Nanos {
        Nanos(s.saturating_mul(1_000_000_000))
    }

    /// As seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_sub(self, earlier: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Nanos::MAX`].
    pub fn saturating_add(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(d.0))
    }
}

impl From<Duration> for Nanos {
    fn from(d: Duration) -> Nanos {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<Nanos> for Duration {
    fn from(n: Nanos) -> Duration {
        Duration::from_nanos(n.0)
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in nanoseconds since this clock's origin.
    fn now(&self) -> Nanos;
}

/// Monotonic wall time, measured from the moment the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose zero is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

/// A clock that only moves when told to: simulated time, and tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Nanos) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(start.0),
        }
    }

    /// Jump to `t`. Time never goes backwards: an earlier `t` is ignored.
    pub fn set(&self, t: Nanos) {
        self.now.fetch_max(t.0, Ordering::Release);
    }

    /// Move forward by `d`.
    pub fn advance(&self, d: Nanos) {
        self.now.fetch_add(d.0, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        Nanos(self.now.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_never_goes_back() {
        let c = ManualClock::new(Nanos(10));
        c.set(Nanos(5));
        assert_eq!(c.now(), Nanos(10));
        c.advance(Nanos(7));
        assert_eq!(c.now(), Nanos(17));
    }

    #[test]
    fn secs_conversions() {
        assert_eq!(Nanos::from_secs_f64(1.5), Nanos(1_500_000_000));
        assert_eq!(Nanos::from_secs_f64(-1.0), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(f64::NAN), Nanos::ZERO);
        assert_eq!(Nanos::from_millis(3).as_secs_f64(), 0.003);
    }
}
