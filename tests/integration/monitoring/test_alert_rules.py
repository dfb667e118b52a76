"""The monitoring role's alert rules, rendered by Ansible and unit-tested with promtool.

The rules are rendered by a real ``ansible-playbook`` run of the role's
``alert_rules`` entry point (the same task and template the role uses on a
Prometheus server, including its ``promtool check rules`` validation), once with
the role defaults (the runbooks' thresholds) and once with every threshold
overridden. For each alert, synthetic series are built from the thresholds of
that rendering: values just past the threshold must fire the alert, values just
short of it must not (``promtool test rules``). Alerts with a ``for`` duration
are also checked on both sides of it. Needs ``promtool`` (Debian package
``prometheus``); without it the tests fail rather than skip.
"""

import json
import math
import os
import re
import shutil
import subprocess

import pytest
import yaml

from playbook_runner import REPO, run_playbook

ROLE = os.path.join(REPO, "roles", "monitoring")
OPERATIONS = os.path.join(REPO, "docs", "operations.md")
PROMTOOL = shutil.which("promtool")
STEP = 60  # seconds between samples and between rule evaluations

# Alert name -> runbook anchor in docs/operations.md, and severity.
ALERTS = {
    "TargetDown": ("target-down", "critical"),
    "AppDown": ("app-down", "critical"),
    "HighErrorRate": ("high-error-rate", "critical"),
    "CertificateExpiresSoon": ("certificate-expires-soon", "critical"),
    "BackupFailed": ("backup-failed", "critical"),
    "BackupMissing": ("backup-missing", "critical"),
    "DiskAlmostFull": ("disk-almost-full", "critical"),
    "AppDegraded": ("app-degraded", "warning"),
    "CertificateExpiring": ("certificate-expiring", "warning"),
    "HighCpu": ("high-cpu", "warning"),
    "HighMemory": ("high-memory", "warning"),
    "SlowResponses": ("slow-responses", "warning"),
    "SlowQueries": ("slow-queries", "warning"),
    "CollectorFailing": ("collector-failing", "warning"),
    "CollectorStale": ("collector-stale", "warning"),
    "RequestRateSpike": ("request-rate-spike", "info"),
}

# Every threshold and duration changed, an extra label and a disabled alert.
OVERRIDES = {
    "monitoring_alert_runbook_url": "https://docs.example.test/ops.md",
    "monitoring_alert_extra_labels": {"team": "ops"},
    "monitoring_alert_disabled": ["CollectorStale"],
    "monitoring_alert_target_down_for": "4m",
    "monitoring_alert_app_down_for": "3m",
    "monitoring_alert_app_degraded_for": "7m",
    "monitoring_alert_error_ratio": 0.05,
    "monitoring_alert_error_window": "10m",
    "monitoring_alert_error_for": "2m",
    "monitoring_alert_cert_critical_days": 14,
    "monitoring_alert_cert_warning_days": 45,
    "monitoring_alert_cert_for": "1m",
    "monitoring_alert_backup_max_age_hours": 50,
    "monitoring_alert_disk_used_percent": 75,
    "monitoring_alert_disk_for": "3m",
    "monitoring_alert_cpu_percent": 60,
    "monitoring_alert_cpu_window": "10m",
    "monitoring_alert_cpu_for": "20m",
    "monitoring_alert_memory_percent": 70,
    "monitoring_alert_memory_for": "4m",
    "monitoring_alert_latency_p95_seconds": 1,
    "monitoring_alert_latency_for": "3m",
    "monitoring_alert_slow_queries_per_minute": 5,
    "monitoring_alert_slow_queries_window": "5m",
    "monitoring_alert_slow_queries_for": "5m",
    "monitoring_alert_spike_factor": 2,
    "monitoring_alert_spike_min_rate": 20,
    "monitoring_alert_spike_window": "10m",
    "monitoring_alert_spike_baseline": "30m",
    "monitoring_alert_spike_for": "3m",
    "monitoring_alert_collector_for": "2m",
}

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: nodeops.stack.monitoring
        tasks_from: alert_rules
"""


def seconds(duration):
    match = re.fullmatch(r"(\d+)([smhd])", str(duration))
    assert match, "unsupported duration %r" % duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def role_defaults():
    with open(os.path.join(ROLE, "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)


class Variant:
    """One rendering of the rules: its variables and the rendered file."""

    def __init__(self, name, overrides):
        self.name = name
        self.vars = dict(role_defaults(), **overrides)
        self.overrides = overrides
        self.rules_file = None
        self.rules = {}

    def __getattr__(self, item):
        # v.cpu_percent -> monitoring_alert_cpu_percent
        try:
            return self.vars["monitoring_alert_" + item]
        except KeyError:
            raise AttributeError(item)

    def dur(self, item):
        return seconds(self.vars["monitoring_alert_" + item])

    def enabled(self):
        return [name for name in ALERTS if name not in self.vars["monitoring_alert_disabled"]]


def render(variant, workdir):
    if PROMTOOL is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus' on the controller")
    workdir.mkdir(parents=True, exist_ok=True)
    variant.rules_file = str(workdir / "out" / "nodeops.rules.yml")
    extra = dict(variant.overrides, monitoring_prometheus_rules_file=variant.rules_file)
    (workdir / "vars.json").write_text(json.dumps(extra))
    (workdir / "render.yml").write_text(PLAYBOOK)
    rc, out = run_playbook(workdir / "render.yml", workdir, "-e", "@" + str(workdir / "vars.json"))
    assert rc == 0, out
    with open(variant.rules_file) as handle:
        doc = yaml.safe_load(handle)
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in variant.rules, "alert %s rendered twice" % rule["alert"]
            variant.rules[rule["alert"]] = rule
    return variant


@pytest.fixture(scope="module", params=["defaults", "overrides"])
def variant(request, tmp_path_factory):
    overrides = {} if request.param == "defaults" else OVERRIDES
    return render(Variant(request.param, overrides), tmp_path_factory.mktemp("rules-" + request.param))


# ---------------------------------------------------------------- series helpers

def fmt(value):
    return repr(float(value))


def gauge(values):
    return " ".join(fmt(v) for v in values)


def steady(value, steps):
    return gauge([value] * (steps + 1))


def counter(increments):
    """Cumulative values of a counter growing by each increment per step, starting at 0."""
    total, out = 0.0, [0.0]
    for inc in increments:
        total += inc
        out.append(total)
    return gauge(out)


def series(name, labels, values):
    label_text = ",".join('%s="%s"' % (k, v) for k, v in sorted(labels.items()))
    return {"series": "%s{%s}" % (name, label_text), "values": values}


NODE = {"instance": "node1:9100", "job": "node"}


def case(edge, why, eval_s, input_series, alert_labels=None):
    """edge: 'fires' (alert_labels expected) or 'quiet' (no alert)."""
    return {"edge": edge, "why": why, "eval": eval_s, "series": input_series,
            "labels": alert_labels if edge == "fires" else None}


def onset_cases(v, dur_key, metric, labels, normal, bad, alert_labels):
    """The value turns bad at 5m: still pending just before `for` has passed, firing when it has."""
    hold = v.dur(dur_key)
    steps = 5 + hold // STEP + 5
    values = gauge([normal] * 5 + [bad] * (steps - 4))
    out = [case("fires", "bad for exactly %ss" % hold, 300 + hold, [series(metric, labels, values)], alert_labels)]
    if hold > 0:
        out.append(case("quiet", "bad for %ss, less than for=%ss" % (hold - STEP, hold), 300 + hold - STEP,
                        [series(metric, labels, values)]))
    return out


# ---------------------------------------------------------------- cases per alert

def cases_target_down(v):
    up = dict(NODE)
    return onset_cases(v, "target_down_for", "up", up, 1, 0, up) + [
        case("quiet", "target up", 1200, [series("up", up, steady(1, 20))])]


def cases_app_down(v):
    labels = dict(NODE, app="shop-api")
    hold = v.dur("app_down_for")
    return onset_cases(v, "app_down_for", "nodeops_pm2_instances_online", labels, 2, 0, labels) + [
        case("quiet", "one instance online", 600 + hold, [series("nodeops_pm2_instances_online", labels, steady(1, 20 + hold // 60))])]


def cases_app_degraded(v):
    labels = dict(NODE, app="shop-api")
    end = 600 + v.dur("app_degraded_for")
    steps = end // STEP

    def pm2(online, expected):
        return [series("nodeops_pm2_instances_online", labels, steady(online, steps)),
                series("nodeops_pm2_instances_expected", labels, steady(expected, steps))]
    return [case("fires", "one of two online", end, pm2(1, 2), labels),
            case("quiet", "two of two online", end, pm2(2, 2)),
            case("quiet", "none online (AppDown instead)", end, pm2(0, 2))]


def cases_error_rate(v):
    per_step = 100000
    end = v.dur("error_window") + v.dur("error_for") + 600
    steps = end // STEP
    ratio = v.error_ratio

    def traffic(errors):
        return [series("nodeops_nginx_http_requests_total", dict(NODE, status_class="2xx"), counter([per_step - errors] * steps)),
                series("nodeops_nginx_http_requests_total", dict(NODE, status_class="5xx"), counter([errors] * steps))]
    above, below = math.ceil(per_step * ratio) + 1, math.floor(per_step * ratio) - 1
    return [case("fires", "5xx share %s" % (above / per_step), end, traffic(above), {"instance": NODE["instance"]}),
            case("quiet", "5xx share %s" % (below / per_step), end, traffic(below))]


def _cert(v, days_at_eval_start, end, labels):
    # not_after such that days left at `end - for` equal days_at_eval_start
    not_after = end - v.dur("cert_for") + days_at_eval_start * 86400
    return [series("nodeops_tls_certificate_not_after_timestamp_seconds", labels, steady(not_after, end // STEP))]


def cases_cert_critical(v):
    labels = dict(NODE, path="/etc/ssl/nodeops/shop.crt")
    end = 1200
    days = v.cert_critical_days
    hold_days = v.dur("cert_for") / 86400.0
    return [
        # exactly `days` left when the for-window began (<= fires), fewer since
        case("fires", "%s days left" % days, end, _cert(v, days, end, labels), labels),
        # one minute more than `days` left at the evaluation itself
        case("quiet", "%s days + 60 s left" % days, end, _cert(v, days + hold_days + 60 / 86400.0, end, labels)),
    ]


def cases_cert_warning(v):
    labels = dict(NODE, path="/etc/ssl/nodeops/shop.crt")
    end = 1200
    hold_days = v.dur("cert_for") / 86400.0
    warn, crit = v.cert_warning_days, v.cert_critical_days
    return [
        case("fires", "%s days left" % warn, end, _cert(v, warn, end, labels), labels),
        case("quiet", "%s days + 60 s left" % warn, end, _cert(v, warn + hold_days + 60 / 86400.0, end, labels)),
        case("fires", "%s days + 60 s left" % crit, end, _cert(v, crit + hold_days + 60 / 86400.0, end, labels), labels),
        case("quiet", "%s days left (critical alert instead)" % crit, end, _cert(v, crit, end, labels)),
    ]


def cases_backup_failed(v):
    end = 600

    def record(success, verified):
        return [series("nodeops_backup_last_run_success", NODE, steady(success, 10)),
                series("nodeops_backup_last_run_verified", NODE, steady(verified, 10))]
    return [case("fires", "result failed", end, record(0, 1), NODE),
            case("fires", "not verified", end, record(1, 0), NODE),
            case("quiet", "success and verified", end, record(1, 1))]


def cases_backup_missing(v):
    end = 600
    max_age = v.backup_max_age_hours * 3600

    def record(age):
        return [series("nodeops_backup_record_present", NODE, steady(1, 10)),
                series("nodeops_backup_last_run_finished_timestamp_seconds", NODE, steady(end - age, 10))]
    return [case("fires", "finished %s s ago" % (max_age + 1), end, record(max_age + 1), NODE),
            case("quiet", "finished exactly %s s ago" % max_age, end, record(max_age)),
            case("fires", "no record", end, [series("nodeops_backup_record_present", NODE, steady(0, 10))], NODE)]


def _disk(v, used_percent, fstype="ext4"):
    labels = dict(NODE, device="/dev/sda1", fstype=fstype, mountpoint="/")
    size = 1e12
    avail = size * (100 - used_percent) / 100.0
    steps = 20 + v.dur("disk_for") // STEP
    return [series("node_filesystem_size_bytes", labels, steady(size, steps)),
            series("node_filesystem_avail_bytes", labels, steady(avail, steps))], labels


def cases_disk(v):
    p = v.disk_used_percent
    end = 600 + v.dur("disk_for")
    above, labels = _disk(v, p + 0.01)
    below = _disk(v, p - 0.01)[0]
    tmpfs = _disk(v, 99.9, fstype="tmpfs")[0]
    fs = dict(labels)
    size = 1e12
    onset = onset_cases(v, "disk_for", "node_filesystem_avail_bytes", fs, size / 2, size * (100 - p - 1) / 100.0, fs)
    for c in onset:
        c["series"].append(series("node_filesystem_size_bytes", fs, steady(size, 40)))
    return [case("fires", "%s%% used" % (p + 0.01), end, above, labels),
            case("quiet", "%s%% used" % (p - 0.01), end, below),
            case("quiet", "tmpfs 99.9%% used (excluded fstype)", end, tmpfs)] + onset


def _cpu(busy_percent, steps, cpus=2):
    idle_per_step = STEP * (100 - busy_percent) / 100.0
    return [series("node_cpu_seconds_total", dict(NODE, cpu=str(c), mode="idle"), counter([idle_per_step] * steps))
            for c in range(cpus)]


def cases_cpu(v):
    p = v.cpu_percent
    end = v.dur("cpu_window") + v.dur("cpu_for") + 600
    steps = end // STEP
    short = v.dur("cpu_for") - STEP  # a burst shorter than `for`
    burst = [STEP * 0.01] * (short // STEP)
    burst_series = [series("node_cpu_seconds_total", dict(NODE, cpu="0", mode="idle"), counter(burst))]
    return [case("fires", "%s%% busy" % (p + 0.1), end, _cpu(p + 0.1, steps), {"instance": NODE["instance"]}),
            case("quiet", "%s%% busy" % (p - 0.1), end, _cpu(p - 0.1, steps)),
            case("quiet", "99%% busy for %ss only (not sustained)" % short, short, burst_series)]


def cases_memory(v):
    p = v.memory_percent
    total = 8e9
    end = 600 + v.dur("memory_for")
    steps = end // STEP

    def mem(used):
        return [series("node_memory_MemTotal_bytes", NODE, steady(total, steps)),
                series("node_memory_MemAvailable_bytes", NODE, steady(total * (100 - used) / 100.0, steps))]
    onset = onset_cases(v, "memory_for", "node_memory_MemAvailable_bytes", NODE, total / 2, total * (100 - p - 1) / 100.0, NODE)
    for c in onset:
        c["series"].append(series("node_memory_MemTotal_bytes", NODE, steady(total, 40)))
    return [case("fires", "%s%% used" % (p + 0.01), end, mem(p + 0.01), NODE),
            case("quiet", "%s%% used" % (p - 0.01), end, mem(p - 0.01))] + onset


def cases_latency(v):
    buckets = sorted(float(b) for b in v.vars["monitoring_nginx_latency_buckets"])
    thr = float(v.latency_p95_seconds)
    assert thr in buckets, "the p95 threshold %s must be a histogram bucket boundary %s" % (thr, buckets)
    per_step = 1000
    end = v.dur("latency_window") + v.dur("latency_for") + 600
    steps = end // STEP

    def hist(at_threshold):
        out = []
        for le in buckets + [float("inf")]:
            if le < thr:
                share = 0.5
            elif le == thr:
                share = at_threshold
            else:
                share = 1.0
            le_text = "+Inf" if le == float("inf") else repr(le)
            out.append(series("nodeops_nginx_request_duration_seconds_bucket", dict(NODE, le=le_text),
                              counter([per_step * share] * steps)))
        return out
    return [case("fires", "94.9%% of requests within %ss" % thr, end, hist(0.949), {"instance": NODE["instance"]}),
            case("quiet", "95.1%% of requests within %ss" % thr, end, hist(0.951))]


def cases_slow_queries(v):
    q = float(v.slow_queries_per_minute)
    end = v.dur("slow_queries_window") + v.dur("slow_queries_for") + 600
    steps = end // STEP

    def slow(per_minute):
        return [series("nodeops_mongodb_slow_queries_total", NODE, counter([per_minute * STEP / 60.0] * steps))]
    return [case("fires", "%s per minute" % (q + 0.1), end, slow(q + 0.1), NODE),
            case("quiet", "%s per minute" % (q - 0.1), end, slow(q - 0.1))]


def cases_spike(v):
    k, floor = float(v.spike_factor), float(v.spike_min_rate)
    window, base, hold = v.dur("spike_window"), v.dur("spike_baseline"), v.dur("spike_for")
    start = base + window + 300          # the spike starts here; baseline fully populated before
    end = start + window + hold          # the current window is all spike from start+window on

    def traffic(baseline_rate, spike_rate):
        incs = [baseline_rate * STEP] * (start // STEP) + [spike_rate * STEP] * ((end - start) // STEP)
        return [series("nodeops_nginx_http_requests_total", dict(NODE, status_class="2xx"), counter(incs))]
    # While the alert is pending, the baseline window (offset by the current one)
    # takes in up to `for` of the spike: the spike must exceed k x baseline by
    # this factor to hold through `for`.
    edge = k * (1 - hold / float(base)) / (1 - k * hold / float(base))
    b = 2 * floor / k  # spikes of about 2x the floor: the floor does not decide these two
    labels = {"instance": NODE["instance"]}
    return [case("fires", "spike %.4g x baseline" % (edge * 1.01), end, traffic(b, b * edge * 1.01), labels),
            case("quiet", "spike %.4g x baseline" % (edge * 0.99), end, traffic(b, b * edge * 0.99)),
            case("fires", "spike to %s req/s (floor %s)" % (floor * 1.01, floor), end, traffic(1, floor * 1.01), labels),
            case("quiet", "spike to %s req/s (floor %s)" % (floor * 0.99, floor), end, traffic(1, floor * 0.99))]


def cases_collector_failing(v):
    labels = dict(NODE, section="pm2")
    return onset_cases(v, "collector_for", "nodeops_collector_success", labels, 1, 0, labels) + [
        case("quiet", "section succeeding", 1200, [series("nodeops_collector_success", labels, steady(1, 20))])]


def cases_collector_stale(v):
    stale = v.collector_stale_seconds
    end = 600

    def last_run(age):
        return [series("nodeops_collector_last_run_timestamp_seconds", NODE, steady(end - age, 10))]
    return [case("fires", "last run %s s ago" % (stale + 1), end, last_run(stale + 1), NODE),
            case("quiet", "last run exactly %s s ago" % stale, end, last_run(stale))]


CASES = {
    "TargetDown": cases_target_down,
    "AppDown": cases_app_down,
    "AppDegraded": cases_app_degraded,
    "HighErrorRate": cases_error_rate,
    "CertificateExpiresSoon": cases_cert_critical,
    "CertificateExpiring": cases_cert_warning,
    "BackupFailed": cases_backup_failed,
    "BackupMissing": cases_backup_missing,
    "DiskAlmostFull": cases_disk,
    "HighCpu": cases_cpu,
    "HighMemory": cases_memory,
    "SlowResponses": cases_latency,
    "SlowQueries": cases_slow_queries,
    "RequestRateSpike": cases_spike,
    "CollectorFailing": cases_collector_failing,
    "CollectorStale": cases_collector_stale,
}


# ---------------------------------------------------------------- promtool

def expected_alert(variant, alert, labels):
    rule = variant.rules[alert]
    all_labels = dict(labels, severity=ALERTS[alert][1], **variant.vars["monitoring_alert_extra_labels"])

    def expand(text):
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: all_labels.get(m.group(1), ""), text)
    return {"exp_labels": all_labels, "exp_annotations": {k: expand(t) for k, t in rule["annotations"].items()}}


def promtool_test(variant, alert, cases, workdir):
    tests = []
    for c in cases:
        exp = [expected_alert(variant, alert, c["labels"])] if c["edge"] == "fires" else []
        tests.append({"interval": "%ds" % STEP, "input_series": c["series"],
                      "alert_rule_test": [{"eval_time": "%ds" % c["eval"], "alertname": alert, "exp_alerts": exp}]})
    path = workdir / ("%s-%s.test.yml" % (variant.name, alert))
    path.write_text(yaml.safe_dump({"rule_files": [variant.rules_file], "evaluation_interval": "%ds" % STEP,
                                    "tests": tests}, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False)


def test_promtool_check_rules(variant):
    """promtool accepts the rendered file (the role's validate ran it too) and counts every enabled alert."""
    proc = subprocess.run([PROMTOOL, "check", "rules", variant.rules_file], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(variant.enabled()) in proc.stdout, proc.stdout


def test_rendered_alerts_match_the_documented_set(variant):
    """Exactly the enabled alerts are rendered; each has its severity, extra labels and runbook anchor."""
    assert sorted(variant.rules) == sorted(variant.enabled())
    for name in variant.vars["monitoring_alert_disabled"]:
        assert name not in variant.rules
    base = variant.vars["monitoring_alert_runbook_url"]
    for name, rule in variant.rules.items():
        anchor, severity = ALERTS[name]
        assert rule["labels"] == dict(severity=severity, **variant.vars["monitoring_alert_extra_labels"]), name
        assert rule["annotations"]["runbook_url"] == "%s#alert-%s" % (base, anchor), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_thresholds_are_rendered_from_the_variables(variant):
    """The rendered expressions carry the variant's thresholds (a hard-coded number would fail the override run)."""
    r = variant.rules
    v = variant
    assert r["HighCpu"]["expr"].rstrip().endswith("> %s" % v.cpu_percent)
    assert r["HighMemory"]["expr"].rstrip().endswith("> %s" % v.memory_percent)
    assert r["DiskAlmostFull"]["expr"].rstrip().endswith("> %s" % v.disk_used_percent)
    assert r["HighErrorRate"]["expr"].rstrip().endswith("> %s" % v.error_ratio)
    assert r["SlowResponses"]["expr"].rstrip().endswith("> %s" % v.latency_p95_seconds)
    assert r["CertificateExpiresSoon"]["expr"].rstrip().endswith("<= %s" % v.cert_critical_days)
    assert r["HighCpu"]["for"] == v.cpu_for and r["AppDown"]["for"] == v.app_down_for


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_fires_past_its_threshold_and_not_before(variant, alert, tmp_path):
    """promtool test rules: the 'fires' cases raise exactly the expected alert, the 'quiet' cases none."""
    if alert not in variant.enabled():
        assert alert not in variant.rules
        return
    cases = CASES[alert](variant)
    edges = {c["edge"] for c in cases}
    assert edges == {"fires", "quiet"}, "%s needs cases on both sides of its threshold" % alert
    proc = promtool_test(variant, alert, cases, tmp_path)
    assert proc.returncode == 0, "promtool test rules failed for %s (%s):\n%s\n%s\ncases: %s" % (
        alert, variant.name, proc.stdout, proc.stderr, [(c["edge"], c["why"]) for c in cases])


def test_a_wrong_expectation_makes_promtool_fail(variant, tmp_path):
    """The harness can fail: a quiet case expected to fire (and a firing one expected quiet) is reported."""
    cases = CASES["HighMemory"](variant)
    flipped = [dict(c, edge="quiet" if c["edge"] == "fires" else "fires", labels=c["labels"] or NODE) for c in cases]
    proc = promtool_test(variant, "HighMemory", flipped, tmp_path)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- runbook links

def markdown_anchors(text):
    """Anchors a Markdown page offers, by GitHub's rules: explicit <a id|name="..."> tags and heading slugs.

    A heading's slug is its text lower-cased, without punctuation (hyphens and
    underscores stay), spaces turned into hyphens; a repeated slug gets -1, -2, ...
    Lines inside fenced code blocks are not headings.
    """
    anchors = set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', text))
    seen = {}
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else "%s-%d" % (slug, count))
    return anchors


@pytest.mark.parametrize("text,present,absent", [
    ("## Certificate renewal\n", {"certificate-renewal"}, set()),
    ("### `TargetDown` (critical)\n", {"targetdown-critical"}, {"alert-target-down"}),
    ('<a id="alert-app-down"></a>\n\n### AppDown\n', {"alert-app-down", "appdown"}, set()),
    ("## Alerts\n## Alerts\n", {"alerts", "alerts-1"}, set()),
    ("```sh\n# not a heading\n```\n", set(), {"not-a-heading"}),
])
def test_markdown_anchor_rules(text, present, absent):
    anchors = markdown_anchors(text)
    assert present <= anchors and not absent & anchors, anchors


def test_every_runbook_link_resolves_to_its_section_of_the_operations_guide(variant):
    """Each rendered runbook_url ends in an anchor docs/operations.md has, followed by that alert's own section."""
    with open(OPERATIONS) as handle:
        text = handle.read()
    anchors = markdown_anchors(text)
    for name, rule in sorted(variant.rules.items()):
        url, _hash, fragment = rule["annotations"]["runbook_url"].partition("#")
        assert url == variant.vars["monitoring_alert_runbook_url"], name
        assert fragment in anchors, "%s: runbook anchor #%s is not in %s" % (name, fragment, OPERATIONS)
        # The next heading after the explicit anchor is the section about this alert.
        section = re.search(r'<a\s+id="%s"></a>\s*\n#{2,6}\s+([^\n]+)' % re.escape(fragment), text)
        assert section and re.match(r"`?%s\b" % name, section.group(1)), (
            "%s: #%s does not open a section headed by the alert's name" % (name, fragment))
    if variant.name == "defaults":
        assert variant.vars["monitoring_alert_runbook_url"].endswith("/docs/operations.md")
    # The guide's own links to sections resolve too (the alert table links every section).
    broken = sorted(set(re.findall(r"\]\(#([^)]+)\)", text)) - anchors)
    assert not broken, "links to missing anchors in %s: %s" % (OPERATIONS, broken)
