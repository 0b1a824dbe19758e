"""A rolling upgrade of an app with HTTP health checks: while the new version
replaces the old, healthy instances never drop below
ceil(instances * minimumHealthCapacity)."""

import sys
import time

from marathon.models import MarathonHealthCheck
from marathon.models.app import MarathonUpgradeStrategy

from common import (deploying, healthy, main, min_healthy, shell_app, wait_deployed, wait_for)

APP = "/rolling"
INSTANCES = 4
CAPACITY = 0.5


def web(version):
    # The tasks serve HTTP on their first port with this very interpreter.
    app = shell_app(
        cmd=f"exec {sys.executable} -m http.server $PORT0",
        instances=INSTANCES,
        env={"VERSION": version},
        port_definitions=[{"port": 0, "protocol": "tcp"}],
        # One agent: agents of one machine offer the same port numbers, which only
        # one of them can hand out without two servers colliding.
        constraints=[["agent", "CLUSTER", "1"]],
        health_checks=[MarathonHealthCheck(protocol="HTTP", path="/", port_index=0,
                                           grace_period_seconds=30, interval_seconds=1,
                                           timeout_seconds=2, max_consecutive_failures=3)],
        upgrade_strategy=MarathonUpgradeStrategy(minimum_health_capacity=CAPACITY,
                                                 maximum_over_capacity=0.0),
    )
    return app


def all_healthy(c):
    return [t for t in c.list_tasks(APP) if healthy(t)]


def scenario(c):
    c.create_app(APP, web("1"))
    old = wait_for(f"{INSTANCES} healthy tasks", lambda: all_healthy(c),
                   lambda ts: len(ts) == INSTANCES)
    old_ids = {t.id for t in old}

    floor = min_healthy(INSTANCES, CAPACITY)
    reply = c.update_app(APP, web("2"))
    new_version = reply["version"]
    end = time.monotonic() + 120
    lowest = INSTANCES
    while True:
        tasks = all_healthy(c)
        lowest = min(lowest, len(tasks))
        assert len(tasks) >= floor, f"only {len(tasks)} healthy tasks during the upgrade (at least {floor})"
        upgraded = [t for t in tasks if t.version == new_version]
        if len(upgraded) == INSTANCES and not deploying(c, APP):
            break
        assert time.monotonic() < end, f"the upgrade did not finish within 120s: {tasks}"
        time.sleep(0.1)
    print(f"fewest healthy tasks during the upgrade: {lowest} (floor {floor})")

    new = all_healthy(c)
    assert len(new) == INSTANCES, new
    assert not old_ids & {t.id for t in new}, "every old task was replaced"
    assert all(t.version == new_version for t in new), [(t.id, t.version) for t in new]
    assert c.get_app(APP).env == {"VERSION": "2"}
    wait_deployed(c, APP, INSTANCES)


main(scenario, APP)
