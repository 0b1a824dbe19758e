"""A job's definition through Metronome's client: create (without and with an inline
schedule), get, list, update, validation and conflicts, delete."""

import requests

from metronome_common import (NotFoundError, expect_http_error, job_spec, main, url,
                              wait_for)

PLAIN = "jobs.plain"
SCHEDULED = "jobs.scheduled"


def scenario(c):
    created = c.create_job(job_spec(PLAIN, "echo hello", description="a plain job"))
    assert created and created.id == PLAIN, created
    assert created.run.cmd == "echo hello" and created.description == "a plain job", created
    # Metronome's defaults fill what the definition left out.
    assert created.run.maxLaunchDelay == 3600, created
    assert created.run.restart.policy == created.run.restart.NEVER, created

    got = c.get_job(PLAIN)
    assert got.id == PLAIN and got.run.cpus == 0.05 and got.run.mem == 32, got
    assert PLAIN in [j.id for j in c.list_jobs()]
    assert c.list_schedules(PLAIN) == [], "a job created without schedules has none"

    # Schedules may be inlined when a job is created (the client cannot send them:
    # its JobSpec has no such field).
    body = {"id": SCHEDULED, "run": {"cmd": "true", "cpus": 0.05, "mem": 32},
            "schedules": [{"id": "nightly", "cron": "0 2 * * *"}]}
    reply = requests.post(f"{url()}/v1/jobs", json=body, timeout=10)
    assert reply.status_code == 201, (reply.status_code, reply.text)
    [schedule] = c.list_schedules(SCHEDULED)
    assert schedule.id == "nightly" and schedule.cron == "0 2 * * *", schedule
    assert schedule.timezone == "UTC" and schedule.startingDeadlineSeconds == 900, schedule
    assert schedule.enabled and schedule.nextRunAt, schedule
    assert c.get_job(SCHEDULED).id == SCHEDULED
    listed = [j.id for j in c.list_jobs()]
    assert PLAIN in listed and SCHEDULED in listed, listed

    # Update: the whole definition is replaced.
    changed = job_spec(PLAIN, "echo changed", cpus=0.1, mem=64)
    changed.labels["team"] = "batch"
    updated = c.update_job(PLAIN, changed)
    assert updated and updated.run.cmd == "echo changed", updated
    got = c.get_job(PLAIN)
    assert got.run.cmd == "echo changed" and got.run.cpus == 0.1 and got.run.mem == 64, got
    assert dict(got.labels) == {"team": "batch"}, got.labels
    assert not got.description, "replaced, not merged"
    assert [s.id for s in c.list_schedules(SCHEDULED)] == ["nightly"]

    # Metronome's refusals.
    expect_http_error(409, c.create_job, job_spec(PLAIN, "true"))
    error = expect_http_error(422, c.create_job, job_spec("jobs.tiny", "true", mem=1))
    assert error.error_details, "a 422 names what is wrong"
    expect_http_error(422, c.create_job, job_spec("Not_Valid", "true"))
    # (0 would not be sent: protobuf leaves default values out of the JSON.)
    expect_http_error(422, c.update_job, PLAIN, job_spec(PLAIN, "true", cpus=0.001))
    try:
        c.get_job("jobs.missing")
        raise AssertionError("an unknown job is 404")
    except NotFoundError:
        pass

    for job_id in (PLAIN, SCHEDULED):
        c.delete_job(job_id)
        wait_for(f"{job_id} to be removed", lambda: [j.id for j in c.list_jobs()],
                 lambda ids: job_id not in ids)
        try:
            c.get_job(job_id)
            raise AssertionError(f"{job_id} is gone")
        except NotFoundError:
            pass
    try:
        c.delete_job(PLAIN)
        raise AssertionError("deleting an unknown job is 404")
    except NotFoundError:
        pass


main(scenario, PLAIN, SCHEDULED, "jobs.tiny")
