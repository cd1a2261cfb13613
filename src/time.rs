//! Times as people type them, for `seek`, `cat --pts` and `by-pts/` look-ups.
//!
//! Accepted forms (all non-negative; the result is whole microseconds, finer digits are
//! cut off, never rounded up):
//!
//! | form | example | meaning |
//! |---|---|---|
//! | integer | `1500000` | microseconds (the unit of every pts in h4fs) |
//! | `Nus` | `250us` | microseconds |
//! | `Nms`, `N.Fms` | `1500ms`, `2.5ms` | milliseconds |
//! | `Ns`, `N.Fs` | `12s`, `12.5s` | seconds |
//! | `[H:]M:S[.F]` | `1:30`, `00:01:30.5` | hours, minutes, seconds (as ffmpeg's `-ss`) |
//!
//! In the clock form, minutes and seconds after a higher field are below 60; the first
//! field is unbounded (`90:00` is 90 minutes). Anything else (signs, spaces inside,
//! empty fields, exponents, other units) is refused with a message naming the text.

use std::fmt;

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    text: String,
    why: &'static str,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\" is not a time: {} (use microseconds, 12s, 12.5s, 1500ms or 00:01:30.5)",
            self.text, self.why
        )
    }
}

impl std::error::Error for TimeError {}

/// Parse a time (see the module docs) into microseconds.
pub fn parse_time(text: &str) -> Result<u64, TimeError> {
    let err = |why| TimeError {
        text: text.to_string(),
        why,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.starts_with('-') {
        return Err(err("times cannot be negative"));
    }
    if s.contains(':') {
        return clock(s).map_err(err);
    }
    let (number, unit_us) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000_000)
    } else {
        if s.contains('.') {
            return Err(err("a fraction needs a unit (s or ms)"));
        }
        (s, 1)
    };
    if unit_us == 1 && number.contains('.') {
        return Err(err("microseconds are whole numbers"));
    }
    decimal(number, unit_us).map_err(err)
}

/// `whole[.frac]` times `unit_us` microseconds.
fn decimal(s: &str, unit_us: u64) -> Result<u64, &'static str> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let whole = digits(whole)?;
    let mut us = whole.checked_mul(unit_us).ok_or(TOO_LARGE)?;
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err("expected digits after the decimal point");
        }
        // unit_us is a power of ten: take as many fraction digits as it has zeros.
        let mut scale = unit_us;
        let mut part = 0u64;
        for b in f.bytes() {
            if scale == 1 {
                break;
            }
            scale /= 10;
            part += u64::from(b - b'0') * scale;
        }
        us = us.checked_add(part).ok_or(TOO_LARGE)?;
    }
    Ok(us)
}

const TOO_LARGE: &str = "it is too large (more than 2^64 microseconds)";

/// A non-empty run of ASCII digits as a number.
fn digits(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("expected a number");
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected digits");
    }
    s.parse::<u64>().map_err(|_| TOO_LARGE)
}

/// `[H:]M:S[.F]`.
fn clock(s: &str) -> Result<u64, &'static str> {
    let fields: Vec<&str> = s.split(':').collect();
    if fields.len() > 3 {
        return Err("a clock time is [H:]M:S[.F]");
    }
    let (last, higher) = fields.split_last().expect("split gives a field");
    let seconds = decimal(last, 1_000_000)?;
    if seconds >= 60_000_000 {
        return Err("seconds after a colon must be below 60");
    }
    let mut total = seconds;
    // Minutes, then hours (when present), each with its weight.
    for (i, f) in higher.iter().rev().enumerate() {
        let v = digits(f)?;
        let is_first = i + 1 == higher.len();
        if i == 0 && !is_first && v >= 60 {
            return Err("minutes after hours must be below 60");
        }
        let weight: u64 = if i == 0 { 60_000_000 } else { 3_600_000_000 };
        total = v
            .checked_mul(weight)
            .and_then(|x| x.checked_add(total))
            .ok_or(TOO_LARGE)?;
    }
    Ok(total)
}

/// clap value parser for time arguments.
pub fn parse_time_arg(s: &str) -> Result<u64, String> {
    parse_time(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        for (text, us) in [
            ("0", 0),
            ("1500000", 1_500_000),
            ("250us", 250),
            ("12s", 12_000_000),
            ("12.5s", 12_500_000),
            ("0.000001s", 1),
            ("1.9999999s", 1_999_999),
            ("1500ms", 1_500_000),
            ("2.5ms", 2_500),
            ("00:01:30.5", 90_500_000),
            ("1:30", 90_000_000),
            ("90:00", 5_400_000_000),
            ("2:00:00", 7_200_000_000),
            (" 7s ", 7_000_000),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_time(text), Ok(us), "{text}");
        }
    }

    #[test]
    fn refuses_garbage_negative_and_overflow() {
        for (text, why) in [
            ("", "empty"),
            ("abc", "digits"),
            ("12x", "digits"),
            ("1.5", "unit"),
            ("1.5us", "whole"),
            ("-1", "negative"),
            ("-1s", "negative"),
            ("+1s", "digits"),
            ("1e6", "digits"),
            ("s", "number"),
            ("1.s", "decimal point"),
            ("1:2:3:4", "[H:]M:S"),
            ("1:60", "below 60"),
            ("1:60:00", "below 60"),
            (":30", "number"),
            ("18446744073709551616", "too large"),
            ("18446744073710s", "too large"),
            ("5124095577:00:00", "too large"),
        ] {
            let e = parse_time(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains(&format!("\"{text}\"")), "{text}: {e}");
        }
    }
}
