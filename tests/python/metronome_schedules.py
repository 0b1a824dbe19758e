"""A job's schedules through Metronome's client: create, list, get (with the next run),
update, refusals, delete; and a schedule that comes due starts a run."""

from metronome_common import (NotFoundError, expect_http_error, history, job_spec, main,
                              schedule_spec, utc, wait_for)

JOB = "schedules.nightly"
DUE = "schedules.due"


def scenario(c):
    c.create_job(job_spec(JOB, "true"))
    created = c.create_schedule(JOB, schedule_spec("nightly", "0 2 * * *", timezone="UTC",
                                                   startingDeadlineSeconds=120,
                                                   concurrencyPolicy="ALLOW", enabled=True))
    assert created and created.id == "nightly" and created.cron == "0 2 * * *", created
    assert created.startingDeadlineSeconds == 120, created
    assert created.nextRunAt, f"the created schedule names its next run: {created}"
    next_run = utc(created.nextRunAt)
    assert (next_run.hour, next_run.minute, next_run.second) == (2, 0, 0), created.nextRunAt

    [listed] = c.list_schedules(JOB)
    assert listed.id == "nightly" and listed.timezone == "UTC", listed
    got = c.get_schedule(JOB, "nightly")
    assert got.cron == "0 2 * * *" and got.enabled, got

    # Update: a new instant, in another time zone; the next run follows.
    updated = c.update_schedule(JOB, "nightly", schedule_spec(
        "nightly", "30 3 * * *", timezone="America/New_York", startingDeadlineSeconds=300))
    assert updated and updated.cron == "30 3 * * *", updated
    got = c.get_schedule(JOB, "nightly")
    assert got.timezone == "America/New_York" and got.startingDeadlineSeconds == 300, got
    assert got.nextRunAt and got.nextRunAt != created.nextRunAt, (got.nextRunAt, created.nextRunAt)
    # 03:30 in New York is 07:30 or 08:30 UTC, depending on daylight saving time.
    next_run = utc(got.nextRunAt)
    assert (next_run.hour, next_run.minute) in ((7, 30), (8, 30)), got.nextRunAt

    # Refusals: a second schedule with the same id, a cron that does not parse, an
    # unknown time zone, and schedules of a job that does not exist.
    expect_http_error(409, c.create_schedule, JOB, schedule_spec("nightly", "0 4 * * *"))
    expect_http_error(422, c.create_schedule, JOB, schedule_spec("bad", "not a cron"))
    expect_http_error(422, c.create_schedule, JOB, schedule_spec("tz", "0 4 * * *",
                                                                 timezone="Mars/Olympus"))
    try:
        c.list_schedules("schedules.missing")
        raise AssertionError("schedules of an unknown job are 404")
    except NotFoundError:
        pass
    try:
        c.get_schedule(JOB, "missing")
        raise AssertionError("an unknown schedule is 404")
    except NotFoundError:
        pass

    c.delete_schedule(JOB, "nightly")
    assert c.list_schedules(JOB) == []
    try:
        c.get_schedule(JOB, "nightly")
        raise AssertionError("a deleted schedule is gone")
    except NotFoundError:
        pass
    assert c.get_job(JOB).id == JOB, "the job outlives its schedule"

    # A schedule that comes due starts a run (every minute: due within 60 s).
    c.create_job(job_spec(DUE, "true"))
    c.create_schedule(DUE, schedule_spec("every-minute", "* * * * *"))
    wait_for("the schedule to start a run", lambda: history(DUE).get("successCount", 0),
             lambda successes: successes >= 1, deadline=90)
    c.delete_schedule(DUE, "every-minute")


main(scenario, JOB, DUE)
