//! Chronos' ISO 8601 repeating intervals, `R[n]/<start>/<period>`.
//!
//! Written by hand: the crates that parse ISO 8601 durations do not parse repeating
//! intervals, and the arithmetic we need (calendar parts on the zone's wall clock,
//! time parts as elapsed time, each occurrence counted from the start) is ours.

use std::fmt;

use chrono::{DateTime, Days, Months, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::{ScheduleError, fixed_instant};

/// An ISO 8601 duration in whole units. The date part is calendar arithmetic on the
/// wall clock, the time part elapsed time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
}

/// `R[n]/<start>/<period>`: at `start`, then every `period`, `n` times in all (or
/// forever without `n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatingInterval {
    expression: String,
    repetitions: Option<u64>,
    start: DateTime<Utc>,
    period: Period,
    tz: Tz,
}

impl RepeatingInterval {
    /// Parses `R[n]/<start>/<period>`. A start without an offset is a wall-clock
    /// time in `tz`.
    pub fn parse(expression: &str, tz: Tz) -> Result<RepeatingInterval, ScheduleError> {
        let expression = expression.trim();
        let parts: Vec<&str> = expression.split('/').collect();
        let [repetitions, start, period] = parts[..] else {
            return Err(ScheduleError::IntervalShape(expression.to_string()));
        };
        let repetitions = parse_repetitions(repetitions)?;
        if start.trim().is_empty() {
            return Err(ScheduleError::MissingStart(expression.to_string()));
        }
        let start = parse_start(start.trim(), tz)?;
        let period = Period::parse(period.trim())?;
        Ok(RepeatingInterval {
            expression: expression.to_string(),
            repetitions,
            start,
            period,
            tz,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone whose wall clock the period's date part is added on.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first occurrence.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// How many occurrences in all; `None`: forever.
    pub fn repetitions(&self) -> Option<u64> {
        self.repetitions
    }

    /// The time between occurrences.
    pub fn period(&self) -> Period {
        self.period
    }

    /// Occurrence `k` (0 is the start), counted from the start so that month ends
    /// do not drift (31 Jan + P1M is 28 Feb, + P2M is 31 Mar). `None` past the last
    /// occurrence or chrono's range.
    pub fn occurrence(&self, k: u64) -> Option<DateTime<Utc>> {
        if self.repetitions.is_some_and(|n| k >= n) {
            return None;
        }
        if k == 0 {
            return Some(self.start);
        }
        let p = &self.period;
        let months = u64::from(p.years) * 12 + u64::from(p.months);
        let days = u64::from(p.weeks) * 7 + u64::from(p.days);
        let mut t = self.start;
        if months > 0 || days > 0 {
            let mut local = self.start.with_timezone(&self.tz).naive_local();
            if months > 0 {
                let total = u32::try_from(months.checked_mul(k)?).ok()?;
                local = local.checked_add_months(Months::new(total))?;
            }
            if days > 0 {
                local = local.checked_add_days(Days::new(days.checked_mul(k)?))?;
            }
            t = fixed_instant(self.tz, local)?;
        }
        let seconds = i64::from(p.hours) * 3600 + i64::from(p.minutes) * 60 + i64::from(p.seconds);
        if seconds > 0 {
            let elapsed = seconds.checked_mul(i64::try_from(k).ok()?)?;
            t = t.checked_add_signed(TimeDelta::try_seconds(elapsed)?)?;
        }
        Some(t)
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if after < self.start {
            return self.occurrence(0);
        }
        // Guess the index from the mean length of the period, then step: calendar
        // months and DST shifts make the guess off by a step or two at most.
        let elapsed = (after - self.start).num_seconds() as f64;
        let mut k = (elapsed / self.period.mean_seconds()).floor() as u64;
        if let Some(n) = self.repetitions {
            k = k.min(n);
        }
        while k > 0 && self.occurrence(k - 1).is_some_and(|t| t > after) {
            k -= 1;
        }
        loop {
            let t = self.occurrence(k)?;
            if t > after {
                return Some(t);
            }
            k = k.checked_add(1)?;
        }
    }

    /// "Every 1 hour from 2026-01-01T00:00:00Z, 3 times (UTC)".
    pub fn describe(&self) -> String {
        let times = match self.repetitions {
            None => "forever".to_string(),
            Some(1) => "once".to_string(),
            Some(n) => format!("{n} times"),
        };
        format!(
            "Every {} from {}, {} ({})",
            self.period,
            self.start
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            times,
            self.tz.name()
        )
    }
}

fn parse_repetitions(text: &str) -> Result<Option<u64>, ScheduleError> {
    let invalid = || ScheduleError::Repetitions(text.to_string());
    let digits = text.strip_prefix(['R', 'r']).ok_or_else(invalid)?.trim();
    if digits.is_empty() {
        return Ok(None);
    }
    // `R0` would never run: a schedule that should not fire is disabled instead.
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(invalid()),
    }
}

/// An RFC 3339 instant, or a wall-clock time in `tz` (with or without seconds).
fn parse_start(text: &str, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // RFC 3339 requires seconds; ISO 8601 does not.
    for format in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Some(minutes) = text.strip_suffix(['Z', 'z'])
        && let Ok(local) = NaiveDateTime::parse_from_str(minutes, "%Y-%m-%dT%H:%M")
    {
        return Ok(local.and_utc());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
            // A wall-clock start in a gap or an overlap: as for fixed-time cron.
            return fixed_instant(tz, local).ok_or_else(|| ScheduleError::Start {
                value: text.to_string(),
                reason: "it is out of range".to_string(),
            });
        }
    }
    Err(ScheduleError::Start {
        value: text.to_string(),
        reason: "it is not an ISO 8601 date and time".to_string(),
    })
}

impl Period {
    /// Parses `PnYnMnWnDTnHnMnS` (any parts, in this order, whole numbers).
    pub fn parse(text: &str) -> Result<Period, ScheduleError> {
        let invalid = |reason: &str| ScheduleError::Period {
            value: text.to_string(),
            reason: reason.to_string(),
        };
        let body = text
            .strip_prefix(['P', 'p'])
            .ok_or_else(|| invalid("it must start with `P`, as in `PT1H` or `P1D`"))?;
        let (date, time) = match body.split_once(['T', 't']) {
            Some((_, "")) => {
                return Err(invalid("`T` must be followed by hours, minutes or seconds"));
            }
            Some((date, time)) => (date, Some(time)),
            None => (body, None),
        };
        let mut period = Period::default();
        let mut order = 0;
        for (value, unit) in components(date).map_err(|r| invalid(&r))? {
            let (rank, slot) = match unit.to_ascii_uppercase() {
                'Y' => (1, &mut period.years),
                'M' => (2, &mut period.months),
                'W' => (3, &mut period.weeks),
                'D' => (4, &mut period.days),
                other => {
                    return Err(invalid(&format!(
                        "`{other}` is not a date unit (Y, M, W, D)"
                    )));
                }
            };
            if rank <= order {
                return Err(invalid(
                    "its date units must appear once each, in the order Y, M, W, D",
                ));
            }
            order = rank;
            *slot = value;
        }
        order = 0;
        for (value, unit) in components(time.unwrap_or("")).map_err(|r| invalid(&r))? {
            let (rank, slot) = match unit.to_ascii_uppercase() {
                'H' => (1, &mut period.hours),
                'M' => (2, &mut period.minutes),
                'S' => (3, &mut period.seconds),
                other => return Err(invalid(&format!("`{other}` is not a time unit (H, M, S)"))),
            };
            if rank <= order {
                return Err(invalid(
                    "its time units must appear once each, in the order H, M, S",
                ));
            }
            order = rank;
            *slot = value;
        }
        if period == Period::default() {
            return Err(invalid("it must be longer than zero"));
        }
        Ok(period)
    }

    /// The mean length in seconds (a month is 1/12 of a Gregorian year), for
    /// guessing how many periods fit in a span.
    fn mean_seconds(&self) -> f64 {
        let days = f64::from(self.years) * 365.2425
            + f64::from(self.months) * 365.2425 / 12.0
            + f64::from(self.weeks) * 7.0
            + f64::from(self.days);
        days * 86_400.0
            + f64::from(self.hours) * 3600.0
            + f64::from(self.minutes) * 60.0
            + f64::from(self.seconds)
    }
}

/// `1Y2M` → [(1, 'Y'), (2, 'M')]: whole numbers each followed by one letter.
fn components(text: &str) -> Result<Vec<(u32, char)>, String> {
    let mut out = Vec::new();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else if c == '.' || c == ',' {
            return Err(
                "fractions are not supported: use a smaller unit (PT90M, not PT1.5H)".into(),
            );
        } else if c.is_ascii_alphabetic() {
            if digits.is_empty() {
                return Err(format!("`{c}` must follow a number"));
            }
            let value = digits
                .parse::<u32>()
                .map_err(|_| format!("`{digits}` is too large"))?;
            out.push((value, c));
            digits.clear();
        } else {
            return Err(format!("`{c}` is not allowed"));
        }
    }
    if !digits.is_empty() {
        return Err(format!("`{digits}` lacks a unit"));
    }
    Ok(out)
}

impl fmt::Display for Period {
    /// "1 month 2 days", "1 hour".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.years, "year"),
            (self.months, "month"),
            (self.weeks, "week"),
            (self.days, "day"),
            (self.hours, "hour"),
            (self.minutes, "minute"),
            (self.seconds, "second"),
        ];
        let mut first = true;
        for (value, unit) in parts.into_iter().filter(|(v, _)| *v > 0) {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let plural = if value == 1 { "" } else { "s" };
            write!(f, "{value} {unit}{plural}")?;
        }
        Ok(())
    }
}
