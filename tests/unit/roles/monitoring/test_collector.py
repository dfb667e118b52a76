"""roles/monitoring/files/nodeops_collector.py against real files in a temporary directory.

Real certificates (openssl), real log files appended, rotated and truncated the
way logrotate does, a stand-in ``pm2`` executable printing ``pm2 jlist`` JSON
(the collector reaches it through the collection's own PM2 reader, imported as
on the node), and the output checked with ``promtool check metrics`` where
promtool is installed.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils import pm2 as pm2_utils

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), *([os.pardir] * 4)))
SCRIPT = os.path.join(REPO, "roles", "monitoring", "files", "nodeops_collector.py")
PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def collector():
    # On the node the role installs plugins/module_utils/pm2.py beside the script as nodeops_pm2.py.
    sys.modules["nodeops_pm2"] = pm2_utils
    spec = importlib.util.spec_from_file_location("nodeops_collector", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dirs(tmp_path):
    text, state = tmp_path / "textfile", tmp_path / "state"
    text.mkdir()
    state.mkdir()
    return tmp_path, str(text), str(state)


def base_cfg(text, state, **sections):
    return dict(textfile_dir=text, state_dir=state, **sections)


def parse(path):
    """{(name, frozenset(labels)): value} of a .prom file (the subset of the format the collector writes)."""
    out = {}
    with open(path) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            series, value = line.rsplit(" ", 1)
            if "{" in series:
                name, labels = series[:-1].split("{", 1)
                pairs = frozenset(tuple(p.split("=", 1)) for p in labels.split('",') if p)
                pairs = frozenset((k, v.strip('"')) for k, v in pairs)
            else:
                name, pairs = series, frozenset()
            out[(name, pairs)] = float(value)
    return out


def value(metrics, name, **labels):
    return metrics[(name, frozenset(labels.items()))]


def check_metrics(path):
    assert PROMTOOL, "promtool is needed (make promtool puts it in .cache/bin)"
    with open(path) as handle:
        proc = subprocess.run([PROMTOOL, "check", "metrics"], stdin=handle, capture_output=True, text=True, check=False)
    # promtool lints naming too; anything it prints is a finding
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


# ---------------------------------------------------------------- backup

def test_backup_record_success(collector, dirs):
    tmp, text, state = dirs
    record = tmp / "last-run.json"
    record.write_text(json.dumps({"result": "success", "started_at": 1700000000, "finished_at": 1700000090, "verified": True,
                                  "backup": "2023-11-14T2213", "size_bytes": 12345, "error": None}))
    assert collector.run(base_cfg(text, state, backup={"record": str(record)})) == {"backup": None}
    m = parse(os.path.join(text, "nodeops_backup.prom"))
    assert value(m, "nodeops_backup_record_present") == 1
    assert value(m, "nodeops_backup_last_run_success") == 1
    assert value(m, "nodeops_backup_last_run_verified") == 1
    assert value(m, "nodeops_backup_last_run_finished_timestamp_seconds") == 1700000090
    assert value(m, "nodeops_backup_last_run_duration_seconds") == 90
    assert value(m, "nodeops_backup_last_run_size_bytes") == 12345
    assert value(m, "nodeops_backup_last_run_info", backup="2023-11-14T2213", result="success") == 1
    check_metrics(os.path.join(text, "nodeops_backup.prom"))


@pytest.mark.parametrize("record, success, verified", [
    ({"result": "failed", "started_at": 1, "finished_at": 2, "verified": False, "error": "boom"}, 0, 0),
    ({"result": "success", "started_at": 1, "finished_at": 2, "verified": False}, 1, 0),
    ({"result": "success", "started_at": 1, "finished_at": 2, "verified": "yes"}, 1, 0),  # only JSON true counts
])
def test_backup_record_failed_or_unverified(collector, dirs, record, success, verified):
    tmp, text, state = dirs
    path = tmp / "last-run.json"
    path.write_text(json.dumps(record))
    collector.run(base_cfg(text, state, backup={"record": str(path)}))
    m = parse(os.path.join(text, "nodeops_backup.prom"))
    assert value(m, "nodeops_backup_last_run_success") == success
    assert value(m, "nodeops_backup_last_run_verified") == verified


def test_backup_record_missing_and_invalid(collector, dirs):
    tmp, text, state = dirs
    path = tmp / "last-run.json"
    assert collector.run(base_cfg(text, state, backup={"record": str(path)})) == {"backup": None}
    m = parse(os.path.join(text, "nodeops_backup.prom"))
    assert value(m, "nodeops_backup_record_present") == 0
    assert ("nodeops_backup_last_run_finished_timestamp_seconds", frozenset()) not in m
    path.write_text("{half a record")
    result = collector.run(base_cfg(text, state, backup={"record": str(path)}))
    assert "not valid JSON" in result["backup"]
    m = parse(os.path.join(text, "nodeops_backup.prom"))
    assert value(m, "nodeops_backup_record_valid") == 0 and value(m, "nodeops_backup_last_run_success") == 0
    meta = parse(os.path.join(text, "nodeops_collector.prom"))
    assert value(meta, "nodeops_collector_success", section="backup") == 0


# ---------------------------------------------------------------- certificates

def make_cert(path, days):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(path) + ".key", "-out", str(path), "-days", str(days), "-subj", "/CN=test"],
                   check=True, capture_output=True)


def test_certificate_not_after(collector, dirs):
    tmp, text, state = dirs
    (tmp / "certs").mkdir()
    make_cert(tmp / "certs" / "a.crt", 10)
    make_cert(tmp / "certs" / "b.crt", 400)
    before = time.time()
    assert collector.run(base_cfg(text, state, certificates=[str(tmp / "certs" / "*.crt")])) == {"tls": None}
    m = parse(os.path.join(text, "nodeops_tls.prom"))
    for name, days in (("a.crt", 10), ("b.crt", 400)):
        not_after = value(m, "nodeops_tls_certificate_not_after_timestamp_seconds", path=str(tmp / "certs" / name))
        assert abs((not_after - before) / 86400.0 - days) < 0.01
    check_metrics(os.path.join(text, "nodeops_tls.prom"))


def test_certificate_missing_or_broken_is_a_section_error(collector, dirs):
    tmp, text, state = dirs
    make_cert(tmp / "good.crt", 30)
    (tmp / "bad.crt").write_text("not a certificate\n")
    result = collector.run(base_cfg(text, state, certificates=[str(tmp / "good.crt"), str(tmp / "bad.crt"), str(tmp / "none*.crt")]))
    assert "openssl cannot read" in result["tls"] and "no certificate matches" in result["tls"]
    m = parse(os.path.join(text, "nodeops_tls.prom"))
    assert ("nodeops_tls_certificate_not_after_timestamp_seconds", frozenset({("path", str(tmp / "good.crt"))})) in m
    assert len([k for k in m if k[0] == "nodeops_tls_certificate_not_after_timestamp_seconds"]) == 1


# ---------------------------------------------------------------- nginx access log

def log_line(status, request_time):
    return json.dumps({"time": "2026-01-01T00:00:00+00:00", "status": status, "request_time": request_time,
                       "method": "GET", "uri": "/"}) + "\n"


def nginx_cfg(text, state, log):
    return base_cfg(text, state, nginx={"access_logs": [str(log)], "buckets": [0.1, 0.5, 1]})


def test_nginx_log_counts_and_histogram(collector, dirs):
    tmp, text, state = dirs
    log = tmp / "access.log"
    log.write_text(log_line(200, 5.0) * 3)  # history before the first run is not counted
    assert collector.run(nginx_cfg(text, state, log)) == {"nginx": None}
    m = parse(os.path.join(text, "nodeops_nginx.prom"))
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="2xx") == 0
    with open(log, "a") as handle:
        handle.write(log_line(200, 0.05) + log_line(201, 0.3) + log_line(502, 0.7) + log_line(404, 2.0) + "garbage\n")
        handle.write(log_line(500, 0.01)[:20])  # unfinished line: waits for the next run
    collector.run(nginx_cfg(text, state, log))
    m = parse(os.path.join(text, "nodeops_nginx.prom"))
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="2xx") == 2
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="4xx") == 1
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="5xx") == 1
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="1xx") == 0
    assert value(m, "nodeops_nginx_log_lines_skipped_total", log=str(log)) == 1
    bucket = "nodeops_nginx_request_duration_seconds_bucket"
    assert [value(m, bucket, log=str(log), le=le) for le in ("0.1", "0.5", "1.0", "+Inf")] == [1, 2, 3, 4]
    assert value(m, "nodeops_nginx_request_duration_seconds_count", log=str(log)) == 4
    assert abs(value(m, "nodeops_nginx_request_duration_seconds_sum", log=str(log)) - 3.05) < 1e-9
    check_metrics(os.path.join(text, "nodeops_nginx.prom"))
    # the unfinished line completes
    with open(log, "a") as handle:
        handle.write(log_line(500, 0.01)[20:])
    collector.run(nginx_cfg(text, state, log))
    m = parse(os.path.join(text, "nodeops_nginx.prom"))
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="5xx") == 2


def test_nginx_log_rotation_and_truncation(collector, dirs):
    tmp, text, state = dirs
    log = tmp / "access.log"
    log.write_text("")
    collector.run(nginx_cfg(text, state, log))
    with open(log, "a") as handle:
        handle.write(log_line(200, 0.1))
    collector.run(nginx_cfg(text, state, log))
    # written after the last run, then rotated (rename + new file): both parts are counted
    with open(log, "a") as handle:
        handle.write(log_line(500, 0.1))
    os.rename(log, str(log) + ".1")
    log.write_text(log_line(200, 0.1) + log_line(200, 0.1))
    collector.run(nginx_cfg(text, state, log))
    m = parse(os.path.join(text, "nodeops_nginx.prom"))
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="2xx") == 3
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="5xx") == 1
    # copytruncate: same inode, smaller file
    with open(log, "w") as handle:
        handle.write(log_line(503, 0.1))
    collector.run(nginx_cfg(text, state, log))
    m = parse(os.path.join(text, "nodeops_nginx.prom"))
    assert value(m, "nodeops_nginx_http_requests_total", log=str(log), status_class="5xx") == 2


def test_missing_log_fails_the_section_only(collector, dirs):
    tmp, text, state = dirs
    record = tmp / "last-run.json"
    record.write_text(json.dumps({"result": "success", "finished_at": 5, "started_at": 1, "verified": True}))
    cfg = base_cfg(text, state, backup={"record": str(record)}, nginx={"access_logs": [str(tmp / "nope.log")], "buckets": [1]})
    result = collector.run(cfg)
    assert result["backup"] is None and "cannot read" in result["nginx"]
    meta = parse(os.path.join(text, "nodeops_collector.prom"))
    assert value(meta, "nodeops_collector_success", section="nginx") == 0
    assert value(meta, "nodeops_collector_success", section="backup") == 1
    assert abs(value(meta, "nodeops_collector_last_run_timestamp_seconds") - time.time()) < 60
    check_metrics(os.path.join(text, "nodeops_collector.prom"))


# ---------------------------------------------------------------- mongodb slow log

def test_mongodb_slow_queries(collector, dirs):
    tmp, text, state = dirs
    log = tmp / "mongod.log"
    log.write_text("")
    cfg = base_cfg(text, state, mongodb={"logs": [str(log)]})
    collector.run(cfg)
    slow = json.dumps({"t": {"$date": "2026-01-01T00:00:00Z"}, "s": "I", "c": "COMMAND", "id": 51803, "msg": "Slow query",
                       "attr": {"durationMillis": 250}}) + "\n"
    other = json.dumps({"s": "I", "c": "NETWORK", "msg": "Connection accepted"}) + "\n"
    with open(log, "a") as handle:
        handle.write(slow + other + slow + "not json\n")
    collector.run(cfg)
    m = parse(os.path.join(text, "nodeops_mongodb.prom"))
    assert value(m, "nodeops_mongodb_slow_queries_total") == 2
    check_metrics(os.path.join(text, "nodeops_mongodb.prom"))


# ---------------------------------------------------------------- pm2

def fake_pm2(tmp, procs):
    home = tmp / "pm2home"
    home.mkdir(exist_ok=True)
    binary = tmp / "pm2"
    (tmp / "jlist.json").write_text(json.dumps(procs))
    binary.write_text("#!/bin/sh\n[ \"$1\" = jlist ] && [ \"$PM2_HOME\" = '%s' ] && exec cat '%s'\nexit 3\n" % (home, tmp / "jlist.json"))
    binary.chmod(0o755)
    return str(binary), str(home)


def proc(name, pm_id, status="online", restarts=0, memory=1000):
    return {"name": name, "pm_id": pm_id, "pid": 100 + pm_id, "monit": {"memory": memory, "cpu": 1.5},
            "pm2_env": {"status": status, "restart_time": restarts, "pm_uptime": int(time.time() * 1000) - 5000,
                        "exec_mode": "cluster_mode", "instances": 2, "SECRET": "never-published"}}


def pm2_cfg(text, state, binary, home):
    import getpass
    return base_cfg(text, state, pm2={"user": getpass.getuser(), "home": home, "binary": binary, "timeout": 10,
                                      "apps": [{"name": "shop-api", "instances": 2}, {"name": "shop-worker", "instances": 1}]})


def test_pm2_instances(collector, dirs):
    tmp, text, state = dirs
    binary, home = fake_pm2(tmp, [proc("shop-api", 0, restarts=2, memory=50e6), proc("shop-api", 1, status="errored", restarts=5),
                                  proc("shop-worker", 2), proc("other", 3)])
    with open(os.path.join(home, "pm2.pid"), "w") as handle:
        handle.write(str(os.getpid()))
    assert collector.run(pm2_cfg(text, state, binary, home)) == {"pm2": None}
    path = os.path.join(text, "nodeops_pm2.prom")
    m = parse(path)
    assert value(m, "nodeops_pm2_up") == 1
    assert value(m, "nodeops_pm2_instances_expected", app="shop-api") == 2
    assert value(m, "nodeops_pm2_instances_online", app="shop-api") == 1
    assert value(m, "nodeops_pm2_instances_online", app="shop-worker") == 1
    # an app that is not configured (e.g. the pm2-logrotate module): no online/expected, the rest is published
    assert ("nodeops_pm2_instances_online", frozenset({("app", "other")})) not in m
    assert ("nodeops_pm2_instances_expected", frozenset({("app", "other")})) not in m
    assert value(m, "nodeops_pm2_memory_bytes", app="other", pm_id="3") == 1000
    assert value(m, "nodeops_pm2_restarts_total", app="shop-api") == 7
    assert value(m, "nodeops_pm2_memory_bytes", app="shop-api", pm_id="0") == 50e6
    with open(path) as handle:
        assert "never-published" not in handle.read()
    check_metrics(path)


def test_pm2_daemon_not_running_means_zero_online(collector, dirs):
    tmp, text, state = dirs
    binary, home = fake_pm2(tmp, [proc("shop-api", 0)])
    # no pm2.pid: the collector must not call pm2 (jlist would spawn a daemon)
    os.unlink(binary)
    result = collector.run(pm2_cfg(text, state, binary, home))
    assert "is not running" in result["pm2"]
    m = parse(os.path.join(text, "nodeops_pm2.prom"))
    assert value(m, "nodeops_pm2_up") == 0
    assert value(m, "nodeops_pm2_instances_online", app="shop-api") == 0
    assert value(m, "nodeops_pm2_instances_online", app="shop-worker") == 0
    assert value(m, "nodeops_pm2_instances_expected", app="shop-api") == 2


def test_disabled_section_file_is_removed_and_writes_are_atomic(collector, dirs):
    tmp, text, state = dirs
    record = tmp / "last-run.json"
    record.write_text(json.dumps({"result": "success", "finished_at": 5, "started_at": 1, "verified": True}))
    collector.run(base_cfg(text, state, backup={"record": str(record)}))
    assert os.path.exists(os.path.join(text, "nodeops_backup.prom"))
    collector.run(base_cfg(text, state))
    assert not os.path.exists(os.path.join(text, "nodeops_backup.prom"))
    assert sorted(os.listdir(text)) == ["nodeops_collector.prom"]  # no temporary files left behind


def test_main_exit_codes(collector, dirs, tmp_path):
    tmp, text, state = dirs
    cfg = tmp / "collector.json"
    cfg.write_text(json.dumps(base_cfg(text, state)))
    assert collector.main(["x", str(cfg)]) == 0
    assert collector.main(["x", str(tmp / "missing.json")]) == 2
    assert collector.main(["x"]) == 2
