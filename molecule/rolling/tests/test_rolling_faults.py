"""Fault injection on a rolling fleet (issue: proof), in the scenario rolling_faults after test_rolling.py's
step 7 (the AWX job, which leaves the fleet on v1's artifact).

Each case starts a deploy of v2 under load through the load balancer, injects one fault at a
precise point of the rollout, and checks:

- nothing is lost: 0 failed requests through the load balancer (nginx keeps serving, the faulty
  node is out of rotation or nginx passes the request to another server), no release left marked
  healthy that is not, no lock left that blocks the next run;
- after the fault is gone, re-running the same deploy converges: every node on the release, healthy,
  (a run that halted marked its release failed, whatever the cause: that is the role's contract, so
  the operator's re-run after fixing a partition or the load balancer says so with
  rolling_update_allow_failed_release=true),
  enabled on the load balancer, all PM2 processes online, the fleet serving one version.

Cases (each starts where the previous one ended, so no case needs a setup deploy):
8. v1 -> v2, kill -9 of the PM2 daemon on the canary right after its release switch (mid-reload; the
   deploy either recovers or halts and returns the canary, both checked)
9. v2 -> v1, a node's container stopped (SIGKILL to all its processes: a partition) once the canary is done
10. v1 -> v2, nginx reload failing on the load balancer (nginx.service masked) from the first drain on
"""

import json
import os
import signal
import subprocess
import time

import pytest

from scenario import PODMAN, podman_exec  # pylint: disable=import-error
from test_rolling import (APPS, LB, RELEASES_DIR, Load, artifact_args, assert_clean, assert_fleet_on,  # pylint: disable=import-error
                          lb_servers, lock_holder, log_path, release, results_record, run_playbook, start_playbook)

pytestmark = pytest.mark.skipif(not RELEASES_DIR.is_dir(), reason="needs the molecule scenario's converge (releases)")

CANARY = next(iter(APPS), None)
LAST = (list(APPS) or [None])[-1]
PM2_ONLINE_PY = (
    "import json, subprocess; "
    "out = subprocess.run(['/usr/sbin/runuser', '-u', 'shop', '--', '/usr/local/bin/pm2', 'jlist'], capture_output=True, text=True,"
    " env={'PM2_HOME': '/home/shop/.pm2', 'PATH': '/usr/local/bin:/usr/bin:/bin'}).stdout; "
    "procs = json.loads(out[out.index('['):]); "
    "print(json.dumps(sorted(p['name'] + ':' + p['pm2_env']['status'] for p in procs)))"
)


def current_release(container):
    return os.path.basename(podman_exec(container, "readlink /srv/shop/current", check=False).strip())


def deploy_with_fault(label, version, trigger, inject, timeout=900):
    """Start a deploy of ``version``; when ``trigger()`` holds, run ``inject()``; wait for the deploy to end.
    Returns (rc, output, injected)."""
    proc = start_playbook(label, "deploy.yml", *artifact_args(version))
    injected = False
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if not injected and trigger():
                inject()
                injected = True
            time.sleep(0.3)
        rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.log_file.close()
    return rc, log_path(label).read_text(), injected


def pm2_processes(container):
    out = subprocess.run([PODMAN, "exec", container, "python3", "-c", PM2_ONLINE_PY], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def pm2_unit_and_daemon(container):
    """(unit ActiveState, unit MainPID, God daemon pids): the daemon must be the one the unit runs."""
    out = podman_exec(container, "systemctl show -p ActiveState --value pm2-shop.service; systemctl show -p MainPID --value pm2-shop.service; "
                                 "pgrep -d, -f '^PM2 v[0-9.]+: God Daemon' || true", check=False)
    lines = out.strip().splitlines() + ["", "", ""]
    return lines[0], lines[1], lines[2]


def assert_converged_on(version):
    state = assert_fleet_on(version, release(version)["release_id"])
    for container in APPS:
        unit_state, main_pid, daemons = pm2_unit_and_daemon(container)
        # a PM2 daemon outside its unit serves until the unit gives up (found by case 8 before the role checked it)
        assert unit_state == "active" and main_pid == daemons, (container, unit_state, main_pid, daemons)
        procs = [p for p in pm2_processes(container) if p.startswith("shop-")]  # not PM2's own modules (pm2-logrotate)
        # node_api_instances 2 (cluster) + the worker
        assert procs == ["shop-api:online", "shop-api:online", "shop-worker:online"], (container, procs)
    return state


def rerun_and_converge(label, version, *extra):
    rc, out, secs = run_playbook(label, "deploy.yml", *artifact_args(version), *extra)
    assert rc == 0, out[-5000:]
    return secs


def test_8_pm2_daemon_killed_on_the_canary_mid_reload():
    """v1 -> v2; the canary's PM2 daemon is SIGKILLed right after its release switch."""
    v2 = release("2.0.0")
    with Load("fault8") as load:
        rc, out, injected = deploy_with_fault(
            "fault8-deploy", "2.0.0",
            trigger=lambda: current_release(CANARY) == v2["release_id"],
            inject=lambda: podman_exec(CANARY, "pkill -KILL -f 'PM2 v[0-9.]+: God Daemon'", check=False))
        assert injected, out[-3000:]
        # Two outcomes are correct, depending on where in the reload the daemon dies: PM2 comes back (under its
        # systemd unit: the role restarts it there when it came back outside) and the reload completes (rc 0),
        # or the reload fails (a pm2 CLI call errors or hangs), and the role returns the canary to v1, or leaves
        # it drained if it cannot, and halts with the release marked failed. Either way, one version, no loss.
        if rc != 0:
            assert "FAILED and was halted" in out, out[-3000:]
            v1_id = release("1.0.0")["release_id"]
            assert {current_release(c) for c in APPS} == {v1_id}, out[-3000:]
        rerun_s = rerun_and_converge("fault8-rerun", "2.0.0", *(() if rc == 0 else ("-e", "rolling_update_allow_failed_release=true")))
        load.stop()
    results_record("8_fault_pm2_killed", {"deploy_rc": rc, "rerun_s": rerun_s, "load": load.summary()})
    assert_clean(load, {"1.0.0", "2.0.0"})
    assert_converged_on("2.0.0")
    assert lock_holder() is None


def test_9_node_container_stopped_mid_rollout_then_back():
    """v2 -> v1; once the canary passed every gate, the last node's container is stopped (all its processes
    SIGKILLed: a partition); it comes back, and the same deploy is run again."""
    v1 = release("1.0.0")
    servers_after_fault = None

    def stop_last():
        subprocess.run(["podman", "stop", "-t", "0", LAST], capture_output=True, timeout=120, check=True)

    try:
        with Load("fault9") as load:
            rc, out, injected = deploy_with_fault(
                "fault9-deploy", "1.0.0",
                # the canary passed every gate: the rollout moves on to the rest of the fleet
                trigger=lambda: current_release(CANARY) == v1["release_id"] and lb_servers()[0].get(CANARY) == "enabled",
                inject=stop_last)
            assert injected, out[-3000:]
            assert rc != 0, "a deploy with an unreachable node must not report success: " + out[-3000:]
            servers_after_fault = lb_servers()[0]
            subprocess.run(["podman", "start", LAST], capture_output=True, timeout=120, check=True)
            wait_booted(LAST)
            rerun_s = rerun_and_converge("fault9-rerun", "1.0.0", "-e", "rolling_update_allow_failed_release=true")
            load.stop()
    finally:
        if subprocess.run(["podman", "container", "inspect", "-f", "{{.State.Running}}", LAST],
                          capture_output=True, text=True, check=False).stdout.strip() != "true":
            subprocess.run(["podman", "start", LAST], capture_output=True, timeout=120, check=False)
    results_record("9_fault_node_stopped", {"deploy_rc": rc, "lb_after_fault": servers_after_fault, "rerun_s": rerun_s,
                                            "load": load.summary()})
    assert "UNREACHABLE" in out or "unreachable" in out, out[-3000:]
    # nginx passed the requests meant for the stopped node to the others (a GET refused or reset is retried there)
    assert_clean(load, {"1.0.0", "2.0.0"})
    assert_converged_on("1.0.0")


def wait_booted(container, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run([PODMAN, "exec", container, "systemctl", "is-system-running"], capture_output=True, text=True,
                               check=False).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise AssertionError("%s did not finish booting" % container)


def test_10_nginx_reload_failing_on_the_load_balancer():
    """v1 -> v2 while every nginx reload on the load balancer fails (nginx.service masked): the files the drain
    validated are promoted, the reload is refused; the rollout stops before any node is switched."""
    v1 = release("1.0.0")
    try:
        with Load("fault10") as load:
            podman_exec(LB, "systemctl mask --runtime nginx.service")
            rc, out, _seconds = run_playbook("fault10-deploy", "deploy.yml", *artifact_args("2.0.0"))
            servers_after_fault = lb_servers()[0]
            versions_after_fault = {c: current_release(c) for c in APPS}
            podman_exec(LB, "systemctl unmask --runtime nginx.service")
            rerun_s = rerun_and_converge("fault10-rerun", "2.0.0", "-e", "rolling_update_allow_failed_release=true")
            load.stop()
    finally:
        podman_exec(LB, "systemctl unmask --runtime nginx.service", check=False)
    results_record("10_fault_nginx_reload", {"deploy_rc": rc, "lb_after_fault": servers_after_fault,
                                             "versions_after_fault": versions_after_fault, "rerun_s": rerun_s, "load": load.summary()})
    assert rc != 0, out[-3000:]
    assert "Reloading nginx.service failed" in out, out[-3000:]
    # no node was switched: the drain never took effect, so the rollout stopped before any switch
    assert set(versions_after_fault.values()) == {v1["release_id"]}, versions_after_fault
    # nginx kept serving with its running configuration the whole time
    assert_clean(load, {"1.0.0", "2.0.0"})
    assert_converged_on("2.0.0")
