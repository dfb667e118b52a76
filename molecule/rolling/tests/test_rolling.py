"""The rolling_update role end to end, under continuous load through the load balancer.

The tests run in file order, each starting from the state the previous one left. The scenario
``rolling`` runs steps 1-6; ``rolling_faults`` runs step 7 and then test_rolling_faults.py on a fleet
of its own (each scenario's molecule.yml selects its tests with ``-k``; the fleet's nodes and
addresses come from the scenario's inventory):

1. deploy v2 over v1 (bootstrap) with hooks; a second deploy started meanwhile is refused by the lock
2. deploy v3 (its /health answers 503): the canary's gate fails, it returns to v2, the rollout halts
3. deploy v4 (becomes ready, exits ~3 s later): caught by the gate window, rolled back
4. the rollback playbook returns the fleet to the rollback target (v1)
5. a deploy killed with SIGKILL mid-reload of the canary, then a run to the end: the deploy lock is taken
   over, the fleet ends consistent
6. a second identical deploy changes nothing; check mode changes nothing
7. the deploy as an AWX job: ansible-runner's Python API with survey-shaped extra vars (v1), twice

During every step the load generator (tests/support/loadgen) sends HTTPS requests through the
load balancer and records each one: 0 failed also means 0 client-side retries. In step 1 wrk
(an independent tool, keep-alive, no retries) runs as well. The playbooks run from here with the
scenario's inventory, exactly as an operator would run them. Measurements are written to
$ROLLING_RESULTS_DIR (default /tmp/nodeops-molecule-<scenario>/results.json).

These tests do not use testinfra's host fixtures (which would run each test once per host).
"""

import http.server
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import pytest

from loadgen import LoadGenerator, compute_report  # pylint: disable=import-error
import scenario  # pylint: disable=import-error
from scenario import EPHEMERAL, ROOT, playbook_cmd, playbook_env, podman_exec, recap  # pylint: disable=import-error

SCENARIO_NAME = os.environ.get("MOLECULE_SCENARIO_NAME", EPHEMERAL.name)
RESULTS_DIR = pathlib.Path(os.environ.get("ROLLING_RESULTS_DIR", "/tmp/nodeops-molecule-%s" % SCENARIO_NAME))
RELEASES_DIR = EPHEMERAL / "releases"


def scenario_fleet():
    """({app container: address}, load balancer container, its address) from the scenario's inventory."""
    if not RELEASES_DIR.is_dir():
        return {}, None, None
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-inventory"), "-i", scenario.INVENTORY, "--list"],
                          capture_output=True, text=True, env=playbook_env(), timeout=120, check=True)
    inventory = json.loads(proc.stdout)
    address = {host: hostvars["nodeops_node_address"] for host, hostvars in inventory["_meta"]["hostvars"].items()}
    lbs = inventory["lb"]["hosts"]
    assert len(lbs) == 1, lbs
    return {host: address[host] for host in sorted(inventory["app"]["hosts"])}, lbs[0], address[lbs[0]]


APPS, LB, LB_ADDRESS = scenario_fleet()
SERVER_NAME = "shop.lab.test"
LB_URL = "https://%s/" % LB_ADDRESS
LOCK_DIR = "/var/lib/nodeops/locks/shop.lock"
RELEASES = "/srv/shop/releases"
LOAD_RATE = 100
LOAD_CONCURRENCY = 4

pytestmark = pytest.mark.skipif(not RELEASES_DIR.is_dir(), reason="needs the molecule scenario's converge (releases)")


# ----------------------------------------------------------------------------- helpers

def results_record(step, data):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "results.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current[step] = data
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def release(version):
    for item in json.loads((RELEASES_DIR / "releases.json").read_text()):
        if item["version"] == version:
            return {"path": str(RELEASES_DIR / item["file"]), "sha256": item["sha256"],
                    "release_id": "%s-%s" % (version, item["sha256"][:8])}
    raise AssertionError("no release %s in %s" % (version, RELEASES_DIR))


def artifact_args(version):
    rel = release(version)
    return ["-e", "rolling_update_artifact=%s" % rel["path"], "-e", "rolling_update_artifact_sha256=%s" % rel["sha256"]]


def log_path(label):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / ("%s.log" % label)


def run_playbook(label, name, *extra):
    """Run a playbook to the end, its output kept under RESULTS_DIR; returns (rc, output, seconds)."""
    return scenario.run_playbook(name, *extra, log=log_path(label))


def start_playbook(label, name, *extra):
    out = open(log_path(label), "w")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(playbook_cmd(name, *extra), stdout=out, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                            env=playbook_env(), cwd=str(ROOT), start_new_session=True)
    proc.log_file = out
    return proc


def podman_py(container, code):
    proc = subprocess.run([scenario.PODMAN, "exec", container, "python3", "-c", code], capture_output=True, text=True,
                          env=playbook_env(), timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError("%s: python failed (%s): %s" % (container, proc.returncode, proc.stderr))
    return proc.stdout


FLEET_PY = """
import glob, json, os, urllib.request
manifests = {m.split('/')[-2]: json.load(open(m))['status'] for m in glob.glob('%s/*/.nodeops-release.json')}
version = json.loads(urllib.request.urlopen('http://%%s:3000/version', timeout=5).read().decode())['version']
print(json.dumps({'current': os.path.basename(os.readlink('/srv/shop/current')), 'statuses': manifests, 'version': version}))
""" % RELEASES


def fleet():
    """Per app node: the current release id, the manifests' statuses and the version the app answers."""
    return {container: json.loads(podman_py(container, FLEET_PY % address)) for container, address in APPS.items()}


def lb_servers():
    """Server states recorded on the load balancer, and whether the rendered upstream has any 'down' server."""
    spec = json.loads(podman_exec(LB, "cat /etc/nginx/nodeops/state/upstream-app.json"))
    conf = podman_exec(LB, "cat /etc/nginx/nodeops/upstream-app.conf")
    return {s["name"]: s["state"] for s in spec["servers"]}, " down;" in conf


def lock_holder():
    out = podman_exec(APPS_FIRST, "cat %s/owner.json 2>/dev/null || true" % LOCK_DIR)
    return json.loads(out) if out.strip() else None


APPS_FIRST = next(iter(APPS), None)


class Load:
    """The load generator (and optionally wrk) through the load balancer for the duration of a step.

    One LoadGenerator run is capped at 600 s, so the load runs in back-to-back segments of
    SEGMENT_S seconds (a watcher starts the next one the moment one ends) and the report
    covers the records of all of them.
    """

    SEGMENT_S = 300

    def __init__(self, label, wrk=False):
        self.label = label
        self.wrk = wrk
        self.segments = []
        self.wrk_proc = None
        self.report = None
        self.wrk_result = None
        self._stop = threading.Event()
        self._watcher = None
        self._cafile = None
        self.retried = []
        self.started_wall = time.time()

    def _segment(self):
        gen = LoadGenerator(LB_URL, concurrency=LOAD_CONCURRENCY, rate=LOAD_RATE, duration=self.SEGMENT_S, timeout=10,
                            cafile=self._cafile, sni=SERVER_NAME)
        gen.start()
        self.segments.append(gen)
        return gen

    def _watch(self):
        while not self._stop.is_set():
            if not self.segments[-1].running:
                self._segment()
            self._stop.wait(0.05)

    def __enter__(self):
        self.started_wall = time.time()
        cafile = EPHEMERAL / "lb-cert.pem"
        cafile.write_text(podman_exec(LB, "cat /etc/ssl/nodeops/%s.crt" % SERVER_NAME))
        self._cafile = str(cafile)
        self._segment()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        if self.wrk:
            # wrk without keep-alive: every request on a fresh TLS connection, ~25/s per connection.
            # With keep-alive, wrk counts the close of an IDLE connection as a read error even when it
            # had not sent anything, and Debian's nginx 1.22 closes idle client connections on every
            # reload (nginx >= 1.27.4 can defer that: keepalive_min_timeout). The load generator
            # covers keep-alive; wrk proves that no request is lost.
            script = EPHEMERAL / "wrk-pace.lua"
            script.write_text("function delay()\n  return 40\nend\n")
            self.wrk_proc = subprocess.Popen(  # pylint: disable=consider-using-with
                ["wrk", "-t1", "-c2", "-d1800s", "--timeout", "10s", "--latency", "-s", str(script),
                 "-H", "Host: %s" % SERVER_NAME, "-H", "Connection: close", LB_URL],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        time.sleep(3)
        return self

    def stop(self):
        if self.report is None and self.segments:
            time.sleep(2)
            self._stop.set()
            self._watcher.join()
            stopped_by = "stop" if self.segments[-1].running else "duration"
            for gen in self.segments:
                gen.stop()
            records = [r for gen in self.segments for r in gen.records]
            self.retried = [r for r in records if r.retried]
            self.report = compute_report(records)
            self.report["stopped_by"] = stopped_by
            self.report["segments"] = len(self.segments)
        if self.wrk_proc is not None and self.wrk_result is None:
            self.wrk_proc.send_signal(signal.SIGINT)
            try:
                out = self.wrk_proc.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                os.killpg(self.wrk_proc.pid, signal.SIGKILL)
                out = self.wrk_proc.communicate()[0]
            self.wrk_result = parse_wrk(out)
        return self.report

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self._stop.set()
            for gen in self.segments:
                if gen.running:
                    gen.stop()
            if self.wrk_proc is not None and self.wrk_proc.poll() is None:
                os.killpg(self.wrk_proc.pid, signal.SIGKILL)
                self.wrk_proc.wait()

    @property
    def reloads(self):
        return lb_reload_times(self.started_wall)

    def summary(self):
        r = self.report
        data = {"total": r["total"], "ok": r["ok"], "failed": r["failed"], "failed_by_kind": r["failed_by_kind"],
                "retries": r["retries"], "versions": r["versions"], "status_counts": r["status_counts"],
                "latency_ms": {"p50": r["latency_ms"]["p50"], "p99": r["latency_ms"]["p99"]}, "stopped_by": r["stopped_by"],
                "segments": r["segments"], "failure_samples": r["failure_samples"][:3],
                "stale_reconnects": r["stale_reconnects"], "lb_reloads": len(self.reloads),
                "retry_errors": sorted({r.retry_error for r in self.retried})}
        if self.wrk_result is not None:
            data["wrk"] = self.wrk_result
        return data


def parse_wrk(out):
    result = {"raw_tail": out.strip().splitlines()[-12:]}
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx_3xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return result


def lb_reload_times(since):
    """Wall-clock times of the nginx reloads on the load balancer since ``since`` (from its journal)."""
    out = podman_exec(LB, "journalctl -u nginx -o short-unix --no-pager --since=@%d" % int(since), check=False)
    return [float(line.split()[0]) for line in out.splitlines() if "Reloading nginx" in line]


def assert_clean(load, allowed_versions):
    """0 failed requests, only the allowed versions served, and no client-side retry that a backend change caused.

    Backend reloads never cost a retry: nginx absorbs them (a retry there fails the test). nginx's
    own reload, which draining a node needs, closes the idle keep-alive client connections of its
    old workers (Debian's nginx 1.22; nginx >= 1.27.4 can defer it with keepalive_min_timeout).
    The load generator checks an idle connection before reusing it, as pooled HTTP clients do, so
    such a close costs a reconnect (stale_reconnects), not a request; only a request sent in the
    same instant as that close needs a retry. So a retry is allowed only within 2 s after an nginx
    reload, at most one per client connection per reload. wrk (no retries, a fresh connection per
    request) must see no error at all.
    """
    report = load.report
    assert report["stopped_by"] == "stop", report["stopped_by"]
    assert report["total"] >= 300, report["total"]
    assert report["failed"] == 0, (report["failed_by_kind"], report["failure_samples"][:3])
    assert set(report["versions"]) <= set(allowed_versions), report["versions"]
    reloads = load.reloads
    unexplained = [r for r in load.retried if not any(t - 0.5 <= r.wall <= t + 2.0 for t in reloads)]
    assert not unexplained, [(r.wall, r.retry_error) for r in unexplained[:5]]
    assert len(load.retried) <= LOAD_CONCURRENCY * len(reloads), (len(load.retried), len(reloads))
    if load.wrk_result is not None:
        assert load.wrk_result["requests"], load.wrk_result
        assert load.wrk_result["non_2xx_3xx"] == 0, load.wrk_result
        assert load.wrk_result["socket_errors"] == 0, load.wrk_result


def assert_fleet_on(version, release_id):
    state = fleet()
    for container, node in state.items():
        assert node["current"] == release_id, (container, node)
        assert node["version"] == version, (container, node)
        assert node["statuses"][release_id] == "healthy", (container, node)
    servers, any_down = lb_servers()
    assert set(servers.values()) == {"enabled"}, servers
    assert not any_down
    assert lock_holder() is None, lock_holder()
    return state


# ----------------------------------------------------------------------------- the steps

def test_1_deploy_v2_under_load_and_a_concurrent_deploy_is_refused():
    v2 = release("2.0.0")
    with Load("step1", wrk=True) as load:
        hook = str(ROOT / "molecule" / "rolling" / "hooks" / "record.yml")
        hooks = {"rolling_update_hooks": {"backup": [hook], "migrate": [hook], "after_gate": [hook]}}
        first = start_playbook("step1-deploy", "deploy.yml", *artifact_args("2.0.0"), "-e", json.dumps(hooks))
        try:
            deadline = time.monotonic() + 300
            while lock_holder() is None and first.poll() is None and time.monotonic() < deadline:
                time.sleep(1)
            assert lock_holder() is not None, "the first deploy never took the lock"
            rc2, out2, secs2 = run_playbook("step1-concurrent", "deploy.yml", *artifact_args("2.0.0"))
            rc1 = first.wait(timeout=1800)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
            first.log_file.close()
        load.stop()
    out1 = log_path("step1-deploy").read_text()
    results_record("1_deploy_v2", {"deploy_rc": rc1, "concurrent_rc": rc2, "concurrent_s": secs2, "load": load.summary(),
                                   "report": re.findall(r"rolling_update deploy \w+ - run \S+ in [\d.]+ s", out1)})
    assert rc2 != 0 and "another deploy holds the lock" in out2, out2[-3000:]
    assert rc1 == 0, out1[-5000:]
    assert_clean(load, {"1.0.0", "2.0.0"})
    state = assert_fleet_on("2.0.0", v2["release_id"])
    assert all(node["statuses"]["1.0.0"] == "healthy" for node in state.values())  # adopted bootstrap release
    # hooks: backup and migrate once (on the first node, migrate with the unpacked new release), after_gate on every node
    for container in APPS:
        ran = [line.split()[:3] for line in podman_exec(container, "cat /var/tmp/rolling-hooks.log").splitlines()]
        path = "path=%s/%s" % (RELEASES, v2["release_id"])
        expected = [["after_gate", "release=" + v2["release_id"], path]]
        if container == APPS_FIRST:
            expected = [["backup", "release=" + v2["release_id"], path], ["migrate", "release=" + v2["release_id"], path]] + expected
        assert ran == expected, (container, ran)


@pytest.mark.parametrize("version, label", [("3.0.0-bad", "2_unhealthy_v3"), ("4.0.0-crash", "3_crashing_v4")])
def test_2_3_bad_release_is_caught_on_the_canary_and_rolled_back(version, label):
    v2 = release("2.0.0")
    bad = release(version)
    with Load(label) as load:
        rc, out, secs = run_playbook(label, "deploy.yml", *artifact_args(version))
        load.stop()
    results_record(label, {"deploy_rc": rc, "deploy_s": secs, "load": load.summary(),
                           "why": re.findall(r"why: (.{0,300})", out)[:2]})
    assert rc != 0, out[-3000:]
    assert "FAILED and was halted" in out
    assert_clean(load, {"2.0.0"})
    state = assert_fleet_on("2.0.0", v2["release_id"])
    for container, node in state.items():
        assert node["statuses"][bad["release_id"]] == "failed", (container, node)
    history = podman_exec(APPS_FIRST, "cat /srv/shop/deploy-history.jsonl")
    assert '"event": "deployed_failed"' in history and bad["release_id"] in history


def test_4_rollback_playbook_returns_to_v1():
    v1_id = "1.0.0"
    v2 = release("2.0.0")
    with Load("step4") as load:
        rc, out, secs = run_playbook("step4-rollback", "rollback.yml")
        load.stop()
    results_record("4_rollback_to_v1", {"rollback_rc": rc, "rollback_s": secs, "load": load.summary()})
    assert rc == 0, out[-5000:]
    assert_clean(load, {"1.0.0", "2.0.0"})
    state = assert_fleet_on("1.0.0", v1_id)
    for container, node in state.items():
        assert node["statuses"][v2["release_id"]] == "rolled_back", (container, node)


LB_LOCK = "/run/nodeops-nginx-tls.lock"


def kill_deploy_when(label, condition, timeout=900):
    """Start a deploy of v2, SIGKILL its ansible-playbook the moment ``condition()`` holds; let the orphans end."""
    proc = start_playbook(label, "deploy.yml", *artifact_args("2.0.0"))
    killed = False
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if condition():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.3)
        proc.wait(timeout=60)
    finally:
        proc.log_file.close()
    assert killed, "the kill point was never reached: " + log_path(label).read_text()[-3000:]
    # The orphaned workers finish their task and exit; whatever is left of that run is ended here.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, check=False).returncode == 0:
        time.sleep(1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    holder = lock_holder()
    assert holder is not None and holder["controller"].split(":")[1] == str(proc.pid), holder
    return proc.pid


def test_5_killed_deploy_then_rerun():
    """SIGKILL to ansible-playbook mid-reload of the canary (drained on the load balancer, switched, its processes
    reloading, the deploy lock held), then the same deploy again: it takes the dead run's lock over and completes.

    (A kill mid-drain used to be a case of its own: the drain held the load balancer's lock for a dozen tasks.
    It is now one nodeops.stack.nginx_config call of about a second, which releases that lock itself even when
    the controller dies; breaking a lock left by a dead run is tested in test_nginx_config.py.)"""
    v2 = release("2.0.0")
    canary = APPS_FIRST
    left = {}
    with Load("step5") as load:
        def canary_switched():
            return os.path.basename(podman_exec(canary, "readlink /srv/shop/current").strip()) == v2["release_id"]
        kill_deploy_when("step5-killed-mid-reload", lambda: canary_switched() and time.sleep(2) is None)
        left["mid_reload"] = {"lb": lb_servers()[0], "canary_current": os.path.basename(podman_exec(canary, "readlink /srv/shop/current").strip())}
        rc, out, secs = run_playbook("step5-rerun", "deploy.yml", *artifact_args("2.0.0"))
        load.stop()
    results_record("5_killed_then_rerun", {"left_by_killed_run": left, "rerun_rc": rc, "rerun_s": secs, "load": load.summary(),
                                           "lock": re.findall(r"took over the deploy lock[^\n]*\n?[^\n]*", out)[:1]})
    assert left["mid_reload"]["canary_current"] == v2["release_id"], left
    assert rc == 0, out[-5000:]
    assert "took over the deploy lock" in out and "no longer exists" in out
    assert_clean(load, {"1.0.0", "2.0.0"})
    assert_fleet_on("2.0.0", v2["release_id"])
    assert podman_exec(LB, "test -e %s && echo held || echo free" % LB_LOCK).strip() == "free"


class Webhook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Webhook.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


def test_6_second_identical_deploy_changes_nothing_and_check_mode_changes_nothing():
    before = fleet()
    server = http.server.HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret_url = "http://127.0.0.1:%d/hooks/s3cr3t-token-42" % server.server_address[1]
    with Load("step6") as load:
        try:
            rc, out, secs = run_playbook("step6-noop", "deploy.yml", *artifact_args("2.0.0"), "-e", "rolling_update_notify_url=" + secret_url)
        finally:
            server.shutdown()
        rc_check, out_check, secs_check = run_playbook("step6-check", "deploy.yml", "--check", *artifact_args("4.0.0-crash"),
                                                       "-e", "rolling_update_allow_failed_release=true")
        load.stop()
    counters = recap(out)
    results_record("6_noop_and_check", {"noop_rc": rc, "noop_s": secs, "recap": counters, "check_rc": rc_check, "check_s": secs_check,
                                        "load": load.summary()})
    assert rc == 0, out[-5000:]
    assert counters and all(c["changed"] == 0 and c["failed"] == 0 for c in counters.values()), counters
    # the webhook got the report; its secret URL is nowhere in the output
    assert [(path, body["result"], body["mode"]) for path, body in Webhook.received] == [("/hooks/s3cr3t-token-42", "success", "deploy")]
    assert sorted(row["node"] for row in Webhook.received[0][1]["rows"]) == sorted(APPS)
    assert "s3cr3t-token-42" not in out
    assert rc_check == 0, out_check[-5000:]
    assert "CHECK MODE" in out_check and "would" in out_check
    assert fleet() == before
    assert_clean(load, {"2.0.0"})
    assert lock_holder() is None


def test_7_deploy_as_an_awx_job_through_ansible_runner():
    """The deploy job template as AWX runs it (tests/integration/awx/test_runner_deploy.py) on this fleet:
    ansible-runner's Python API, survey-shaped extra vars; v1's artifact (a real change from the bootstrap release of
    rolling_faults' fresh fleet), then again (changed=0)."""
    v1 = release("1.0.0")
    env = dict(playbook_env(), NODEOPS_RUNNER_INVENTORY=str(EPHEMERAL / "inventory"), NODEOPS_RUNNER_ARTIFACT=v1["path"],
               NODEOPS_RUNNER_ARTIFACT_SHA256=v1["sha256"])
    with Load("step7") as load:
        proc = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "integration" / "awx" / "test_runner_deploy.py")],
                              capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=1800, check=False)
        load.stop()
    log_path("step7-awx-runner").write_text(proc.stdout + proc.stderr)
    results_record("7_awx_runner", {"rc": proc.returncode, "summary": proc.stdout.strip().splitlines()[-1:], "load": load.summary()})
    assert proc.returncode == 0 and re.search(r"\b4 passed\b", proc.stdout) and "skipped" not in proc.stdout, proc.stdout[-5000:]
    assert_clean(load, {"1.0.0", "2.0.0"})
    state = fleet()
    assert {node["version"] for node in state.values()} == {"1.0.0"}, state
