//! Schedules: cron expressions, time zones, ISO 8601 repeating intervals. Pure.
