"""The node role on a real lab node: runtime, PM2 under systemd, app processes."""

import json
import time
import urllib.request

APP = "shop"
USER = "shop"
PM2_HOME = "/home/shop/.pm2"
UNIT = "pm2-shop"


def pm2_processes(host):
    out = host.check_output("runuser -u %s -- env PM2_HOME=%s /usr/local/bin/pm2 jlist" % (USER, PM2_HOME))
    return [p for p in json.loads(out[out.index("["):]) if p["name"].startswith(APP + "-")]


def wait_online(host, name, count, timeout=60):
    deadline = time.monotonic() + timeout
    procs = []
    while time.monotonic() < deadline:
        procs = [p for p in pm2_processes(host) if p["name"] == name]
        if len(procs) == count and all(p["pm2_env"]["status"] == "online" for p in procs):
            return procs
        time.sleep(1)
    raise AssertionError("%s: expected %d online, got %r" % (name, count, [(p["pm_id"], p["pm2_env"]["status"]) for p in procs]))


def test_node_version_meets_minimum(host):
    version = host.check_output("node --version").lstrip("v")
    assert tuple(int(x) for x in version.split(".")[:2]) >= (24, 9), version


def test_pm2_version_pinned(host):
    assert host.check_output("runuser -u %s -- env PM2_HOME=%s /usr/local/bin/pm2 --version" % (USER, PM2_HOME)).strip().endswith("6.0.14")


def test_app_user_is_not_root(host):
    user = host.user(USER)
    assert user.exists and user.uid != 0


def test_pm2_unit_enabled_and_active(host):
    svc = host.service(UNIT)
    assert svc.is_enabled
    assert svc.is_running


def test_api_online_with_configured_instances(host):
    procs = wait_online(host, APP + "-api", 2)
    assert {p["pm2_env"]["exec_mode"] for p in procs} == {"cluster_mode"}


def test_worker_online_in_fork_mode(host):
    procs = wait_online(host, APP + "-worker", 1)
    assert procs[0]["pm2_env"]["exec_mode"] == "fork_mode"


def test_env_file_mode_and_owner(host):
    env = host.file("/srv/shop/shared/app.env")
    assert env.exists
    assert env.mode == 0o600
    assert env.user == USER and env.group == USER
    assert "SESSION_SECRET=" in env.content_string


def test_health_answers_on_node_address(hostvars):
    url = "http://%s:3000/health" % hostvars["nodeops_node_address"]
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
        assert resp.status == 200
        assert body["status"] == "ok"
        assert resp.headers["X-App-Version"] == "1.0.0"


def test_restarting_the_pm2_unit_restores_processes(host, hostvars):
    before = {p["pm_id"]: p["pid"] for p in wait_online(host, APP + "-api", 2)}
    host.check_output("systemctl stop %s" % UNIT)
    assert not host.service(UNIT).is_running
    assert not [p for p in host.process.filter(user=USER) if "node" in p.comm]
    host.check_output("systemctl start %s" % UNIT)
    after = {p["pm_id"]: p["pid"] for p in wait_online(host, APP + "-api", 2)}
    assert set(after.values()).isdisjoint(before.values())
    wait_online(host, APP + "-worker", 1)
    url = "http://%s:3000/health" % hostvars["nodeops_node_address"]
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
