"""The monitoring role on real lab nodes, checked through the real Prometheus it runs.

Every figure is read back from Prometheus' HTTP API (from the controller, which
shares the nodes' network namespace) and compared with what the nodes really
have: /proc/meminfo, the CPU count, ``pm2 jlist``, the certificate nginx
serves, the backup record, requests made through nginx. Tests run in file
order; the last one stops the API, waits for the AppDown alert to fire and
starts it again.
"""

import json
import os
import re
import subprocess
import time

import pytest
import requests
import testinfra

# The lab certificate is self-signed; its contents are checked with openssl instead.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

APP_NAME, LB_NAME = "nodeops-mol-monitoring-app", "nodeops-mol-monitoring-lb"
APP, LB = "127.0.1.161", "127.0.1.162"
PROMETHEUS = "http://%s:9090" % LB
CERT = "/etc/ssl/nodeops/monitoring.lab.test.crt"
PM2 = "runuser -u shop -- env PM2_HOME=/home/shop/.pm2 /usr/local/bin/pm2"
RULES = {"TargetDown", "AppDown", "AppDegraded", "HighErrorRate", "CertificateExpiresSoon", "CertificateExpiring",
         "BackupFailed", "BackupMissing", "DiskAlmostFull", "HighCpu", "HighMemory", "SlowResponses", "SlowQueries",
         "CollectorFailing", "CollectorStale", "RequestRateSpike"}

SCENARIO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIR = os.path.dirname(os.path.dirname(SCENARIO_DIR))
RULES_FILE = "/etc/prometheus/rules/nodeops.rules.yml"

testinfra_hosts = [LB_NAME]


@pytest.fixture(scope="module")
def app():
    return testinfra.get_host("podman://" + APP_NAME)


def query(expr):
    reply = requests.get(PROMETHEUS + "/api/v1/query", params={"query": expr}, timeout=10)
    reply.raise_for_status()
    return reply.json()["data"]["result"]


def scalar(expr):
    result = query(expr)
    assert len(result) == 1, "%s: expected one series, got %s" % (expr, result)
    return float(result[0]["value"][1])


def wait_for(check, what, timeout=90, interval=2):
    """Poll ``check`` (returns a truthy value when satisfied) until it holds or the deadline passes."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, requests.RequestException) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail("timed out after %ss waiting for %s; last: %r" % (timeout, what, last))


def run_playbook(*args, timeout=900):
    """The role alone (playbooks/monitoring.yml) against the scenario's inventory; returns (rc, output)."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(PROJECT_DIR, ".cache", "collections"))
    proc = subprocess.run(["ansible-playbook", "-i", inventory, os.path.join(SCENARIO_DIR, "playbooks", "monitoring.yml")] + list(args),
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT_DIR, check=False)
    return proc.returncode, proc.stdout + "\n" + proc.stderr


def recap(output, host):
    m = re.search(r"^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % re.escape(host), output, re.M)
    assert m, "no recap for %s in:\n%s" % (host, output[-3000:])
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


def https(path):
    return requests.get("https://%s%s" % (LB, path), headers={"Host": "monitoring.lab.test"}, verify=False, timeout=30)


# ---------------------------------------------------------------- exporters and Prometheus

def test_listeners_bound_to_node_addresses_only(host):
    listeners = host.check_output("ss -Htln")
    local = set(line.split()[3] for line in listeners.splitlines())
    for expected in ("%s:9100" % APP, "%s:9100" % LB, "%s:9090" % LB):
        assert expected in local, listeners
    for port in ("9100", "9090"):
        for wildcard in ("0.0.0.0", "*", "[::]"):
            assert "%s:%s" % (wildcard, port) not in local, listeners


def test_every_target_is_up():
    def all_up():
        targets = requests.get(PROMETHEUS + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        found = sorted((t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets)
        assert found == [("node", APP_NAME, "up"), ("node", LB_NAME, "up"), ("prometheus", LB_NAME, "up")], found
        return found
    wait_for(all_up, "all scrape targets up")


def test_alert_rules_loaded_and_healthy():
    groups = requests.get(PROMETHEUS + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert sorted(g["name"] for g in groups) == ["nodeops-critical", "nodeops-info", "nodeops-warning"]
    assert set(r["name"] for r in rules) == RULES
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert {r["name"]: r["labels"]["severity"] for r in rules}["AppDown"] == "critical"


# ---------------------------------------------------------------- node metrics

@pytest.mark.parametrize("name", [APP_NAME, LB_NAME])
def test_node_memory_matches_proc_meminfo(name):
    node = testinfra.get_host("podman://" + name)
    meminfo = dict(line.split(":", 1) for line in node.file("/proc/meminfo").content_string.splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    assert scalar('node_memory_MemTotal_bytes{instance="%s"}' % name) == total
    available = scalar('node_memory_MemAvailable_bytes{instance="%s"}' % name)
    assert 0 < available < total


@pytest.mark.parametrize("name", [APP_NAME, LB_NAME])
def test_node_cpu_count_and_busy_share(name):
    node = testinfra.get_host("podman://" + name)
    cpus = int(node.check_output("nproc --all"))
    assert scalar('count(node_cpu_seconds_total{instance="%s",mode="idle"})' % name) == cpus
    busy = wait_for(lambda: query('100 * (1 - avg(rate(node_cpu_seconds_total{instance="%s",mode="idle"}[30s])))' % name),
                    "a CPU rate (two scrapes)")
    assert 0 <= float(busy[0]["value"][1]) <= 100


# ---------------------------------------------------------------- application metrics (textfile collector)

def test_pm2_instances_match_the_configured_count(app):
    procs = json.loads(app.check_output(PM2 + " jlist"))
    online = {}
    for p in procs:
        # pm2-logrotate (a PM2 module) runs there too; only the configured apps have an expected count
        if p["pm2_env"]["status"] == "online" and p["name"].startswith("shop-"):
            online[p["name"]] = online.get(p["name"], 0) + 1
    assert online == {"shop-api": 2, "shop-worker": 1}, online

    def matches():
        got = {r["metric"]["app"]: int(float(r["value"][1]))
               for r in query('nodeops_pm2_instances_online{instance="%s",app=~"shop-.*"}' % APP_NAME)}
        assert got == online, got
        return got
    wait_for(matches, "PM2 online instances in Prometheus")
    expected = {r["metric"]["app"]: int(float(r["value"][1])) for r in query("nodeops_pm2_instances_expected")}
    assert expected == {"shop-api": 2, "shop-worker": 1}
    assert scalar('nodeops_pm2_up{instance="%s"}' % APP_NAME) == 1
    memory = query('nodeops_pm2_memory_bytes{instance="%s",app=~"shop-.*"}' % APP_NAME)
    assert len(memory) == 3
    assert all(10e6 < float(m["value"][1]) < 1e9 for m in memory), memory


def test_certificate_days_left_match_the_served_certificate(host):
    end = host.check_output("openssl x509 -noout -enddate -in %s" % CERT).split("=", 1)[1]
    not_after = int(host.check_output("date -u -d '%s' +%%s" % end))
    assert scalar('nodeops_tls_certificate_not_after_timestamp_seconds{path="%s"}' % CERT) == not_after
    days = scalar('(nodeops_tls_certificate_not_after_timestamp_seconds{path="%s"} - time()) / 86400' % CERT)
    assert abs(days - (not_after - time.time()) / 86400.0) < 0.001
    assert 360 < days <= 365  # nginx_tls' self-signed default lifetime


def test_backup_age_from_the_backup_record(host):
    record = json.loads(host.file("/var/lib/nodeops/backup/last-run.json").content_string)
    age = scalar('time() - nodeops_backup_last_run_finished_timestamp_seconds{instance="%s"}' % LB_NAME)
    assert abs(age - (time.time() - record["finished_at"])) < 30
    assert 3500 < age < 7200
    assert scalar("nodeops_backup_last_run_success") == 1
    assert scalar("nodeops_backup_last_run_verified") == 1
    assert not query('ALERTS{alertname=~"BackupMissing|BackupFailed"}')


def test_nginx_requests_status_classes_and_latency():
    def counts():
        by_class = {r["metric"]["status_class"]: float(r["value"][1])
                    for r in query('sum by (status_class) (nodeops_nginx_http_requests_total{instance="%s"})' % LB_NAME)}
        slow = scalar('sum(nodeops_nginx_request_duration_seconds_count{instance="%s"})'
                      ' - sum(nodeops_nginx_request_duration_seconds_bucket{instance="%s",le="0.5"})' % (LB_NAME, LB_NAME))
        return by_class, slow
    before, slow_before = wait_for(counts, "nginx figures")
    assert set(before) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    statuses = [https(path).status_code for path in ["/health"] * 20 + ["/no-such-page"] * 3 + ["/slow?ms=700"] * 2]
    assert statuses == [200] * 20 + [404] * 3 + [200] * 2, statuses

    def grew():
        after, slow_after = counts()
        assert after["2xx"] - before["2xx"] == 22, (before, after)
        assert after["4xx"] - before["4xx"] == 3, (before, after)
        assert after["5xx"] == before["5xx"], (before, after)
        assert slow_after - slow_before == 2, (slow_before, slow_after)
        return True
    wait_for(grew, "the requests in Prometheus")


def test_collector_runs_cleanly_on_every_node(app, host):
    for node, sections in ((app, {"pm2"}), (host, {"backup", "tls", "nginx"})):
        assert node.service("nodeops-collector.timer").is_enabled
        assert node.service("nodeops-collector.timer").is_running
        files = set(node.check_output("ls -A /var/lib/prometheus/node-exporter").split())
        assert files == {"nodeops_collector.prom"} | set("nodeops_%s.prom" % s for s in sections), files
    for result in query("nodeops_collector_success"):
        assert result["value"][1] == "1", result
    assert len(query("nodeops_collector_success")) == 4
    assert scalar('max(time() - nodeops_collector_last_run_timestamp_seconds)') < 60
    assert scalar("sum(node_textfile_scrape_error)") == 0


# ---------------------------------------------------------------- check mode and refused inputs

def test_check_mode_on_the_converged_nodes_changes_nothing():
    rc, out = run_playbook("--check", "--diff")
    assert rc == 0, out[-4000:]
    for name in (APP_NAME, LB_NAME):
        assert recap(out, name)["changed"] == 0, out[-4000:]


def test_listening_on_every_address_is_refused(app):
    before = app.check_output("cat /etc/default/prometheus-node-exporter")
    rc, out = run_playbook("--limit", APP_NAME, "-e", "monitoring_listen_address=0.0.0.0")
    assert rc != 0
    assert "monitoring_listen_address must be one address of this node" in out and "Got address '0.0.0.0'" in out, out[-3000:]
    assert app.check_output("cat /etc/default/prometheus-node-exporter") == before


def test_a_rule_promtool_rejects_never_goes_live(host):
    """A broken window renders invalid PromQL: promtool refuses it, the live rules and Prometheus stay as they were."""
    before = host.check_output("sha256sum %s" % RULES_FILE)
    rc, out = run_playbook("--limit", LB_NAME, "-e", "monitoring_alert_cpu_window='5 minutes'")
    assert rc != 0
    assert "failed to validate" in out and "Render the alert rules" in out, out[-3000:]
    assert host.check_output("sha256sum %s" % RULES_FILE) == before
    assert host.check_output("ls -A %s" % os.path.dirname(RULES_FILE)) == os.path.basename(RULES_FILE)
    rules = requests.get(PROMETHEUS + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert set(r["name"] for g in rules for r in g["rules"]) == RULES


# ---------------------------------------------------------------- an alert, end to end

def test_app_down_alert_fires_and_resolves(app):
    """Stopping the API makes nginx answer 5xx and AppDown fire; starting it again resolves it."""
    firing = 'ALERTS{alertname="AppDown",alertstate="firing",app="shop-api"}'
    errors_before = scalar('sum(nodeops_nginx_http_requests_total{status_class="5xx"})')
    app.check_output(PM2 + " stop shop-api")
    try:
        statuses = [https("/health").status_code for _request in range(5)]
        assert all(status in (502, 503, 504) for status in statuses), statuses
        alert = wait_for(lambda: query(firing), "AppDown to fire")
        labels = alert[0]["metric"]
        assert labels["severity"] == "critical" and labels["instance"] == APP_NAME
        wait_for(lambda: scalar('sum(nodeops_nginx_http_requests_total{status_class="5xx"})') - errors_before >= 5,
                 "the 5xx responses in Prometheus")
    finally:
        app.check_output(PM2 + " start shop-api")
    wait_for(lambda: scalar('nodeops_pm2_instances_online{app="shop-api"}') == 2, "shop-api online again")
    wait_for(lambda: not query(firing), "AppDown to resolve")
