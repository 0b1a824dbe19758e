"""What the Metronome scenario scripts share: the client (PyPI `dcos-metronome`) for
the URL they are given, jobs and schedules built from JSON, polling with a deadline,
and a run's outcome.

Every script takes the cron API's URL as its first argument (and, for some, a
scratch directory the agents' tasks can write to), exits 0 when its scenario held
and prints why not otherwise.

The client knows only Metronome's /v1 API of its time: it sends embeds as plain
query flags and parses every answer with protobuf, refusing unknown fields. What it
cannot ask for (a job's history) is read with plain `requests`, the way Metronome's
users do."""

import datetime
import sys
import time
import traceback

import requests
from google.protobuf import json_format
from metronome import MetronomeClient
from metronome.exceptions import MetronomeHttpError, NotFoundError  # noqa: F401 (the scripts import them from here)
from metronome.models import JobRun, JobSpec, ScheduleSpec  # noqa: F401 (likewise)

# How long one expected change may take before the scenario fails.
DEADLINE = 60.0
FINISHED = {JobRun.SUCCESS: "SUCCESS", JobRun.FAILED: "FAILED"}


def url():
    return sys.argv[1].rstrip("/")


def client():
    return MetronomeClient(url(), timeout=10)


def job_spec(job_id, cmd, description=None, **run):
    """A small job (enough for many on one agent); `run` overrides its run fields."""
    fields = {"cpus": 0.05, "mem": 32, "cmd": cmd}
    fields.update(run)
    job = {"id": job_id, "run": fields}
    if description is not None:
        job["description"] = description
    return json_format.ParseDict(job, JobSpec())


def schedule_spec(schedule_id, cron, **fields):
    body = {"id": schedule_id, "cron": cron}
    body.update(fields)
    return json_format.ParseDict(body, ScheduleSpec())


def utc(instant):
    """An instant as the API writes it (`...Z`, `...+00:00` or `...+0000`) in UTC."""
    return datetime.datetime.fromisoformat(instant).astimezone(datetime.timezone.utc)


def wait_for(what, probe, done, deadline=DEADLINE, interval=0.2):
    """Polls probe() until done(value) holds; returns that value."""
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what}; last seen: {value!r}")
        time.sleep(interval)


def history(job_id):
    """The job's `embed=history` (plain HTTP: the client cannot ask for it)."""
    reply = requests.get(f"{url()}/v1/jobs/{job_id}", params={"embed": "history"}, timeout=10)
    reply.raise_for_status()
    return reply.json().get("history") or {}


def finished_run(job_id, run_id):
    """('SUCCESS' | 'FAILED', the run's JSON from the history) once the run finished,
    else None. Metronome answers a finished run from its history only (GET of the run
    is 404 then); an instance that still answers it with a final status counts too,
    but the history must have it either way."""
    try:
        run = client().get_run(job_id, run_id)
        if run.status not in FINISHED:
            return None
    except NotFoundError:
        pass
    past = history(job_id)
    for outcome, field in (("SUCCESS", "successfulFinishedRuns"), ("FAILED", "failedFinishedRuns")):
        for run in past.get(field) or []:
            if run.get("id") == run_id:
                return outcome, run
    return None


def wait_finished(job_id, run_id, deadline=DEADLINE):
    return wait_for(f"run {run_id} of {job_id} to finish", lambda: finished_run(job_id, run_id),
                    lambda v: v is not None, deadline=deadline)


def active_run_ids(c, job_id):
    return sorted(run.id for run in c.list_runs(job_id))


def task_count(run):
    """How many tasks a finished run had: objects, or ids (Metronome's history)."""
    return len(run.get("tasks") or [])


def remove(c, job_id):
    try:
        c.delete_job(job_id, stop_current_job_runs=True)
    except Exception:
        pass


def main(scenario, *jobs):
    """Runs scenario(client); removes `jobs` afterwards, whatever happened."""
    c = client()
    status = 0
    try:
        scenario(c)
        print("ok")
    except Exception:  # the scenario's failure, printed for the test to show
        traceback.print_exc()
        status = 1
    for job_id in jobs:
        remove(c, job_id)
    sys.exit(status)


def expect_http_error(status, call, *args, **kwargs):
    """Calls call(*args, **kwargs), which must fail with HTTP `status`; returns the error."""
    try:
        call(*args, **kwargs)
    except MetronomeHttpError as e:
        assert e.status_code == status, f"expected HTTP {status}, got {e!r}"
        return e
    raise AssertionError(f"expected HTTP {status} from {call.__name__}{args}")
