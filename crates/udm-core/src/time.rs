//! Time: the [`Timestamp`] every version carries, its RFC 3339 form, and the per-object
//! monotonic rule.
//!
//! udm-core never reads a clock; timestamps come from the [`Clock`](crate::ports::Clock) port.
//! Per object, version timestamps never decrease: [`Timestamp::monotonic_after`] gives the
//! timestamp a new version takes when the clock reads earlier than the previous version.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Milliseconds since the Unix epoch (UTC). Serialized as RFC 3339 with milliseconds,
/// e.g. `2026-11-21T19:57:25.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Earliest representable instant: 0000-01-01T00:00:00.000Z.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// Latest representable instant: 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From milliseconds since the epoch; years 0000–9999 only.
    pub fn from_millis(millis: i64) -> Result<Self> {
        if (MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
            Ok(Self(millis))
        } else {
            Err(Error::validation("timestamp", format!("{millis} ms is outside years 0000-9999")))
        }
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `millis` (saturating at the representable range).
    #[must_use]
    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis).clamp(MIN_MILLIS, MAX_MILLIS))
    }

    /// The timestamp a new version takes: `now`, unless the previous version of the same
    /// object is later, in which case the previous one's (ties are ordered by OV).
    pub fn monotonic_after(previous: Option<Timestamp>, now: Timestamp) -> Timestamp {
        previous.map_or(now, |p| p.max(now))
    }

    /// Parses RFC 3339 in UTC (`Z` or `+00:00`), with 0–9 fractional digits (truncated to ms).
    pub fn parse_rfc3339(s: &str) -> Result<Self> {
        parse(s).ok_or_else(|| Error::validation("timestamp", format!("{s:?} is not an RFC 3339 UTC timestamp")))
    }
}

fn parse(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let ms = ((days * 24 + hour) * 60 + min) * 60_000 + sec * 1000 + millis;
    Timestamp::from_millis(ms).ok()
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (h, rem) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (min, rem) = (rem / 60_000, rem % 60_000);
        let (s, ms) = (rem / 1000, rem % 1000);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        let t = Timestamp::from_millis(1_795_291_045_123).unwrap();
        assert_eq!(t.to_string(), "2026-11-21T19:57:25.123Z");
        assert_eq!(Timestamp::parse_rfc3339("2026-11-21T19:57:25.123Z").unwrap(), t);
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::parse_rfc3339("1969-12-31T23:59:59.999999Z").unwrap().as_millis(), -1);
        assert_eq!(
            Timestamp::parse_rfc3339("2024-02-29T00:00:00+00:00").unwrap().to_string(),
            "2024-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-21 19:57:25Z",
            "2026-11-21T19:57:25+01:00",
            "2026-11-21T24:00:00Z",
            "2026-11-21T19:57:25.Z",
            "+026-11-21T19:57:25Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Timestamp::from_millis(MAX_MILLIS + 1).is_err());
    }

    #[test]
    fn monotonic_never_goes_back() {
        let a = Timestamp::from_millis(10).unwrap();
        let b = Timestamp::from_millis(5).unwrap();
        assert_eq!(Timestamp::monotonic_after(Some(a), b), a);
        assert_eq!(Timestamp::monotonic_after(Some(b), a), a);
        assert_eq!(Timestamp::monotonic_after(None, b), b);
    }
}
