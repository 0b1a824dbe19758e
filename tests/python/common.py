"""What the scenario scripts share: the client for the URL they are given, polling
with a deadline, and the views of an app's tasks the scenarios check.

Every script takes the apps API's URL as its first argument, exits 0 when its
scenario held and prints why not otherwise."""

import collections
import collections.abc
import math
import sys
import time
import traceback

# marathon 0.13.0 encodes nested objects (health checks, port definitions) through
# collections.Iterable, which Python 3.10 removed.
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

import marathon  # noqa: E402 (after the shim above)
from marathon.exceptions import NotFoundError  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402

# How long one expected change may take before the scenario fails.
DEADLINE = 60.0


def client():
    return marathon.MarathonClient(sys.argv[1], timeout=10)


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


def shell_app(cmd="sleep 1000", instances=1, **fields):
    """A small app: enough for several on one agent."""
    return MarathonApp(cmd=cmd, instances=instances, cpus=0.05, mem=16, **fields)


def running(c, app_id):
    return [t for t in c.list_tasks(app_id) if t.state == "TASK_RUNNING"]


def healthy(task):
    return (task.state == "TASK_RUNNING" and bool(task.health_check_results)
            and all(r.alive for r in task.health_check_results))


def deploying(c, app_id):
    """The ids of the deployments that touch app_id."""
    return [d.id for d in c.list_deployments() if app_id in (d.affected_apps or [])]


def wait_deployed(c, app_id, instances):
    """Waits for app_id's deployments to end with `instances` tasks running."""
    wait_for(f"{app_id}'s deployments to end", lambda: deploying(c, app_id), lambda d: not d)
    return wait_for(f"{instances} running tasks of {app_id}",
                    lambda: running(c, app_id), lambda ts: len(ts) == instances)


def wait_gone(c, app_id):
    def probe():
        try:
            c.get_app(app_id)
            return "still there"
        except NotFoundError:
            return None
    wait_for(f"{app_id} to be removed", probe, lambda v: v is None)
    wait_for(f"{app_id}'s tasks to end",
             lambda: [t.id for t in c.list_tasks() if t.app_id == app_id], lambda ts: not ts)


def min_healthy(instances, minimum_health_capacity):
    return math.ceil(instances * minimum_health_capacity)


def main(scenario, *apps):
    """Runs scenario(client); removes `apps` afterwards, whatever happened."""
    c = client()
    status = 0
    try:
        scenario(c)
        print("ok")
    except Exception:  # the scenario's failure, printed for the test to show
        traceback.print_exc()
        status = 1
    for app_id in apps:
        try:
            c.delete_app(app_id, force=True)
        except Exception:
            pass
    sys.exit(status)
