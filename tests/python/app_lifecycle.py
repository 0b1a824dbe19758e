"""An app's life: create, get, list, scale up and down, restart, kill a task with and
without scaling, delete."""

from common import main, running, shell_app, wait_deployed, wait_gone, wait_for

APP = "/lifecycle"


def scenario(c):
    created = c.create_app(APP, shell_app(instances=2))
    assert created and created.id == APP, created
    first = wait_deployed(c, APP, 2)

    app = c.get_app(APP)
    assert app.instances == 2 and app.tasks_running == 2, app
    assert APP in [a.id for a in c.list_apps()]

    c.scale_app(APP, instances=4)
    wait_deployed(c, APP, 4)
    # Scaling down kills the youngest first: one of the first two is kept.
    c.scale_app(APP, delta=-3)
    [kept] = wait_deployed(c, APP, 1)
    assert kept.id in {t.id for t in first}, (kept, first)
    assert c.get_app(APP).instances == 1

    c.scale_app(APP, instances=3)
    before = {t.id for t in wait_deployed(c, APP, 3)}
    version = c.get_app(APP).version
    c.restart_app(APP)
    replaced = wait_for("a restart to replace every task", lambda: running(c, APP),
                        lambda ts: len(ts) == 3 and not before & {t.id for t in ts})
    after = {t.id for t in replaced}
    wait_deployed(c, APP, 3)
    assert c.get_app(APP).version != version, "a restart is a new version"

    victim = sorted(after)[0]
    c.kill_task(APP, victim, scale=True)
    left = wait_deployed(c, APP, 2)
    assert victim not in {t.id for t in left}
    assert c.get_app(APP).instances == 2, "a kill with scale lowers instances"

    victim = left[0].id
    assert c.kill_given_tasks([victim])
    replaced = wait_for("the killed task to be replaced", lambda: running(c, APP),
                        lambda ts: len(ts) == 2 and victim not in {t.id for t in ts})
    assert c.get_app(APP).instances == 2, "a kill without scale keeps instances"
    assert len(replaced) == 2

    c.delete_app(APP)
    wait_gone(c, APP)


main(scenario, APP)
