# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet status report: per-node rows judged against alert thresholds, and their table.

Used by the ``fleet_report`` / ``fleet_report_table`` filters (``playbooks/status.yml``)
on the controller, where each node's ``host_status`` result and the load balancers'
certificate check meet. Pure functions of their inputs (``now`` is a parameter), so
every rule is unit-tested.

A node entry (built by the playbook from hostvars)::

    {'host': 'app1', 'groups': ['app'], 'address': '10.0.0.11',
     'status': <host_status result or None>, 'error': <why it is missing or None>,
     'certs': <nginx_tls_cert_check_result or None>, 'cert_error': <str or None>}

Severities follow the runbook's alerting: app down, certificate, backup, disk and an
unreachable node are ``critical``; CPU, memory and version drift are ``warning``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import time

DEFAULT_THRESHOLDS = {
    'cpu_percent': 80.0,           # warning above
    'memory_percent': 85.0,        # warning above
    'disk_percent': 90.0,          # critical above
    'cert_days': 7,                # critical below
    'backup_max_age_hours': 26.0,  # critical above (daily backup at 02:00 plus slack)
}
DEFAULT_GROUPS = {'app': 'app', 'lb': 'lb', 'backup': 'backup'}
BACKUP_SUCCESS = ('success',)  # roles/backup's last-run.json: success | failed
# Titles and cells carry no single spaces: YAML output callbacks fold long plain strings at a single space.
TABLE_COLUMNS = (
    ('host', 'host'), ('groups', 'groups'), ('version', 'version'), ('pm2', 'pm2_online'), ('restarts', 'restarts'),
    ('app_mem', 'app_MB'), ('cert', 'cert_days'), ('backup', 'backup_age'), ('cpu', 'cpu%'), ('mem', 'mem%'),
    ('disk', 'disk%'), ('load', 'load_1/5/15'), ('state', 'state'),
)


class FleetReportError(Exception):
    """Bad thresholds or node entries; the message names the key, what was expected and what was given."""


def thresholds(overrides=None):
    """DEFAULT_THRESHOLDS updated with ``overrides``; every value must be a non-negative number."""
    result = dict(DEFAULT_THRESHOLDS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULT_THRESHOLDS:
            raise FleetReportError('thresholds: unknown key %r (expected one of %s)' % (key, ', '.join(sorted(DEFAULT_THRESHOLDS))))
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if isinstance(value, bool) or number < 0:
            raise FleetReportError('thresholds: %s must be a non-negative number, got %r' % (key, value))
        result[key] = number
    return result


def _flag(flags, check, severity, message):
    flags.append({'check': check, 'severity': severity, 'message': message})


def _fmt(number):
    return ('%.1f' % number).rstrip('0').rstrip('.') if isinstance(number, float) else str(number)


def app_summary(app, flags):
    """Version, release and PM2 figures of an app node; flags an app that is down or drifted."""
    if not app:
        _flag(flags, 'app', 'critical', 'app status missing (node in the app group but no app_name given)')
        return {'version': None, 'release_id': None, 'release_status': None, 'pm2': None}
    manifest = app.get('manifest') or {}
    running = app.get('running_version')
    procs = app.get('processes') or []
    online = [p for p in procs if p.get('status') == 'online']
    pm2 = {
        'online': len(online), 'total': len(procs),
        'restarts': sum(int(p.get('restarts') or 0) for p in procs),
        'memory_bytes': sum(int(p.get('memory') or 0) for p in procs),
        'processes': [{k: p.get(k) for k in ('name', 'pm_id', 'status', 'restarts', 'memory', 'cpu', 'uptime_s')} for p in procs],
    }
    if app.get('release_id') is None:
        _flag(flags, 'app', 'critical', 'no release at %s' % app.get('current_link', 'current'))
    if app.get('pm2_error'):
        _flag(flags, 'app', 'critical', 'PM2: %s' % app['pm2_error'])
    elif not procs:
        _flag(flags, 'app', 'critical', 'app down: no PM2 process of %s' % app.get('name'))
    for proc in procs:
        if proc.get('status') != 'online':
            _flag(flags, 'app', 'critical', 'app down: %s (pm_id %s) is %s' % (proc.get('name'), proc.get('pm_id'), proc.get('status')))
    if app.get('version_error'):
        _flag(flags, 'app', 'critical', 'app not answering: %s' % app['version_error'])
    if running and manifest.get('version') and running != manifest['version']:
        _flag(flags, 'version', 'warning', 'app runs %s but the current release is %s (not reloaded?)' % (running, manifest['version']))
    return {'version': running or manifest.get('version'), 'release_id': app.get('release_id'),
            'release_status': manifest.get('status'), 'pm2': pm2}


def cert_summary(certs, cert_error, limits, flags):
    """The certificate closest to expiry; flags one below the threshold, or none readable."""
    if cert_error or not certs:
        _flag(flags, 'cert', 'critical', 'certificate unreadable: %s' % (cert_error or 'no certificate checked'))
        return None
    worst = min(certs, key=lambda c: c.get('days_left', 0))
    days = worst.get('days_left')
    if days is None or days < limits['cert_days']:
        _flag(flags, 'cert', 'critical', '%s expires in %s days (< %s)' % (worst.get('path'), days, _fmt(limits['cert_days'])))
    return {'days_left': days, 'not_after': worst.get('not_after'), 'path': worst.get('path'), 'subject': worst.get('subject')}


def backup_summary(backup, limits, flags):
    """State and age of the last backup run; flags none, unreadable, failed, unverified or too old."""
    if not backup or not backup.get('present'):
        _flag(flags, 'backup', 'critical', 'no backup recorded%s' % (' (%s)' % backup['path'] if backup and backup.get('path') else ''))
        return {'state': 'none', 'age_hours': None}
    if backup.get('read_error'):
        _flag(flags, 'backup', 'critical', 'backup record unreadable: %s' % backup['read_error'])
        return {'state': 'unreadable', 'age_hours': None}
    age_s = backup.get('age_s')
    summary = {k: backup.get(k) for k in ('result', 'verified', 'backup', 'finished_at', 'size_bytes', 'error')}
    summary['age_hours'] = round(age_s / 3600.0, 1) if isinstance(age_s, (int, float)) else None
    if backup.get('result') not in BACKUP_SUCCESS:
        summary['state'] = 'failed'
        _flag(flags, 'backup', 'critical', 'last backup %s: %s' % (backup.get('result'), backup.get('error') or 'no error given'))
    elif backup.get('verified') is not True:
        summary['state'] = 'unverified'
        _flag(flags, 'backup', 'critical', 'last backup %s is not verified' % backup.get('backup'))
    else:
        summary['state'] = 'ok'
        if summary['age_hours'] is None:
            _flag(flags, 'backup', 'critical', 'last backup has no finished_at time')
        elif summary['age_hours'] > limits['backup_max_age_hours']:
            _flag(flags, 'backup', 'critical', 'last verified backup is %sh old (> %sh)'
                  % (_fmt(summary['age_hours']), _fmt(limits['backup_max_age_hours'])))
    return summary


def resources_summary(host, limits, flags):
    """CPU, load, memory and the fullest disk; flags what is above its threshold."""
    cpu = host.get('cpu_percent')
    memory = (host.get('memory') or {}).get('percent')
    disks = [d for d in host.get('disks') or [] if 'percent' in d]
    fullest = max(disks, key=lambda d: d['percent']) if disks else None
    if cpu is not None and cpu > limits['cpu_percent']:
        _flag(flags, 'cpu', 'warning', 'CPU %s%% (> %s%%)' % (_fmt(cpu), _fmt(limits['cpu_percent'])))
    if memory is not None and memory > limits['memory_percent']:
        _flag(flags, 'memory', 'warning', 'memory %s%% (> %s%%)' % (_fmt(memory), _fmt(limits['memory_percent'])))
    for disk in disks:
        if disk['percent'] > limits['disk_percent']:
            _flag(flags, 'disk', 'critical', 'disk %s %s%% (> %s%%)' % (disk['path'], _fmt(disk['percent']), _fmt(limits['disk_percent'])))
    for disk in host.get('disks') or []:
        if 'error' in disk:
            _flag(flags, 'disk', 'warning', 'disk unreadable: %s' % disk['error'])
    for key in ('cpu_error', 'load_error'):
        if host.get(key):
            what = key.split('_', maxsplit=1)[0]
            _flag(flags, what, 'warning', '%s unreadable: %s' % (what, host[key]))
    return {'cpu_percent': cpu, 'load': host.get('load'), 'cpus': host.get('cpus'), 'memory_percent': memory,
            'disk_percent': fullest['percent'] if fullest else None, 'disk_path': fullest['path'] if fullest else None}


def node_row(entry, limits, groups=None):
    """One node's row of the report (see the module docstring for ``entry``)."""
    if not isinstance(entry, dict) or not entry.get('host'):
        raise FleetReportError('nodes: each entry must be a dict with a host name, got %r' % (entry,))
    groups = dict(DEFAULT_GROUPS, **(groups or {}))
    member = entry.get('groups') or []
    flags = []
    row = {'host': entry['host'], 'groups': sorted(member), 'address': entry.get('address')}
    status = entry.get('status')
    if not isinstance(status, dict) or 'host' not in status:
        _flag(flags, 'reachable', 'critical', 'no status: %s' % (entry.get('error') or 'node not reached'))
        row.update(reachable=False, version=None, release_id=None, release_status=None, pm2=None, cert=None, backup=None,
                   cpu_percent=None, load=None, cpus=None, memory_percent=None, disk_percent=None, disk_path=None, flags=flags)
        return row
    row['reachable'] = True
    if groups['app'] in member:
        row.update(app_summary(status.get('app'), flags))
    else:
        row.update(version=None, release_id=None, release_status=None, pm2=None)
    row['cert'] = cert_summary(entry.get('certs'), entry.get('cert_error'), limits, flags) if groups['lb'] in member else None
    row['backup'] = backup_summary(status.get('backup'), limits, flags) if groups['backup'] in member else None
    row.update(resources_summary(status['host'], limits, flags))
    row['flags'] = flags
    return row


def build_report(nodes, overrides=None, groups=None, now=None):
    """The whole report: generation time, thresholds, one row per node (sorted by host) and a summary."""
    if not isinstance(nodes, list):
        raise FleetReportError('nodes: expected a list of node entries, got %s' % type(nodes).__name__)
    limits = thresholds(overrides)
    rows = sorted((node_row(n, limits, groups) for n in nodes), key=lambda r: r['host'])
    flags = [f for r in rows for f in r['flags']]
    now = time.time() if now is None else now
    return {
        'generated_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now)),
        'thresholds': limits,
        'nodes': rows,
        'summary': {
            'nodes': len(rows),
            'flagged_nodes': sum(1 for r in rows if r['flags']),
            'critical': sum(1 for f in flags if f['severity'] == 'critical'),
            'warning': sum(1 for f in flags if f['severity'] == 'warning'),
            'ok': not flags,
        },
    }


def _cells(row):
    pm2 = row.get('pm2')
    cert = row.get('cert')
    backup = row.get('backup')
    load = row.get('load')
    if backup is None:
        backup_cell = '-'
    elif backup['state'] == 'ok':
        backup_cell = '%sh' % _fmt(backup['age_hours']) if backup.get('age_hours') is not None else '?'
    else:
        backup_cell = backup['state']
    severities = {f['severity'] for f in row['flags']}
    return {
        'host': row['host'],
        'groups': ','.join(row['groups']),
        'version': row.get('version') or '-',
        'pm2': '%d/%d' % (pm2['online'], pm2['total']) if pm2 else '-',
        'restarts': str(pm2['restarts']) if pm2 else '-',
        'app_mem': '%.0f' % (pm2['memory_bytes'] / 1048576.0) if pm2 else '-',
        'cert': str(cert['days_left']) if cert else '-',
        'backup': backup_cell,
        'cpu': _fmt(row['cpu_percent']) if row.get('cpu_percent') is not None else '-',
        'mem': _fmt(row['memory_percent']) if row.get('memory_percent') is not None else '-',
        'disk': _fmt(row['disk_percent']) if row.get('disk_percent') is not None else '-',
        'load': '/'.join('%.2f' % x for x in load) if load else '-',
        'state': 'CRITICAL' if 'critical' in severities else ('WARNING' if severities else 'ok'),
    }


def render_table(report):
    """The report as fixed-width text lines: a header, one line per node, then one line per flag."""
    cells = [_cells(r) for r in report['nodes']]
    widths = {k: max([len(title)] + [len(c[k]) for c in cells]) for k, title in TABLE_COLUMNS}
    lines = ['  '.join(title.ljust(widths[k]) for k, title in TABLE_COLUMNS).rstrip()]
    lines.append('  '.join('-' * widths[k] for k, _title in TABLE_COLUMNS))
    lines.extend('  '.join(c[k].ljust(widths[k]) for k, _title in TABLE_COLUMNS).rstrip() for c in cells)
    summary = report['summary']
    lines.append('%d node(s), %d flagged: %d critical, %d warning' % (
        summary['nodes'], summary['flagged_nodes'], summary['critical'], summary['warning']))
    for row in report['nodes']:
        lines.extend('  %s %s [%s] %s' % (f['severity'].upper(), row['host'], f['check'], f['message']) for f in row['flags'])
    return lines
