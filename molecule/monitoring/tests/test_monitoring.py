"""The monitoring role on real lab nodes, checked through the real Prometheus it runs.

Every figure is read back from Prometheus' HTTP API (from the controller, which
shares the nodes' network namespace) and compared with what the nodes really
have: /proc/meminfo, the CPU count, ``pm2 jlist``, the certificate nginx
serves, the record of a real backup run, requests made through nginx (its
access log and its stub_status). Tests run in file order (no test uses
testinfra's parametrized ``host`` fixture, which would reorder them); the
backup test takes the scenario's first backup, the last one stops the API,
waits for the AppDown alert to fire and starts it again.
"""

import concurrent.futures
import datetime
import http.client
import json
import os
import re
import ssl
import subprocess
import time

import pymongo
import pytest
import requests
import testinfra
from cryptography import x509

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
BACKUP_RECORD = "/var/lib/nodeops/backup/last-run.json"
MONGO_URI = "mongodb://%s:27017/?directConnection=true" % LB


@pytest.fixture(scope="module")
def app():
    return testinfra.get_host("podman://" + APP_NAME)


@pytest.fixture(scope="module")
def lb():
    return testinfra.get_host("podman://" + LB_NAME)


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


class RoleRuns:
    """The role's own playbook run three ways at once, in the background, while the Prometheus tests wait on scrapes.

    None of them changes a node (check mode; input refused before any change; a rule promtool rejects), so
    they may overlap each other and the tests before the AppDown one, which waits for them (fixture order).
    """

    RUNS = {
        "check": ("--check", "--diff"),
        "listen_everywhere": ("--limit", APP_NAME, "-e", "monitoring_listen_address=0.0.0.0"),
        "broken_rule": ("--limit", LB_NAME, "-e", "monitoring_alert_cpu_window='5 minutes'"),
    }

    def __init__(self, app_node, lb_node):
        self.before = {"exporter_args": app_node.check_output("cat /etc/default/prometheus-node-exporter"),
                       "rules_sha": lb_node.check_output("sha256sum %s" % RULES_FILE)}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.RUNS))
        self.futures = {name: self.pool.submit(run_playbook, *args) for name, args in self.RUNS.items()}

    def result(self, name):
        return self.futures[name].result(timeout=900)

    def wait(self):
        concurrent.futures.wait(list(self.futures.values()), timeout=900)
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def role_runs(app, lb):
    runs = RoleRuns(app, lb)
    yield runs
    runs.wait()


def firing(alert, **labels):
    selector = ",".join('%s="%s"' % item for item in sorted(dict(labels, alertname=alert, alertstate="firing").items()))
    return query("ALERTS{%s}" % selector)


# ---------------------------------------------------------------- exporters and Prometheus

def test_listeners_bound_to_node_addresses_only(lb, role_runs):  # role_runs: start the background runs now
    listeners = lb.check_output("ss -Htln")  # host network: every node's listeners
    local = set(line.split()[3] for line in listeners.splitlines())
    for expected in ("%s:9100" % APP, "%s:9100" % LB, "%s:9090" % LB, "%s:9113" % LB, "%s:8080" % LB):
        assert expected in local, listeners
    for port in ("9100", "9090", "9113", "8080"):
        for wildcard in ("0.0.0.0", "*", "[::]"):
            assert "%s:%s" % (wildcard, port) not in local, listeners


def test_every_target_is_up():
    def all_up():
        targets = requests.get(PROMETHEUS + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        found = sorted((t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets)
        assert found == [("nginx", LB_NAME, "up"), ("node", APP_NAME, "up"), ("node", LB_NAME, "up"),
                         ("prometheus", LB_NAME, "up")], found
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


def test_certificate_days_left_match_the_served_certificate(lb):
    """notAfter of the certificate nginx serves on 443 (parsed with cryptography) equals the published one."""
    served = ssl.get_server_certificate((LB, 443))  # the handshake sends SNI = the address: nginx's only server
    not_after = int(x509.load_pem_x509_certificate(served.encode()).not_valid_after_utc.timestamp())
    on_disk = x509.load_pem_x509_certificate(lb.file(CERT).content)
    assert int(on_disk.not_valid_after_utc.timestamp()) == not_after  # the file the collector reads is the served one
    assert scalar('nodeops_tls_certificate_not_after_timestamp_seconds{instance="%s",path="%s"}' % (LB_NAME, CERT)) == not_after
    days = scalar('(nodeops_tls_certificate_not_after_timestamp_seconds{path="%s"} - time()) / 86400' % CERT)
    assert abs(days - (not_after - time.time()) / 86400.0) < 0.001
    issued = on_disk.not_valid_before_utc
    assert abs((not_after - issued.timestamp()) / 86400.0 - 365) < 1  # nginx_tls' self-signed default lifetime
    assert datetime.datetime.now(datetime.timezone.utc) - issued < datetime.timedelta(hours=1)  # issued by this converge


def test_backup_age_and_result_after_a_backup_run(lb):
    """No record: BackupMissing fires. One run of the backup role's service: age small, result success, alert resolved."""
    assert not lb.file(BACKUP_RECORD).exists, "a backup ran before this test"
    assert scalar('nodeops_backup_record_present{instance="%s"}' % LB_NAME) == 0
    wait_for(lambda: firing("BackupMissing", instance=LB_NAME), "BackupMissing to fire while there is no record", timeout=60)

    client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
    try:
        client.shop.orders.delete_many({})
        client.shop.orders.insert_many([{"n": n, "item": "sku-%d" % n} for n in range(50)])
    finally:
        client.close()
    started = time.time()
    run = lb.run("systemctl start nodeops-backup.service")  # the timer's unit; a oneshot: returns when the run ended
    assert run.rc == 0, run.stderr + lb.run("journalctl -u nodeops-backup.service -n 30 --no-pager").stdout
    record = json.loads(lb.file(BACKUP_RECORD).content_string)
    assert record["result"] == "success" and record["verified"] is True, record
    assert started - 2 <= record["started_at"] <= record["finished_at"] <= time.time() + 2, record
    assert lb.file("/var/backups/nodeops/sets/latest").linked_to.endswith("/" + record["backup"])

    lb.run("systemctl start nodeops-collector.service")  # publish now rather than at the next timer tick

    def published():
        finished = scalar('nodeops_backup_last_run_finished_timestamp_seconds{instance="%s"}' % LB_NAME)
        assert finished == record["finished_at"], (finished, record)
        return True
    wait_for(published, "the backup record in Prometheus", timeout=60, interval=1)
    age = scalar('time() - nodeops_backup_last_run_finished_timestamp_seconds{instance="%s"}' % LB_NAME)
    assert 0 <= age < 120 and abs(age - (time.time() - record["finished_at"])) < 15, (age, record)
    assert scalar('nodeops_backup_record_present{instance="%s"}' % LB_NAME) == 1
    assert scalar('nodeops_backup_last_run_success{instance="%s"}' % LB_NAME) == 1
    assert scalar('nodeops_backup_last_run_verified{instance="%s"}' % LB_NAME) == 1
    assert scalar('nodeops_backup_last_run_size_bytes{instance="%s"}' % LB_NAME) == record["size_bytes"] > 0
    assert scalar('nodeops_backup_last_run_duration_seconds') == record["finished_at"] - record["started_at"]
    info = query('nodeops_backup_last_run_info{instance="%s"}' % LB_NAME)
    assert [(i["metric"]["backup"], i["metric"]["result"]) for i in info] == [(record["backup"], "success")]
    wait_for(lambda: not query('ALERTS{alertname=~"BackupMissing|BackupFailed"}'), "the backup alerts to resolve", timeout=60)


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


def test_nginx_stub_status_series_from_the_exporter():
    """prometheus-nginx-exporter reads nginx_tls' stub_status: idle keep-alive connections and requests show up."""
    lb_series = '{instance="%s",job="nginx"}' % LB_NAME
    assert scalar("nginx_up" + lb_series) == 1
    before = wait_for(lambda: query("nginx_http_requests_total" + lb_series), "nginx_http_requests_total")
    requests_before = float(before[0]["value"][1])
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    held = [http.client.HTTPSConnection(LB, 443, context=context, timeout=15) for _conn in range(8)]
    try:
        for conn in held:
            for _request in range(4):
                conn.request("GET", "/health", headers={"Host": "monitoring.lab.test"})
                response = conn.getresponse()
                response.read()
                assert response.status == 200
        # 8 connections stay open and idle (keep-alive): stub_status' "waiting", while Prometheus scrapes.
        wait_for(lambda: scalar("nginx_connections_waiting" + lb_series) >= 8, "8 idle connections in nginx_connections_waiting")
        assert scalar("nginx_connections_active" + lb_series) >= 9  # those and the exporter's own request

        def counted():
            grown = scalar("nginx_http_requests_total" + lb_series) - requests_before
            assert 32 <= grown < 32 + 60, grown  # ours, plus one stub_status read per scrape
            return True
        wait_for(counted, "the 32 requests in nginx_http_requests_total")
        assert scalar("nginx_connections_accepted" + lb_series) >= scalar("nginx_connections_handled" + lb_series) >= 8
    finally:
        for conn in held:
            conn.close()
    wait_for(lambda: scalar("nginx_connections_waiting" + lb_series) < 8, "the closed connections to leave nginx_connections_waiting")


def test_collector_runs_cleanly_on_every_node(app, lb):
    for node, sections in ((app, {"pm2"}), (lb, {"backup", "tls", "nginx"})):
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

def test_check_mode_on_the_converged_nodes_changes_nothing(role_runs):
    rc, out = role_runs.result("check")
    assert rc == 0, out[-4000:]
    for name in (APP_NAME, LB_NAME):
        assert recap(out, name)["changed"] == 0, out[-4000:]


def test_listening_on_every_address_is_refused(app, role_runs):
    rc, out = role_runs.result("listen_everywhere")
    assert rc != 0
    assert "monitoring_listen_address must be one address of this node" in out and "Got address '0.0.0.0'" in out, out[-3000:]
    assert app.check_output("cat /etc/default/prometheus-node-exporter") == role_runs.before["exporter_args"]


def test_a_rule_promtool_rejects_never_goes_live(lb, role_runs):
    """A broken window renders invalid PromQL: promtool refuses it, the live rules and Prometheus stay as they were."""
    rc, out = role_runs.result("broken_rule")
    assert rc != 0
    assert "failed to validate" in out and "Render the alert rules" in out, out[-3000:]
    assert lb.check_output("sha256sum %s" % RULES_FILE) == role_runs.before["rules_sha"]
    assert lb.check_output("ls -A %s" % os.path.dirname(RULES_FILE)) == os.path.basename(RULES_FILE)
    rules = requests.get(PROMETHEUS + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert set(r["name"] for g in rules for r in g["rules"]) == RULES


# ---------------------------------------------------------------- an alert, end to end

def test_app_down_alert_fires_and_resolves(app, role_runs):
    """Stopping the API makes nginx answer 5xx and AppDown fire; starting it again resolves it."""
    role_runs.wait()  # no role run may see the API stopped
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
