"""Fleet report rules: each flag fires exactly at its threshold, every node gets a row, the table lines up."""

import copy
import re

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.fleet_report import (
    DEFAULT_THRESHOLDS, FleetReportError, build_report, render_table, thresholds,
)

NOW = 1_795_000_000


def host(cpu=10.0, mem=40.0, disk=50.0):
    return {'cpus': 2, 'cpu_percent': cpu, 'load': [0.1, 0.2, 0.3], 'memory': {'percent': mem},
            'disks': [{'path': '/', 'percent': disk}, {'path': '/srv/shop', 'percent': disk / 2}]}


def proc(name, pm_id, status='online', restarts=0, memory=50 * 1048576):
    return {'name': name, 'pm_id': pm_id, 'status': status, 'restarts': restarts, 'memory': memory, 'cpu': 1, 'uptime_s': 60}


def app(**overrides):
    data = {'name': 'shop', 'current_link': '/srv/shop/current', 'release_id': '2.0.0-abc',
            'manifest': {'version': '2.0.0', 'status': 'healthy'}, 'running_version': '2.0.0', 'version_error': None,
            'processes': [proc('shop-api', 0), proc('shop-api', 1, restarts=2), proc('shop-worker', 2)], 'pm2_error': None}
    data.update(overrides)
    return data


def backup(**overrides):
    data = {'present': True, 'result': 'success', 'verified': True, 'backup': 'b1', 'finished_at': NOW - 3600, 'size_bytes': 9,
            'error': None, 'age_s': 3600.0}
    data.update(overrides)
    return data


def cert(days):
    return [{'path': '/etc/ssl/nodeops/shop.crt', 'subject': 'shop', 'not_after': '2027-11-22T00:00:00Z', 'days_left': days,
             'status': 'ok'}]


def fleet():
    return [
        {'host': 'lb1', 'groups': ['lb'], 'address': '10.0.0.10', 'status': {'host': host(), 'app': None, 'backup': None},
         'certs': cert(300), 'cert_error': None},
        {'host': 'app1', 'groups': ['app'], 'address': '10.0.0.11', 'status': {'host': host(), 'app': app(), 'backup': None}},
        {'host': 'data1', 'groups': ['redis', 'backup'], 'address': '10.0.0.20',
         'status': {'host': host(), 'app': None, 'backup': backup()}},
    ]


def flags_of(report, name):
    return [(f['check'], f['severity']) for f in next(r for r in report['nodes'] if r['host'] == name)['flags']]


def test_healthy_fleet_has_no_flags_and_every_figure():
    report = build_report(fleet(), now=NOW)
    assert report['summary'] == {'nodes': 3, 'flagged_nodes': 0, 'critical': 0, 'warning': 0, 'ok': True}
    assert report['generated_at'] == '2026-11-18T11:06:40Z'
    assert [r['host'] for r in report['nodes']] == ['app1', 'data1', 'lb1']
    app1, data1, lb1 = report['nodes']
    assert app1['version'] == '2.0.0' and app1['release_id'] == '2.0.0-abc' and app1['release_status'] == 'healthy'
    assert app1['pm2']['online'] == 3 and app1['pm2']['total'] == 3 and app1['pm2']['restarts'] == 2
    assert app1['pm2']['memory_bytes'] == 150 * 1048576
    assert app1['cert'] is None and app1['backup'] is None
    assert lb1['cert']['days_left'] == 300 and lb1['pm2'] is None
    assert data1['backup']['state'] == 'ok' and data1['backup']['age_hours'] == 1.0
    assert app1['disk_percent'] == 50.0 and app1['disk_path'] == '/'


@pytest.mark.parametrize('key, below, above, check, severity', [
    ('cpu', 80.0, 80.1, 'cpu', 'warning'),
    ('mem', 85.0, 85.1, 'memory', 'warning'),
    ('disk', 90.0, 90.1, 'disk', 'critical'),
])
def test_resource_thresholds_flag_only_above(key, below, above, check, severity):
    for value, flagged in ((below, False), (above, True)):
        nodes = fleet()
        nodes[1]['status']['host'] = host(**{key: value})
        report = build_report(nodes, now=NOW)
        assert ((check, severity) in flags_of(report, 'app1')) is flagged, (value, flags_of(report, 'app1'))


@pytest.mark.parametrize('days, flagged', [(7, False), (6, True), (0, True), (-3, True)])
def test_certificate_flag_below_the_threshold(days, flagged):
    nodes = fleet()
    nodes[0]['certs'] = cert(days)
    assert (('cert', 'critical') in flags_of(build_report(nodes, now=NOW), 'lb1')) is flagged


def test_certificate_closest_to_expiry_counts_and_unreadable_is_critical():
    nodes = fleet()
    nodes[0]['certs'] = cert(300) + cert(5)
    report = build_report(nodes, now=NOW)
    assert report['nodes'][2]['cert']['days_left'] == 5
    nodes[0]['certs'], nodes[0]['cert_error'] = None, 'No such file: /etc/ssl/nodeops/shop.crt'
    report = build_report(nodes, now=NOW)
    assert flags_of(report, 'lb1') == [('cert', 'critical')]
    assert 'No such file' in report['nodes'][2]['flags'][0]['message']


@pytest.mark.parametrize('record, state, message', [
    (None, 'none', 'no backup recorded'),
    ({'present': False, 'path': '/var/lib/nodeops/backup/last-run.json'}, 'none', 'last-run.json'),
    ({'present': True, 'read_error': 'not valid JSON'}, 'unreadable', 'not valid JSON'),
    (backup(result='failed', error='mongodump: connection refused'), 'failed', 'connection refused'),
    (backup(verified=False), 'unverified', 'not verified'),
    (backup(age_s=27 * 3600.0), 'ok', '27h old'),
    (backup(age_s=None), 'ok', 'no finished_at'),
])
def test_backup_problems_are_critical(record, state, message):
    nodes = fleet()
    nodes[2]['status']['backup'] = record
    report = build_report(nodes, now=NOW)
    data1 = report['nodes'][1]
    assert data1['backup']['state'] == state
    assert [(f['check'], f['severity']) for f in data1['flags']] == [('backup', 'critical')]
    assert message in data1['flags'][0]['message']


def test_backup_age_threshold_is_configurable():
    nodes = fleet()
    nodes[2]['status']['backup'] = backup(age_s=10 * 3600.0)
    assert flags_of(build_report(nodes, now=NOW), 'data1') == []
    assert flags_of(build_report(nodes, {'backup_max_age_hours': 8}, now=NOW), 'data1') == [('backup', 'critical')]


@pytest.mark.parametrize('overrides, message', [
    ({'processes': [proc('shop-api', 0, status='errored')]}, 'shop-api (pm_id 0) is errored'),
    ({'processes': []}, 'no PM2 process of shop'),
    ({'processes': [], 'pm2_error': 'PM2 daemon of shop is not running'}, 'PM2: PM2 daemon of shop is not running'),
    ({'running_version': None, 'version_error': 'http://a:3000/version: Connection refused'}, 'not answering'),
    ({'release_id': None, 'manifest': None}, 'no release at /srv/shop/current'),
])
def test_app_down_is_critical(overrides, message):
    nodes = fleet()
    nodes[1]['status']['app'] = app(**overrides)
    report = build_report(nodes, now=NOW)
    app1 = report['nodes'][0]
    assert ('app', 'critical') in flags_of(report, 'app1')
    assert any(message in f['message'] for f in app1['flags']), app1['flags']


def test_version_drift_is_a_warning_and_the_running_version_wins():
    nodes = fleet()
    nodes[1]['status']['app'] = app(running_version='1.0.0')
    report = build_report(nodes, now=NOW)
    assert flags_of(report, 'app1') == [('version', 'warning')]
    assert report['nodes'][0]['version'] == '1.0.0'


def test_bootstrap_release_without_manifest_uses_the_running_version():
    nodes = fleet()
    nodes[1]['status']['app'] = app(release_id='1.0.0', manifest=None, running_version='1.0.0')
    report = build_report(nodes, now=NOW)
    assert report['nodes'][0]['version'] == '1.0.0' and flags_of(report, 'app1') == []


def test_unreachable_node_is_a_critical_row():
    nodes = fleet()
    nodes[1]['status'], nodes[1]['error'] = None, 'Failed to create temporary directory'
    report = build_report(nodes, now=NOW)
    app1 = report['nodes'][0]
    assert app1['reachable'] is False and app1['pm2'] is None
    assert app1['flags'][0]['severity'] == 'critical' and 'temporary directory' in app1['flags'][0]['message']
    assert report['summary']['critical'] == 1 and not report['summary']['ok']


def test_custom_group_names():
    nodes = copy.deepcopy(fleet())
    nodes[1]['groups'] = ['web']
    report = build_report(nodes, groups={'app': 'web'}, now=NOW)
    assert report['nodes'][0]['pm2']['online'] == 3


def test_thresholds_are_validated():
    assert thresholds() == DEFAULT_THRESHOLDS
    assert thresholds({'cpu_percent': '95'})['cpu_percent'] == 95.0
    for bad, message in (({'cpu': 1}, "unknown key 'cpu'"), ({'disk_percent': -1}, 'disk_percent must be a non-negative number'),
                         ({'cert_days': 'soon'}, "got 'soon'"), ({'memory_percent': True}, 'got True')):
        with pytest.raises(FleetReportError, match=message):
            thresholds(bad)
    with pytest.raises(FleetReportError, match='expected a list'):
        build_report({'app1': {}})
    with pytest.raises(FleetReportError, match='with a host name'):
        build_report([{'groups': []}])


def test_table_has_a_line_per_node_and_per_flag():
    nodes = fleet()
    nodes[2]['status']['backup'] = None
    nodes[1]['status']['host'] = host(cpu=97.5)
    lines = render_table(build_report(nodes, now=NOW))
    header, rule, app1, data1, lb1, summary = lines[:6]
    assert header.split()[:4] == ['host', 'groups', 'version', 'pm2_online']
    assert len(rule) >= len(app1)
    assert app1.split()[:7] == ['app1', 'app', '2.0.0', '3/3', '2', '150', '-']
    # no single space inside a line: YAML callbacks would fold the table there
    assert not [line for line in (header, rule, app1, data1, lb1) if re.search(r'\S \S', line)]
    assert 'WARNING' in app1 and '97.5' in app1
    assert ' none ' in data1 and 'CRITICAL' in data1
    assert lb1.split()[6] == '300' and lb1.rstrip().endswith('ok')
    assert summary == '3 node(s), 2 flagged: 1 critical, 1 warning'
    assert lines[6:] == ['  WARNING app1 [cpu] CPU 97.5% (> 80%)',
                         '  CRITICAL data1 [backup] no backup recorded']
    # columns line up: every node line starts its version cell where the header does
    col = header.index('version')
    assert all(line[col - 2:col] == '  ' for line in (app1, data1, lb1))
