"""Runs through Metronome's client: a run started now ends SUCCESS, a failing command
(`exit 3`) ends FAILED, ON_FAILURE retries a failed task within the same run, a
stopped run ends FAILED, and a job with active runs is removed only with
stopCurrentJobRuns."""

import os
import sys

from metronome_common import (JobRun, JobSpec, NotFoundError, active_run_ids, expect_http_error,
                              history, job_spec, main, task_count, wait_finished, wait_for)

OK = "runs.ok"
FAILING = "runs.failing"
RETRIED = "runs.retried"
SLEEPER = "runs.sleeper"


def scenario(c):
    scratch = sys.argv[2]

    c.create_job(job_spec(OK, "echo done"))
    run = c.run_job(OK)
    assert run and run.jobId == OK and run.id, run
    assert run.status in (JobRun.INITIAL, JobRun.STARTING, JobRun.ACTIVE), run
    outcome, finished = wait_finished(OK, run.id)
    assert outcome == "SUCCESS", finished
    assert task_count(finished) == 1, finished
    past = history(OK)
    assert past["successCount"] == 1 and past["failureCount"] == 0, past
    assert past["lastSuccessAt"], past
    assert active_run_ids(c, OK) == [], "a finished run is not active"

    c.create_job(job_spec(FAILING, "exit 3"))
    run = c.run_job(FAILING)
    outcome, finished = wait_finished(FAILING, run.id)
    assert outcome == "FAILED", finished
    assert task_count(finished) == 1, "NEVER: one task, no retry"
    past = history(FAILING)
    assert past["failureCount"] == 1 and past["successCount"] == 0, past
    assert past["lastFailureAt"], past

    # ON_FAILURE: the first task fails (and leaves a mark), the retry succeeds.
    mark = os.path.join(scratch, "retried-once")
    retried = job_spec(RETRIED, f"test -e {mark} || {{ touch {mark}; exit 1; }}",
                       restart={"policy": "ON_FAILURE", "activeDeadlineSeconds": 120})
    assert retried.run.restart.policy == JobSpec.RunSpec.RestartSpec.ON_FAILURE
    c.create_job(retried)
    run = c.run_job(RETRIED)
    outcome, finished = wait_finished(RETRIED, run.id)
    assert outcome == "SUCCESS", finished
    assert task_count(finished) == 2, f"one failed task, one retry: {finished}"
    assert os.path.exists(mark)

    # A run that is stopped ends FAILED; a job with an active run is removed only
    # when its runs are stopped too.
    c.create_job(job_spec(SLEEPER, "sleep 1000"))
    stopped = c.run_job(SLEEPER)
    wait_for("the sleeper to run", lambda: c.get_run(SLEEPER, stopped.id).status,
             lambda status: status == JobRun.ACTIVE)
    c.stop_run(SLEEPER, stopped.id)
    outcome, _ = wait_finished(SLEEPER, stopped.id)
    assert outcome == "FAILED", outcome
    kept = c.run_job(SLEEPER)
    wait_for("the second sleeper to run", lambda: c.get_run(SLEEPER, kept.id).status,
             lambda status: status == JobRun.ACTIVE)
    assert active_run_ids(c, SLEEPER) == [kept.id]
    expect_http_error(409, c.delete_job, SLEEPER)
    assert c.get_job(SLEEPER).id == SLEEPER, "a refused delete keeps the job"
    c.delete_job(SLEEPER, stop_current_job_runs=True)
    try:
        c.get_job(SLEEPER)
        raise AssertionError("the job is gone")
    except NotFoundError:
        pass

    try:
        c.run_job("runs.missing")
        raise AssertionError("running an unknown job is 404")
    except NotFoundError:
        pass


main(scenario, OK, FAILING, RETRIED, SLEEPER)
