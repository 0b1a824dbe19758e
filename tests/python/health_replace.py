"""A task whose HTTP health check keeps failing is killed and replaced."""

from marathon.models import MarathonHealthCheck

from common import main, running, shell_app, wait_for

APP = "/unhealthy"


def scenario(c):
    # Nothing listens on the task's port, so every check fails.
    c.create_app(APP, shell_app(
        cmd="sleep 1000",
        port_definitions=[{"port": 0, "protocol": "tcp"}],
        health_checks=[MarathonHealthCheck(protocol="HTTP", path="/", port_index=0,
                                           grace_period_seconds=1, interval_seconds=1,
                                           timeout_seconds=1, max_consecutive_failures=2)],
    ))
    [first] = wait_for("the first task to run", lambda: running(c, APP), lambda ts: len(ts) == 1)
    wait_for("the task to be found unhealthy",
             lambda: [r.alive for t in c.list_tasks(APP) if t.id == first.id
                      for r in t.health_check_results],
             lambda alive: False in alive)
    replacement = wait_for("the unhealthy task to be replaced", lambda: running(c, APP),
                           lambda ts: len(ts) == 1 and ts[0].id != first.id)
    assert c.get_app(APP).instances == 1
    print(f"{first.id} replaced by {replacement[0].id}")


main(scenario, APP)
