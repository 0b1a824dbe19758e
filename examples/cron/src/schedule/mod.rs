//! Schedules: cron expressions, time zones, ISO 8601 repeating intervals. Pure.
//!
//! A [`Schedule`] is parsed once from a job schedule's `cron` and `timezone` fields
//! and then only answers questions about instants it is given: nothing here reads a
//! clock, so the controller decides what "now" is and tests inject it.
//!
//! # Accepted expressions
//! - Five-field cron, `minute hour day-of-month month day-of-week`, with lists
//!   (`1,15`), ranges (`1-5`), steps (`*/15`, `0-30/10`), month and weekday names
//!   (`JAN`–`DEC`, `SUN`–`SAT`, in their own field only), `?` for a day field, and
//!   croner's `L`, `W`, `#` and `+` day modifiers.
//! - Six-field cron: the same with a seconds field first (`*/10 * * * * *`).
//! - `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
//! - Chronos' ISO 8601 repeating intervals `R[n]/<start>/<period>`, e.g.
//!   `R/2026-01-01T00:00:00Z/PT1H` (forever) or `R3/2026-01-31T09:00:00Z/P1M` (three
//!   runs). The start is required: Chronos reads an empty one as "now", which would
//!   make the schedule depend on when it was parsed.
//!
//! The time zone is an IANA name (`Europe/Berlin`); an empty one means `UTC`. Cron
//! fields are matched against the wall clock of that zone.
//!
//! # Daylight saving time
//! Cron fields name wall-clock times, and a time zone's wall clock skips or repeats
//! an hour twice a year. We follow Vixie cron (and croner's reading of it): a
//! schedule whose second, minute or hour field contains a wildcard or a step (`*`,
//! `*/15`, `0-30/10`) is an *interval* schedule; any other is a *fixed-time* one.
//! - A fixed-time schedule whose wall-clock time does not exist (spring forward,
//!   e.g. `30 2 * * *` on the last Sunday of March in Europe/Berlin) fires once, at
//!   the first instant after the gap (03:00 CEST). Several such times in one gap
//!   (`0,30 2 * * *`) still fire once there.
//! - A fixed-time schedule whose wall-clock time occurs twice (fall back, e.g.
//!   `30 1 * * *` on the first Sunday of November in America/New_York) fires once,
//!   at the first occurrence (01:30 EDT).
//! - An interval schedule fires at every real instant whose wall-clock time matches:
//!   `*/15 * * * *` keeps firing every 15 minutes of elapsed time through both
//!   transitions, `0 * * * *` fires at each real hour (twice at 01:00 on the day
//!   that repeats it, not at all at the 02:00 that does not exist).
//!
//! An ISO 8601 period adds its date part (years, months, weeks, days) to the wall
//! clock of the start in the schedule's zone, so `P1D` from 09:00 stays at 09:00
//! across DST and `P1M` from 31 January gives 28 (or 29) February, 31 March, ...
//! (each occurrence is counted from the start, so it does not drift); a wall-clock
//! time that falls in a gap or an overlap is resolved as for fixed-time cron. Its
//! time part (hours, minutes, seconds) is elapsed time: `PT1H` is every 3600 s.

mod cron;
mod interval;
#[cfg(test)]
mod tests;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

pub use cron::CronSchedule;
pub use interval::{Period, RepeatingInterval};

/// When a job runs: a cron expression or an ISO 8601 repeating interval, in a time
/// zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A five- or six-field cron expression (or an `@` nickname).
    Cron(CronSchedule),
    /// An ISO 8601 repeating interval `R[n]/<start>/<period>`.
    Interval(RepeatingInterval),
}

/// Why an expression or a time zone was refused. Each message is a sentence that
/// names the part at fault, for API clients to show as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "the schedule is empty: give a cron expression such as `0 * * * *` or an ISO 8601 \
         repeating interval such as `R/2026-01-01T00:00:00Z/PT1H`"
    )]
    Empty,
    #[error(
        "`{expression}` has {found} fields, but a cron expression has five (minute hour \
         day-of-month month day-of-week) or six (with seconds first)"
    )]
    FieldCount { expression: String, found: usize },
    #[error("the {field} field `{value}` is invalid: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "unknown nickname `{0}`: use @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight or @hourly"
    )]
    UnknownNickname(String),
    #[error("`{expression}` is invalid: {reason}")]
    Cron { expression: String, reason: String },
    #[error("`{0}` never matches a real date (such as 30 February), so it would never fire")]
    NeverFires(String),
    #[error("unknown time zone `{0}`: use an IANA name such as `UTC` or `Europe/Berlin`")]
    UnknownTimeZone(String),
    #[error(
        "the repetitions `{0}` of the ISO 8601 interval are invalid: write `R` to repeat \
         forever or `Rn` with n a positive whole number"
    )]
    Repetitions(String),
    #[error(
        "the ISO 8601 interval `{0}` has no start: give one, such as \
         `R/2026-01-01T00:00:00Z/PT1H` (an empty start, which Chronos reads as now, is \
         not allowed)"
    )]
    MissingStart(String),
    #[error(
        "the start `{value}` of the ISO 8601 interval is invalid: {reason} (expected e.g. \
         `2026-01-01T00:00:00Z`)"
    )]
    Start { value: String, reason: String },
    #[error("the period `{value}` of the ISO 8601 interval is invalid: {reason}")]
    Period { value: String, reason: String },
    #[error(
        "`{0}` is not an ISO 8601 repeating interval: expected three parts, \
         `R[n]/<start>/<period>`"
    )]
    IntervalShape(String),
}

impl Schedule {
    /// Parses `expression` (cron or `R[n]/<start>/<period>`) for the IANA
    /// `timezone` (empty: UTC).
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        let expression = expression.trim();
        if expression.is_empty() {
            return Err(ScheduleError::Empty);
        }
        // No cron field starts with `R`, so the first letter tells the two apart.
        if expression.starts_with(['R', 'r']) {
            RepeatingInterval::parse(expression, tz).map(Schedule::Interval)
        } else {
            CronSchedule::parse(expression, tz).map(Schedule::Cron)
        }
    }

    /// The first instant strictly after `after` at which the schedule is due, or
    /// `None` when it has no more (a finite interval that is used up, or past year
    /// 5000 for cron).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(cron) => cron.next_after(after),
            Schedule::Interval(interval) => interval.next_after(after),
        }
    }

    /// The instants in `(after, up_to]` at which the schedule is due, oldest first,
    /// at most `limit` of them: what a controller that was down between `after` and
    /// `up_to` has missed.
    pub fn due_between(
        &self,
        after: DateTime<Utc>,
        up_to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut due = Vec::new();
        let mut cursor = after;
        while due.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= up_to => {
                    due.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        due
    }

    /// A sentence for people: "At 02:30 (Europe/Berlin)".
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron(cron) => cron.describe(),
            Schedule::Interval(interval) => interval.describe(),
        }
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        match self {
            Schedule::Cron(cron) => cron.expression(),
            Schedule::Interval(interval) => interval.expression(),
        }
    }

    /// The IANA name of the schedule's time zone.
    pub fn timezone(&self) -> &'static str {
        match self {
            Schedule::Cron(cron) => cron.timezone().name(),
            Schedule::Interval(interval) => interval.timezone().name(),
        }
    }
}

/// An IANA time zone by name; empty (or blank) is UTC, Metronome's default.
pub(crate) fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
}

/// The instants at which the wall clock of `tz` reads `local`, earliest first: one,
/// two during a fall-back overlap, none inside a spring-forward gap.
pub(crate) fn instants_of(tz: Tz, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            vec![a.min(b), a.max(b)]
        }
        LocalResult::None => Vec::new(),
    }
}

/// The one instant a fixed wall-clock time stands for: itself, its first occurrence
/// when the clock repeats it, the first instant after the gap when the clock skips
/// it. `None` only at the edges of chrono's range.
pub(crate) fn fixed_instant(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match instants_of(tz, local).first() {
        Some(t) => Some(*t),
        None => first_instant_after_gap(tz, local),
    }
}

/// The utc offset of `tz` at instant `t`, in seconds east of UTC.
pub(crate) fn offset_seconds(tz: Tz, t: DateTime<Utc>) -> i64 {
    let local = t.with_timezone(&tz).naive_local();
    (local - t.naive_utc()).num_seconds()
}

/// The first instant after the gap that contains the nonexistent wall-clock time
/// `local`: the instant of the transition. chrono-tz does not expose transitions, so
/// it is found by bisection between the two readings of `local` under the offsets
/// before and after the gap (a gap is never longer than a day).
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let day = TimeDelta::days(1);
    let as_utc = local.and_utc();
    let before = offset_seconds(tz, as_utc.checked_sub_signed(day)?);
    let after = offset_seconds(tz, as_utc.checked_add_signed(day)?);
    // Under the later (larger) offset `local` reads as an instant before the
    // transition; under the earlier offset as one after it.
    let mut lo = as_utc.checked_sub_signed(TimeDelta::seconds(after))?;
    let mut hi = as_utc.checked_sub_signed(TimeDelta::seconds(before))?;
    let past = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local() > local;
    if !past(hi) || past(lo) {
        return None;
    }
    // Invariant: the wall clock at `lo` is before `local`, at `hi` past it. Whole
    // seconds suffice: tz transitions fall on whole seconds.
    while (hi - lo).num_seconds() > 1 {
        let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
        if past(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}
