"""A daemon app (label AGORA_DAEMON=true) runs one instance on every agent.

Arguments: URL, number of agents."""

import sys

from common import main, running, shell_app, wait_for

APP = "/everywhere"
AGENTS = int(sys.argv[2])


def scenario(c):
    # A label, not a field of its own: the client reads and writes it unchanged.
    c.create_app(APP.lstrip("/"), shell_app(labels={"AGORA_DAEMON": "true"}))
    tasks = wait_for(f"one task on each of {AGENTS} agents", lambda: running(c, APP),
                     lambda ts: len(ts) == AGENTS and len({t.slave_id for t in ts}) == AGENTS)
    print("on agents:", sorted(t.slave_id for t in tasks))


main(scenario, APP)
