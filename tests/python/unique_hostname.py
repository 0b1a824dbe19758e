"""UNIQUE hostname with more instances than hosts: one per host runs, the rest wait
in the launch queue, which says the constraint is why.

Arguments: URL, number of agents (each on its own hostname)."""

import sys

from common import main, running, shell_app, wait_for

APP = "/unique"
HOSTS = int(sys.argv[2])


def waiting(c):
    return [q for q in c.list_queue() if q.app.id == APP]


def constraint_declined(item):
    summary = item.processed_offers_summary or {}
    return [r for r in summary.get("rejectSummaryLastOffers", [])
            if r.get("reason") == "UnfulfilledConstraint" and r.get("declined", 0) > 0]


def scenario(c):
    c.create_app(APP, shell_app(instances=HOSTS + 1, constraints=[["hostname", "UNIQUE"]]))
    tasks = wait_for(f"{HOSTS} tasks, one per host", lambda: running(c, APP),
                     lambda ts: len(ts) == HOSTS)
    assert len({t.host for t in tasks}) == HOSTS, [t.host for t in tasks]

    [item] = wait_for("the last instance waiting in the queue for the constraint",
                      lambda: waiting(c),
                      lambda q: len(q) == 1 and q[0].count == 1 and constraint_declined(q[0]))
    print("queue:", item.processed_offers_summary)
    assert len(running(c, APP)) == HOSTS, "no host runs two"

    # The deployment to HOSTS + 1 cannot finish, so it holds the app: as in
    # Marathon, only a forced change replaces it.
    assert [d for d in c.list_deployments() if APP in (d.affected_apps or [])], "stuck deployment shown"
    c.scale_app(APP, instances=HOSTS, force=True)
    wait_for("the queue to empty", lambda: waiting(c), lambda q: not q)


main(scenario, APP)
