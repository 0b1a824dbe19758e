//! Cron expressions: croner parses the fields and finds matching wall-clock times;
//! we turn wall-clock times into instants with our DST rules (see the module doc of
//! [`crate::schedule`]).
//!
//! croner can search a zoned `DateTime` itself, but it counts a schedule as
//! fixed-time only when its second, minute and hour are single values, so
//! `0,30 2 * * *` would fire twice in a fall-back hour and not at all on a
//! spring-forward day. Vixie cron (and we) call fixed-time every schedule without a
//! wildcard or step in those fields, so we search naive wall-clock times and map them
//! to instants here.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::{ScheduleError, fixed_instant, instants_of, offset_seconds};

/// The fields of a six-field expression, in order.
const FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// What each field of the six-field form takes, for error messages.
const RANGES: [&str; 6] = [
    "seconds are 0-59",
    "minutes are 0-59",
    "hours are 0-23",
    "days of the month are 1-31, L or W",
    "months are 1-12 or JAN-DEC",
    "days of the week are 0-7 or SUN-SAT, 0 and 7 being Sunday",
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A parsed cron expression and the zone whose wall clock it reads.
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    /// Boxed: croner keeps a bit per possible year, a few hundred bytes.
    cron: Box<Cron>,
    tz: Tz,
    /// A wildcard or step in the second, minute or hour field: fires at every real
    /// matching instant rather than once per wall-clock time.
    interval: bool,
}

/// Shows the expression rather than croner's bit fields, which fill a screen.
impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("tz", &self.tz)
            .field("interval", &self.interval)
            .finish()
    }
}

impl CronSchedule {
    /// Parses a five- or six-field expression or an `@` nickname for zone `tz`.
    pub fn parse(expression: &str, tz: Tz) -> Result<CronSchedule, ScheduleError> {
        let expression = expression.trim();
        let expanded = if expression.starts_with('@') {
            expand_nickname(expression)?
        } else {
            expression
        };
        let given: Vec<&str> = expanded.split_whitespace().collect();
        // Six fields throughout: a five-field expression fires at second 0.
        let (names, mut fields): (&[&'static str], Vec<String>) = match given.len() {
            5 => (
                &FIELDS[1..],
                std::iter::once("0".to_string())
                    .chain(given.iter().map(|f| f.to_string()))
                    .collect(),
            ),
            6 => (&FIELDS[..], given.iter().map(|f| f.to_string()).collect()),
            found => {
                return Err(ScheduleError::FieldCount {
                    expression: expression.to_string(),
                    found,
                });
            }
        };
        // Names are replaced field by field (croner would replace them anywhere, so
        // `MON` in the month field would silently mean January).
        fields[4] = replace_names(&fields[4], &MONTHS, 1, false);
        fields[5] = replace_names(&fields[5], &WEEKDAYS, 0, true);
        check_letters(&fields, &given, names)?;

        let cron = parser().parse(&fields.join(" ")).map_err(|error| {
            blame_field(&fields, &given, names).unwrap_or_else(|| ScheduleError::Cron {
                expression: expression.to_string(),
                reason: error.to_string(),
            })
        })?;
        let interval = fields[..3].iter().any(|f| f.contains(['*', '/']));
        let schedule = CronSchedule {
            expression: expression.to_string(),
            cron: Box::new(cron),
            tz,
            interval,
        };
        // Without a year field a satisfiable expression matches within 28 years of
        // any instant (the calendar repeats); croner gives up at year 5000.
        if schedule.next_after(DateTime::<Utc>::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::NeverFires(expression.to_string()));
        }
        Ok(schedule)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone whose wall clock the fields are matched against.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether a wildcard or step in the second, minute or hour field makes this an
    /// interval schedule (fires at every real matching instant through DST changes)
    /// rather than a fixed-time one.
    pub fn is_interval(&self) -> bool {
        self.interval
    }

    /// The first instant strictly after `after` at which the schedule is due.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The wall-clock times worth looking at start at the reading of `after`,
        // except just before a fall-back transition: an instant after `after` can
        // then read an earlier wall-clock time, by at most the size of the drop, and
        // only if the drop comes within that size of `after`. No zone has set its
        // clock back by more than a few hours since 1900, so six hours ahead suffice.
        let here = offset_seconds(self.tz, after);
        let ahead = offset_seconds(self.tz, after.checked_add_signed(TimeDelta::hours(6))?);
        let start = after
            .naive_utc()
            .checked_add_signed(TimeDelta::seconds(here.min(ahead)))?;
        let mut local = self.cron.find_next_occurrence(&start, true).ok()?;
        let mut best: Option<DateTime<Utc>> = None;
        loop {
            let instants = self.instants(local);
            for &t in instants.iter().filter(|t| **t > after) {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
            // Wall-clock times later than this one have no earlier instants, so the
            // first time whose earliest instant is past `after` ends the search.
            if instants.first().is_some_and(|first| *first > after) {
                return best;
            }
            local = self.cron.find_next_occurrence(&local, false).ok()?;
        }
    }

    /// The instants a matching wall-clock time stands for, earliest first.
    fn instants(&self, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
        if self.interval {
            instants_of(self.tz, local)
        } else {
            fixed_instant(self.tz, local).into_iter().collect()
        }
    }

    /// croner's description, with the time zone: "At 02:30 (Europe/Berlin)".
    pub fn describe(&self) -> String {
        let text = self.cron.describe();
        format!("{} ({})", text.trim_end_matches('.'), self.tz.name())
    }
}

/// The parser for our six-field form: seconds always present (we add them to five
/// fields), no year field, POSIX weekdays (0 and 7 are Sunday), `0/10` read as
/// `*/10` starting at 0 because Quartz-trained users write it.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .sloppy_ranges(true)
        .build()
}

/// The five-field equivalent of an `@` nickname.
fn expand_nickname(nickname: &str) -> Result<&'static str, ScheduleError> {
    Ok(match nickname.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return Err(ScheduleError::UnknownNickname(nickname.to_string())),
    })
}

/// Replaces the names in one field by their numbers (`names[i]` is `first + i`),
/// case-insensitively. A weekday range may end on `SUN` (`FRI-SUN`), which is 7
/// there. Other letters are kept for croner to accept (`L`, `W`) or refuse.
fn replace_names(field: &str, names: &[&str], first: u32, sunday_ends_ranges: bool) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        out.push_str(&rest[..start]);
        let word_len = rest[start..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        match names.iter().position(|n| n.eq_ignore_ascii_case(word)) {
            Some(0) if sunday_ends_ranges && out.ends_with('-') => out.push('7'),
            Some(i) => out.push_str(&(first + i as u32).to_string()),
            None => out.push_str(word),
        }
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
    out
}

/// Refuses a word left in a field after its names were replaced: croner would
/// replace month and weekday names anywhere in the pattern instead of refusing them.
fn check_letters(
    fields: &[String],
    given: &[&str],
    names: &[&'static str],
) -> Result<(), ScheduleError> {
    let offset = fields.len() - given.len();
    for (i, field) in fields.iter().enumerate().skip(offset) {
        // Day-of-month takes croner's L (last) and W (weekday), day-of-week L.
        let allowed: &[char] = match i {
            3 => &['L', 'W'],
            5 => &['L'],
            _ => &[],
        };
        let Some(word) = field.split(|c: char| !c.is_ascii_alphabetic()).find(|w| {
            !w.is_empty() && !w.chars().all(|c| allowed.contains(&c.to_ascii_uppercase()))
        }) else {
            continue;
        };
        let reason = match i {
            4 => format!("`{word}` is not a month (JAN-DEC or 1-12)"),
            5 => format!("`{word}` is not a day of the week (SUN-SAT or 0-7)"),
            3 => format!("`{word}` is not a day of the month (1-31, L or W)"),
            _ => format!("`{word}` is not a number"),
        };
        return Err(ScheduleError::Field {
            field: names[i - offset],
            value: given[i - offset].to_string(),
            reason,
        });
    }
    Ok(())
}

/// The first field croner refuses on its own, as an error naming it. `fields` is
/// the six-field form, `given` what the user wrote, `names` the names of `given`.
fn blame_field(fields: &[String], given: &[&str], names: &[&'static str]) -> Option<ScheduleError> {
    let offset = fields.len() - given.len();
    (offset..fields.len()).find_map(|i| {
        let mut probe: Vec<&str> = vec!["0", "*", "*", "*", "*", "*"];
        probe[i] = &fields[i];
        let error = parser().parse(&probe.join(" ")).err()?;
        Some(ScheduleError::Field {
            field: names[i - offset],
            value: given[i - offset].to_string(),
            reason: format!("{} ({})", reason(&error), RANGES[i]),
        })
    })
}

/// croner's message without its "Component error:" style prefix.
fn reason(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match error {
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => sentence_part(m),
        other => sentence_part(&other.to_string()),
    }
}

/// "Number out of bounds." -> "number out of bounds", to go after a colon.
fn sentence_part(message: &str) -> String {
    let message = message.trim().trim_end_matches('.');
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
