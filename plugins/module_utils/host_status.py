# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only status of one managed host, for the ``host_status`` module (and ``playbooks/status.yml``).

Everything here only reads: ``/proc`` (load, CPU, memory), ``statvfs`` (disks), the
release layout of the app (``current`` link and its ``.nodeops-release.json``
manifest, through :mod:`releases`), the app's own ``/version`` endpoint, PM2
(``pm2 jlist`` as the app user through :mod:`pm2_app`'s runner, never when no daemon
runs, so no daemon is ever spawned) and the backup role's ``last-run.json``.

Each reader returns plain dicts and reports what it could not read as an ``error``
string instead of raising, so that one unreadable part never hides the rest of the
report. Thresholds and flags are not decided here but on the controller
(:mod:`fleet_report`), where the load balancers' certificate data joins in.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import time

from ansible.module_utils.urls import open_url

from ansible_collections.nodeops.stack.plugins.module_utils.pm2 import Pm2Cli, Pm2Error
from ansible_collections.nodeops.stack.plugins.module_utils.pm2_app import (
    RUNUSER_LOCATIONS, TIMEOUT_LOCATIONS, Pm2AppError, UserContext, command_runner, find_pm2, find_tool,
)
from ansible_collections.nodeops.stack.plugins.module_utils.releases import current_release_id, read_manifest

# Fields of the backup role's last-run.json (the contract of issue #8).
BACKUP_FIELDS = ('result', 'started_at', 'finished_at', 'verified', 'backup', 'size_bytes', 'error')
# Fields of a release manifest worth reporting (never the whole history).
MANIFEST_FIELDS = ('release_id', 'version', 'git_sha', 'status', 'deployed_at', 'deployed_by')


def percent(part, whole):
    """``part`` as a percentage of ``whole``, one decimal; 0.0 when ``whole`` is 0."""
    return round(100.0 * part / whole, 1) if whole else 0.0


def read_loadavg(path='/proc/loadavg'):
    """The 1, 5 and 15 minute load averages."""
    with open(path) as handle:
        fields = handle.read().split()
    return [float(x) for x in fields[:3]]


def read_meminfo(path='/proc/meminfo'):
    """Total and available memory in bytes and the used share (100 - available/total), like ``free``."""
    values = {}
    with open(path) as handle:
        for line in handle:
            key, _sep, rest = line.partition(':')
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * (1024 if parts[1:2] == ['kB'] else 1)
    total = values.get('MemTotal', 0)
    available = values.get('MemAvailable', values.get('MemFree', 0))
    return {'total_bytes': total, 'available_bytes': available, 'percent': percent(total - available, total)}


def read_cpu_times(path='/proc/stat'):
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat; iowait counts as idle."""
    with open(path) as handle:
        fields = handle.readline().split()
    if not fields or fields[0] != 'cpu':
        raise ValueError('%s does not start with the aggregate cpu line' % path)
    values = [int(x) for x in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest and guest_nice (fields 9, 10) are already included in user and nice.
    total = sum(values[:8])
    return total - idle, total


def cpu_percent(sample_seconds, reader=read_cpu_times, sleep=time.sleep):
    """Share of CPU time spent busy over ``sample_seconds`` (all CPUs together, 0-100)."""
    busy1, total1 = reader()
    sleep(sample_seconds)
    busy2, total2 = reader()
    return percent(max(0, busy2 - busy1), max(0, total2 - total1))


def disk_usage(path, statvfs=os.statvfs):
    """Usage of the filesystem holding ``path``, computed like df's Use% (used / (used + available to users))."""
    st = statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    used = total - free
    return {'path': path, 'total_bytes': total, 'available_bytes': avail, 'percent': percent(used, used + avail)}


def host_resources(disk_paths, sample_seconds, cpu_count=os.cpu_count, reader=read_cpu_times, sleep=time.sleep,
                   loadavg=read_loadavg, meminfo=read_meminfo, statvfs=os.statvfs):
    """CPU (sampled), load, memory and disks; any part that cannot be read carries an ``error`` instead."""
    result = {'cpus': cpu_count() or 1}
    try:
        result['load'] = loadavg()
    except (OSError, ValueError) as exc:
        result['load'] = None
        result['load_error'] = str(exc)
    try:
        result['cpu_percent'] = cpu_percent(sample_seconds, reader=reader, sleep=sleep)
    except (OSError, ValueError, IndexError) as exc:
        result['cpu_percent'] = None
        result['cpu_error'] = str(exc)
    try:
        result['memory'] = meminfo()
    except (OSError, ValueError) as exc:
        result['memory'] = {'error': str(exc)}
    disks = []
    for path in disk_paths:
        try:
            disks.append(disk_usage(path, statvfs=statvfs))
        except OSError as exc:
            disks.append({'path': path, 'error': '%s: %s' % (path, exc.strerror or exc)})
    result['disks'] = disks
    return result


def read_backup_status(path, now=None):
    """The backup role's last-run record: ``{present: false}`` when absent, else its contract fields plus ``age_s``.

    ``age_s`` is the time since ``finished_at`` (epoch seconds); null when that is missing or not a number.
    """
    now = time.time() if now is None else now
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError) as exc:
        if getattr(exc, 'errno', None) == 2:
            return {'present': False, 'path': path}
        return {'present': True, 'path': path, 'read_error': '%s: %s' % (path, exc.strerror or exc)}
    except ValueError as exc:
        return {'present': True, 'path': path, 'read_error': '%s is not valid JSON: %s' % (path, exc)}
    if not isinstance(data, dict):
        return {'present': True, 'path': path, 'read_error': '%s: expected a JSON object, got %s' % (path, type(data).__name__)}
    result = {'present': True, 'path': path}
    result.update((key, data.get(key)) for key in BACKUP_FIELDS)
    finished = data.get('finished_at')
    numeric = isinstance(finished, (int, float)) and not isinstance(finished, bool)
    result['age_s'] = round(max(0.0, now - finished), 1) if numeric else None
    return result


def fetch_version(url, timeout, opener=open_url):
    """``(version, error)`` from the app's version endpoint (JSON with a ``version`` key)."""
    try:
        resp = opener(url, method='GET', timeout=timeout, validate_certs=True, follow_redirects='none')
        body = json.loads(resp.read())
    except Exception as exc:  # pylint: disable=broad-except  # any failure of the probe is reported, not raised
        return None, '%s: %s' % (url, exc)
    version = body.get('version') if isinstance(body, dict) else None
    if not isinstance(version, str) or not version:
        return None, '%s: no "version" string in the answer' % url
    return version, None


def release_status(current_link):
    """The release ``current`` points at and the fields of its manifest (none for a bootstrap release)."""
    release_id = current_release_id(current_link)
    if release_id is None:
        return {'release_id': None, 'manifest': None}
    manifest = read_manifest(os.path.realpath(current_link))
    fields = {k: manifest.get(k) for k in MANIFEST_FIELDS} if manifest else None
    return {'release_id': release_id, 'manifest': fields}


def pm2_processes(app_name, user, pm2_home, pm2_binary, timeout, run_command):
    """``(processes, error)``: the app's PM2 processes (normalised, no environment), read as the app user.

    The daemon is never started: when its pid file names no live process the error says so.
    """
    try:
        ctx = UserContext.resolve(user)
        binary = find_pm2(pm2_binary)
        runuser = find_tool('runuser', RUNUSER_LOCATIONS) if ctx.switch else None
        runner = command_runner(ctx, timeout, run_command, runuser=runuser, timeout_bin=find_tool('timeout', TIMEOUT_LOCATIONS))
        cli = Pm2Cli(binary=binary, pm2_home=pm2_home or os.path.join(ctx.home, '.pm2'), run_command=runner)
        if cli.daemon_pid() is None:
            return [], 'PM2 daemon of %s is not running (PM2_HOME %s); not started by a read-only check' % (ctx.name, cli.pm2_home)
        procs = [p for p in cli.jlist() if p['name'] and (p['name'] == app_name or p['name'].startswith(app_name + '-'))]
    except Pm2AppError as exc:
        return [], exc.msg
    except Pm2Error as exc:
        return [], str(exc)
    return sorted(procs, key=lambda p: (p['name'], p['pm_id'] is None, p['pm_id'])), None


def app_status(params, run_command, opener=open_url):
    """Release, running version and PM2 processes of the app named in ``params``."""
    name = params['app_name']
    root = params.get('app_root') or '/srv/%s' % name
    current_link = params.get('current_link') or os.path.join(root, 'current')
    result = {'name': name, 'current_link': current_link}
    result.update(release_status(current_link))
    if params.get('version_url'):
        result['running_version'], result['version_error'] = fetch_version(params['version_url'], params['timeout'], opener=opener)
    procs, error = pm2_processes(name, params.get('app_user') or name, params.get('pm2_home'), params.get('pm2_binary'),
                                 params['timeout'], run_command)
    result['processes'] = procs
    result['pm2_error'] = error
    return result


def host_status(params, run_command, now=None, opener=open_url, **resource_kwargs):
    """Everything the module returns, keyed ``host``, ``app`` (or null) and ``backup`` (or null)."""
    result = {'host': host_resources(params['disk_paths'], params['cpu_sample_seconds'], **resource_kwargs)}
    result['app'] = app_status(params, run_command, opener=opener) if params.get('app_name') else None
    result['backup'] = read_backup_status(params['backup_status_path'], now=now) if params.get('backup_status_path') else None
    return result
