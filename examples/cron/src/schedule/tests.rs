//! Schedule math against injected instants. DST facts used below (tzdb):
//! - Europe/Berlin 2026: 29 March 02:00 CET -> 03:00 CEST (01:00Z); 25 October
//!   03:00 CEST -> 02:00 CET (01:00Z), so 02:00-02:59 happens at 00:xxZ and 01:xxZ.
//! - America/New_York 2026: 8 March 02:00 EST -> 03:00 EDT (07:00Z); 1 November
//!   02:00 EDT -> 01:00 EST (06:00Z), so 01:00-01:59 happens at 05:xxZ and 06:xxZ.

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn parse(expression: &str, timezone: &str) -> Schedule {
    Schedule::parse(expression, timezone)
        .unwrap_or_else(|e| panic!("{expression} ({timezone}): {e}"))
}

fn error(expression: &str, timezone: &str) -> ScheduleError {
    match Schedule::parse(expression, timezone) {
        Ok(schedule) => panic!("{expression} parsed as {schedule:?}"),
        Err(e) => e,
    }
}

fn due(schedule: &Schedule, after: &str, up_to: &str) -> Vec<String> {
    schedule
        .due_between(utc(after), utc(up_to), 10_000)
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

fn next(schedule: &Schedule, after: &str) -> String {
    schedule
        .next_after(utc(after))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "none".into())
}

// ---- fixed-time schedules across DST ----

#[test]
fn berlin_spring_forward_fires_a_skipped_time_once_after_the_gap() {
    let s = parse("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        due(&s, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
}

#[test]
fn berlin_fall_back_fires_a_repeated_time_once_at_its_first_occurrence() {
    let s = parse("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        due(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
        [
            "2026-10-25T00:30:00Z", // 02:30 CEST, the first of two
            "2026-10-26T01:30:00Z", // 02:30 CET
        ]
    );
    // Asked between the two occurrences, the next is the next day's.
    assert_eq!(next(&s, "2026-10-25T00:45:00Z"), "2026-10-26T01:30:00Z");
}

#[test]
fn new_york_spring_forward_and_fall_back_for_a_fixed_time() {
    let s = parse("30 2 * * *", "America/New_York");
    assert_eq!(
        due(&s, "2026-03-07T00:00:00Z", "2026-03-09T12:00:00Z"),
        [
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // 02:30 does not exist: 03:00 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]
    );
    // 02:30 happens once on 1 November (the repeated hour is 01:00-01:59).
    assert_eq!(
        due(&s, "2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z"),
        [
            "2026-10-31T06:30:00Z",
            "2026-11-01T07:30:00Z",
            "2026-11-02T07:30:00Z"
        ]
    );
    let s = parse("30 1 * * *", "America/New_York");
    assert_eq!(
        due(&s, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"] // 01:30 EDT only, then EST
    );
}

#[test]
fn several_skipped_times_of_a_fixed_schedule_fire_once_after_the_gap() {
    // No wildcard in the time fields: fixed-time, as Vixie cron reads it.
    let s = parse("0,30 2 * * *", "Europe/Berlin");
    assert!(!matches!(&s, Schedule::Cron(c) if c.is_interval()));
    assert_eq!(
        due(&s, "2026-03-28T12:00:00Z", "2026-03-29T12:00:00Z"),
        ["2026-03-29T01:00:00Z"]
    );
    assert_eq!(
        due(&s, "2026-10-24T12:00:00Z", "2026-10-25T12:00:00Z"),
        ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z"]
    );
}

// ---- interval schedules across DST ----

/// Every whole minute in `(after, up_to]` whose wall clock in `tz` satisfies
/// `matches`: the real instants an interval schedule must fire at.
fn oracle(tz: Tz, after: &str, up_to: &str, matches: impl Fn(u32, u32) -> bool) -> Vec<String> {
    let (after, up_to) = (utc(after), utc(up_to));
    let mut t = after + TimeDelta::minutes(1);
    let mut out = Vec::new();
    while t <= up_to {
        let local = t.with_timezone(&tz);
        if matches(local.hour(), local.minute()) {
            out.push(t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        t += TimeDelta::minutes(1);
    }
    out
}

#[test]
fn interval_schedules_fire_at_every_real_matching_instant_through_dst() {
    let windows = [
        (
            "Europe/Berlin",
            "2026-03-28T20:00:00Z",
            "2026-03-29T06:00:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-10-24T20:00:00Z",
            "2026-10-25T06:00:00Z",
        ),
        (
            "America/New_York",
            "2026-03-08T02:00:00Z",
            "2026-03-08T12:00:00Z",
        ),
        (
            "America/New_York",
            "2026-11-01T02:00:00Z",
            "2026-11-01T12:00:00Z",
        ),
    ];
    type Rule = fn(u32, u32) -> bool;
    let rules: [(&str, Rule); 4] = [
        ("0 * * * *", |_, m| m == 0),
        ("*/15 * * * *", |_, m| m % 15 == 0),
        ("@hourly", |_, m| m == 0),
        ("*/20 1-3 * * *", |h, m| (1..=3).contains(&h) && m % 20 == 0),
    ];
    for (zone, after, up_to) in windows {
        let tz: Tz = zone.parse().unwrap();
        for (expression, rule) in rules {
            let s = parse(expression, zone);
            assert_eq!(
                due(&s, after, up_to),
                oracle(tz, after, up_to, rule),
                "{expression} in {zone} from {after}"
            );
        }
    }
}

#[test]
fn hourly_in_berlin_neither_doubles_nor_skips_real_hours() {
    let s = parse("0 * * * *", "Europe/Berlin");
    // Spring: 01:00 CET, 03:00 CEST, 04:00 CEST: one per real hour.
    assert_eq!(
        due(&s, "2026-03-28T23:30:00Z", "2026-03-29T02:30:00Z"),
        [
            "2026-03-29T00:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T02:00:00Z"
        ]
    );
    // Fall: 02:00 CEST and 02:00 CET both happen, an hour apart.
    assert_eq!(
        due(&s, "2026-10-24T23:30:00Z", "2026-10-25T01:30:00Z"),
        ["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z"]
    );
    // Inside the repeated hour, the next is the repeat.
    assert_eq!(next(&s, "2026-10-25T00:10:00Z"), "2026-10-25T01:00:00Z");
}

#[test]
fn every_fifteen_minutes_in_new_york_keeps_fifteen_minute_steps() {
    let s = parse("*/15 * * * *", "America/New_York");
    for (after, up_to) in [
        ("2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z"),
        ("2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z"),
    ] {
        let times = s.due_between(utc(after), utc(up_to), 100);
        assert_eq!(times.len(), 16, "{after}");
        assert!(
            times
                .windows(2)
                .all(|w| w[1] - w[0] == TimeDelta::minutes(15))
        );
    }
    // Between the two 01:50s of 1 November: 01:55 EDT, then 01:00 EST.
    let s = parse("*/5 * * * *", "America/New_York");
    assert_eq!(next(&s, "2026-11-01T05:50:00Z"), "2026-11-01T05:55:00Z");
    assert_eq!(next(&s, "2026-11-01T05:55:00Z"), "2026-11-01T06:00:00Z");
}

// ---- calendar ----

#[test]
fn twenty_ninth_of_february_fires_in_leap_years_only() {
    let s = parse("0 0 29 2 *", "UTC");
    assert_eq!(next(&s, "2026-01-01T00:00:00Z"), "2028-02-29T00:00:00Z");
    assert_eq!(next(&s, "2028-02-29T00:00:00Z"), "2032-02-29T00:00:00Z");
    // 2100 is not a leap year.
    assert_eq!(next(&s, "2096-03-01T00:00:00Z"), "2104-02-29T00:00:00Z");
}

#[test]
fn thirty_first_skips_thirty_day_months() {
    let s = parse("0 0 31 * *", "UTC");
    assert_eq!(next(&s, "2026-03-31T00:00:00Z"), "2026-05-31T00:00:00Z");
    let months: Vec<u32> = s
        .due_between(
            utc("2025-12-31T12:00:00Z"),
            utc("2026-12-31T12:00:00Z"),
            100,
        )
        .iter()
        .map(|t| t.month())
        .collect();
    assert_eq!(months, [1, 3, 5, 7, 8, 10, 12]);
}

#[test]
fn a_seconds_field_comes_first() {
    let s = parse("*/10 * * * * *", "UTC");
    assert_eq!(next(&s, "2026-01-01T12:00:05Z"), "2026-01-01T12:00:10Z");
    assert_eq!(
        s.due_between(
            utc("2026-01-01T12:00:00Z"),
            utc("2026-01-01T12:01:00Z"),
            100
        )
        .len(),
        6
    );
    let s = parse("30 15 10 * * *", "UTC");
    assert_eq!(next(&s, "2026-01-01T12:00:00Z"), "2026-01-02T10:15:30Z");
}

#[test]
fn names_are_read_in_their_own_fields() {
    let s = parse("0 9 * jan,Jul MON-FRI", "UTC");
    let times = s.due_between(
        utc("2026-01-01T00:00:00Z"),
        utc("2026-12-31T00:00:00Z"),
        1000,
    );
    assert!(
        times
            .iter()
            .all(|t| matches!(t.month(), 1 | 7) && t.weekday().number_from_monday() <= 5)
    );
    assert_eq!(times.len(), 22 + 23);
    // FRI-SUN runs Friday through Sunday.
    let s = parse("0 0 * * FRI-SUN", "UTC");
    let days: Vec<Weekday> = s
        .due_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-08T00:00:00Z"), 10)
        .iter()
        .map(|t| t.weekday())
        .collect();
    assert_eq!(days, [Weekday::Fri, Weekday::Sat, Weekday::Sun]);
}

#[test]
fn nicknames() {
    let hourly = parse("@hourly", "UTC");
    assert_eq!(
        next(&hourly, "2026-01-01T10:15:00Z"),
        "2026-01-01T11:00:00Z"
    );
    // 2026-01-01 is a Thursday.
    let weekly = parse("@weekly", "UTC");
    assert_eq!(
        next(&weekly, "2026-01-01T10:15:00Z"),
        "2026-01-04T00:00:00Z"
    );
    let daily = parse("@DAILY", "Europe/Berlin");
    assert_eq!(next(&daily, "2026-01-01T10:15:00Z"), "2026-01-01T23:00:00Z");
    let monthly = parse("@monthly", "UTC");
    assert_eq!(
        next(&monthly, "2026-01-01T10:15:00Z"),
        "2026-02-01T00:00:00Z"
    );
    for yearly in ["@yearly", "@annually"] {
        assert_eq!(
            next(&parse(yearly, "UTC"), "2026-01-01T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
    }
}

#[test]
fn next_after_is_strictly_after_even_within_a_second() {
    let s = parse("0 * * * *", "UTC");
    assert_eq!(next(&s, "2026-01-01T10:00:00Z"), "2026-01-01T11:00:00Z");
    assert_eq!(next(&s, "2026-01-01T09:59:59.999Z"), "2026-01-01T10:00:00Z");
    let s = parse("* * * * *", "UTC");
    assert_eq!(next(&s, "2026-01-01T10:00:00.500Z"), "2026-01-01T10:01:00Z");
}

#[test]
fn the_time_zone_moves_the_instant() {
    let s = parse("0 9 * * *", "Europe/Berlin");
    assert_eq!(next(&s, "2026-01-10T00:00:00Z"), "2026-01-10T08:00:00Z");
    assert_eq!(next(&s, "2026-06-10T00:00:00Z"), "2026-06-10T07:00:00Z");
    // An empty zone is UTC.
    assert_eq!(parse("0 9 * * *", "").timezone(), "UTC");
    assert_eq!(
        next(&parse("0 9 * * *", ""), "2026-01-10T00:00:00Z"),
        "2026-01-10T09:00:00Z"
    );
}

#[test]
fn due_between_is_bounded_by_both_ends_and_the_limit() {
    let s = parse("*/15 * * * *", "UTC");
    // (after, up_to]: 10:00 excluded, 11:00 included.
    assert_eq!(
        due(&s, "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
        [
            "2026-01-01T10:15:00Z",
            "2026-01-01T10:30:00Z",
            "2026-01-01T10:45:00Z",
            "2026-01-01T11:00:00Z"
        ]
    );
    let day = s.due_between(
        utc("2026-01-01T00:00:00Z"),
        utc("2026-01-02T00:00:00Z"),
        1000,
    );
    assert_eq!(day.len(), 96);
    let capped = s.due_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-02T00:00:00Z"), 5);
    assert_eq!(capped, day[..5]);
    assert!(
        s.due_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-02T00:00:00Z"), 0)
            .is_empty()
    );
    // An empty or reversed window has nothing due.
    assert!(due(&s, "2026-01-01T10:00:00Z", "2026-01-01T10:14:59Z").is_empty());
    assert!(due(&s, "2026-01-01T10:00:00Z", "2026-01-01T09:00:00Z").is_empty());
}

#[test]
fn describe_says_when_and_where() {
    let text = parse("30 2 * * *", "Europe/Berlin").describe();
    assert!(text.contains("02:30") || text.contains("2:30"), "{text}");
    assert!(text.ends_with("(Europe/Berlin)"), "{text}");
    assert_eq!(
        parse("R3/2026-01-01T00:00:00Z/PT1H", "UTC").describe(),
        "Every 1 hour from 2026-01-01T00:00:00Z, 3 times (UTC)"
    );
    assert_eq!(
        parse("R/2026-01-31T09:00:00Z/P1M2DT30M", "UTC").describe(),
        "Every 1 month 2 days 30 minutes from 2026-01-31T09:00:00Z, forever (UTC)"
    );
}

// ---- ISO 8601 repeating intervals ----

#[test]
fn an_unbounded_hourly_interval() {
    let s = parse("R/2026-01-01T00:00:00Z/PT1H", "UTC");
    assert_eq!(next(&s, "2025-06-01T00:00:00Z"), "2026-01-01T00:00:00Z");
    assert_eq!(next(&s, "2026-01-01T00:00:00Z"), "2026-01-01T01:00:00Z");
    assert_eq!(next(&s, "2026-01-01T05:30:00Z"), "2026-01-01T06:00:00Z");
    assert_eq!(next(&s, "2036-01-01T05:00:00Z"), "2036-01-01T06:00:00Z");
    assert_eq!(
        s.due_between(
            utc("2025-12-31T23:00:00Z"),
            utc("2026-01-02T00:00:00Z"),
            1000
        )
        .len(),
        25
    );
}

#[test]
fn a_bounded_interval_ends_after_its_repetitions() {
    let s = parse("R3/2026-01-01T00:00:00Z/PT1H", "UTC");
    assert_eq!(
        due(&s, "2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z"
        ]
    );
    assert_eq!(next(&s, "2026-01-01T02:00:00Z"), "none");
    assert_eq!(next(&s, "2030-01-01T00:00:00Z"), "none");
    assert_eq!(next(&s, "2026-01-01T01:30:00Z"), "2026-01-01T02:00:00Z");
}

#[test]
fn a_monthly_interval_counts_from_the_start_so_month_ends_do_not_drift() {
    let s = parse("R/2026-01-31T09:00:00Z/P1M", "UTC");
    assert_eq!(
        due(&s, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"),
        [
            "2026-01-31T09:00:00Z",
            "2026-02-28T09:00:00Z",
            "2026-03-31T09:00:00Z",
            "2026-04-30T09:00:00Z",
            "2026-05-31T09:00:00Z"
        ]
    );
    // Far ahead the guess from the mean month length still lands.
    assert_eq!(next(&s, "2124-02-28T09:00:00Z"), "2124-02-29T09:00:00Z");
    let yearly = parse("R/2024-02-29T00:00:00Z/P1Y", "UTC");
    assert_eq!(
        due(&yearly, "2024-01-01T00:00:00Z", "2028-12-31T00:00:00Z"),
        [
            "2024-02-29T00:00:00Z",
            "2025-02-28T00:00:00Z",
            "2026-02-28T00:00:00Z",
            "2027-02-28T00:00:00Z",
            "2028-02-29T00:00:00Z"
        ]
    );
}

#[test]
fn a_daily_period_keeps_the_wall_clock_but_hours_are_elapsed_time() {
    // 09:00 CET on 28 March; the next day is CEST.
    let days = parse("R/2026-03-28T09:00:00/P1D", "Europe/Berlin");
    assert_eq!(next(&days, "2026-03-28T08:00:00Z"), "2026-03-29T07:00:00Z");
    let hours = parse("R/2026-03-28T09:00:00+01:00/PT24H", "Europe/Berlin");
    assert_eq!(next(&hours, "2026-03-28T08:00:00Z"), "2026-03-29T08:00:00Z");
    // A daily time that falls in the gap fires after it, as fixed-time cron does.
    let gap = parse("R/2026-03-28T02:30:00/P1D", "Europe/Berlin");
    assert_eq!(
        due(&gap, "2026-03-28T00:00:00Z", "2026-03-30T12:00:00Z"),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
}

#[test]
fn interval_starts_and_periods_in_other_spellings() {
    let a = parse("R2/2026-01-01T00:00Z/P1W", "UTC");
    assert_eq!(
        due(&a, "2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ["2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z"]
    );
    let b = parse("r5/2026-01-01T01:00:00+01:00/pt90m", "UTC");
    assert_eq!(next(&b, "2026-01-01T00:00:00Z"), "2026-01-01T01:30:00Z");
}

// ---- refused input ----

#[test]
fn each_bad_cron_field_is_named() {
    for (expression, field) in [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 32 * *", "day-of-month"),
        ("* * 0 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * MON *", "month"),
        ("* * * * 8", "day-of-week"),
        ("* * * * JAN", "day-of-week"),
        ("60 * * * * *", "second"),
        ("0 */0 * * * *", "minute"),
        ("5-1x * * * *", "minute"),
    ] {
        match error(expression, "UTC") {
            ScheduleError::Field { field: named, .. } => {
                assert_eq!(named, field, "{expression}");
            }
            other => panic!("{expression}: {other}"),
        }
        let message = error(expression, "UTC").to_string();
        assert!(
            message.starts_with(&format!("the {field} field `")),
            "{expression}: {message}"
        );
    }
}

#[test]
fn other_refusals_say_what_is_wrong() {
    let cases: [(&str, &str, &str); 14] = [
        ("", "UTC", "the schedule is empty"),
        ("* * * *", "UTC", "has 4 fields"),
        ("0 0 0 * * * 2026", "UTC", "has 7 fields"),
        ("@often", "UTC", "unknown nickname `@often`"),
        ("0 0 31 2 *", "UTC", "never matches a real date"),
        (
            "0 0 * * *",
            "Mars/Olympus",
            "unknown time zone `Mars/Olympus`",
        ),
        ("R//PT1H", "UTC", "has no start"),
        (
            "R0/2026-01-01T00:00:00Z/PT1H",
            "UTC",
            "the repetitions `R0`",
        ),
        (
            "Rx/2026-01-01T00:00:00Z/PT1H",
            "UTC",
            "the repetitions `Rx`",
        ),
        (
            "R/2026-13-01T00:00:00Z/PT1H",
            "UTC",
            "the start `2026-13-01T00:00:00Z`",
        ),
        (
            "R/2026-01-01T00:00:00Z/PT1.5H",
            "UTC",
            "fractions are not supported",
        ),
        ("R/2026-01-01T00:00:00Z/P1H", "UTC", "is not a date unit"),
        ("R/2026-01-01T00:00:00Z/PT0S", "UTC", "longer than zero"),
        ("R/2026-01-01T00:00:00Z", "UTC", "expected three parts"),
    ];
    for (expression, zone, expected) in cases {
        let message = error(expression, zone).to_string();
        assert!(
            message.contains(expected),
            "{expression:?}: {message:?} lacks {expected:?}"
        );
    }
    assert!(matches!(
        error("R/2026-01-01T00:00:00Z/P1D1M", "UTC"),
        ScheduleError::Period { .. }
    ));
    assert!(matches!(
        error("R/2026-01-01T00:00:00Z/PT", "UTC"),
        ScheduleError::Period { .. }
    ));
}

#[test]
fn a_schedule_remembers_its_expression_and_zone() {
    let s = parse("  */5 * * * *  ", "America/New_York");
    assert_eq!(s.expression(), "*/5 * * * *");
    assert_eq!(s.timezone(), "America/New_York");
}

// ---- properties ----

const EXPRESSIONS: [&str; 14] = [
    "30 2 * * *",
    "0,30 2 * * *",
    "30 1 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "*/10 * * * * *",
    "0 0 29 2 *",
    "0 0 31 * *",
    "0 9 * * MON-FRI",
    "@weekly",
    "0 0 L * *",
    "R/2026-01-31T09:00:00Z/P1M",
    "R5/2026-03-28T02:30:00/P1D",
    "R/2000-01-01T00:00:00Z/PT7H13M",
];
const ZONES: [&str; 4] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn next_after_is_strictly_increasing_and_agrees_with_due_between(
        expression in 0..EXPRESSIONS.len(),
        zone in 0..ZONES.len(),
        // 2000-01-01 .. 2060-01-01, to the millisecond.
        millis in 946_684_800_000_i64..2_840_140_800_000_i64,
    ) {
        let s = parse(EXPRESSIONS[expression], ZONES[zone]);
        let t = Utc.timestamp_millis_opt(millis).unwrap();
        let up_to = t + TimeDelta::days(400);
        let due = s.due_between(t, up_to, 4);
        match s.next_after(t) {
            Some(first) => {
                prop_assert!(first > t);
                if first <= up_to {
                    prop_assert_eq!(due.first(), Some(&first));
                } else {
                    prop_assert!(due.is_empty());
                }
                if let Some(second) = s.next_after(first) {
                    prop_assert!(second > first);
                }
                // Nothing due is skipped between t and the first.
                prop_assert!(due.iter().all(|d| *d >= first));
            }
            None => prop_assert!(due.is_empty()),
        }
        prop_assert!(due.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(due.iter().all(|d| *d > t && *d <= up_to));
    }

    #[test]
    fn next_after_never_jumps_over_a_due_instant(
        expression in 0..EXPRESSIONS.len(),
        zone in 0..ZONES.len(),
        millis in 946_684_800_000_i64..2_840_140_800_000_i64,
        back_ms in 1_i64..3_600_000,
    ) {
        // From any instant between a due instant's predecessor and itself, the next
        // is that instant: the sequence has no hidden members.
        let s = parse(EXPRESSIONS[expression], ZONES[zone]);
        let t = Utc.timestamp_millis_opt(millis).unwrap();
        if let Some(first) = s.next_after(t) {
            let probe = (first - TimeDelta::milliseconds(back_ms)).max(t);
            prop_assert_eq!(s.next_after(probe), Some(first));
        }
    }
}
