//! Wall-clock time in the units WeChat and the store use. Only the server
//! layers read the clock; the protocol layer takes time as an argument.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A moment, in milliseconds since the Unix epoch (UTC): the store's unit
/// for every time it keeps (received, due, leased until, finished, updated),
/// apart from WeChat's own `CreateTime`, which is in seconds. Arithmetic
/// with a [`Duration`] saturates rather than wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// RFC 3339 in UTC to the second, `YYYY-MM-DDTHH:MM:SSZ`, for moments
    /// from 1970 to 9999; others (a push's `CreateTime` is whatever its
    /// sender wrote) as their number of milliseconds.
    pub fn to_rfc3339(self) -> String {
        const YEAR_10000: i64 = 253_402_300_800_000;
        match u64::try_from(self.0) {
            Ok(ms) if self.0 < YEAR_10000 => {
                let at = UNIX_EPOCH + Duration::from_millis(ms);
                humantime::format_rfc3339_seconds(at).to_string()
            }
            _ => format!("{} ms since the epoch", self.0),
        }
    }
}

impl Add<Duration> for Millis {
    type Output = Millis;
    fn add(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(ms(d)))
    }
}

impl Sub<Duration> for Millis {
    type Output = Millis;
    fn sub(self, d: Duration) -> Millis {
        Millis(self.0.saturating_sub(ms(d)))
    }
}

/// How far apart two moments are, in milliseconds (negative when `rhs` is later).
impl Sub for Millis {
    type Output = i64;
    fn sub(self, rhs: Millis) -> i64 {
        self.0.saturating_sub(rhs.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Now, by the system clock, in the store's unit.
pub fn now_ms() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    )
}

/// Seconds since the Unix epoch (WeChat's unit).
pub fn now_secs() -> i64 {
    now_ms().0 / 1000
}

/// A duration in the store's unit (milliseconds), saturating: a configured
/// duration of centuries stays far in the future instead of wrapping.
fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Millis(1_714_112_445_999).to_rfc3339(),
            "2024-04-26T06:20:45Z"
        );
        assert_eq!(Millis(951_782_400_000).to_rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(
            Millis(253_402_300_799_000).to_rfc3339(),
            "9999-12-31T23:59:59Z"
        );
        // Outside what RFC 3339 can write (a push's CreateTime is the sender's).
        assert_eq!(Millis(-5).to_rfc3339(), "-5 ms since the epoch");
        assert_eq!(
            Millis(i64::MAX).to_rfc3339(),
            format!("{} ms since the epoch", i64::MAX)
        );
    }

    #[test]
    fn adding_a_duration_saturates() {
        let far = Millis(i64::MAX - 1) + Duration::from_secs(u64::MAX);
        assert_eq!(far, Millis(i64::MAX));
        assert_eq!(Millis(1_000) + Duration::from_millis(1_500), Millis(2_500));
        assert_eq!(Millis(1_000) - Duration::from_secs(2), Millis(-1_000));
        assert_eq!(Millis(5) - Millis(7), -2);
    }
}
