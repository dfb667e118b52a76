# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small, reusable reader of PM2 state (``pm2 jlist``).

This file is shared by every module that talks to PM2 (``health_gate``'s pm2
probe, ``pm2_app``).  It holds no module-specific logic: it runs the PM2 CLI
for one ``PM2_HOME`` and turns its JSON into plain, normalised dicts.

Usage::

    cli = Pm2Cli(binary='/usr/local/bin/pm2', pm2_home='/home/app/.pm2',
                 run_command=module.run_command)
    if cli.daemon_pid() is None:
        ...                      # daemon not running; jlist would spawn one
    procs = cli.jlist()          # [{'name': 'api', 'pm_id': 0, 'status': 'online', ...}]
    api = cli.processes('api')   # only the instances of app 'api'

``run_command`` is ``AnsibleModule.run_command`` or any callable with its
signature as far as used here: ``run_command(args, environ_update=dict) ->
(rc, stdout, stderr)``; exceptions it raises (OSError) become ``Pm2Error``.
With ``timeout``, each call is wrapped in coreutils ``timeout`` (when installed)
so that a hung daemon cannot stall the caller.

Normalised process dict (every key always present)::

    name, pm_id, pid, status, restarts, unstable_restarts, memory (bytes),
    cpu (percent), uptime_s (float, 0 when not online), exec_mode ('cluster' or
    'fork'), instances (configured count as reported by PM2, int or str such as 'max')

The raw ``pm2_env`` (which carries the application's environment, secrets
included) is never returned.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import shutil
import time

PM2_STATUSES = ('online', 'launching', 'stopping', 'stopped', 'errored', 'one-launch-status', 'waiting restart')


class Pm2Error(Exception):
    """Raised when the PM2 CLI cannot be run or its output cannot be read."""


def parse_jlist(text):
    """Parse ``pm2 jlist`` output into the raw list of process dicts.

    PM2 may print notices (e.g. ``>>>> In-memory PM2 is out-of-date``) before the
    JSON array, so the array is looked for at the start of any line.
    """
    text = (text or '').strip()
    if not text:
        return []
    candidates = [0] + [i + 1 for i, ch in enumerate(text) if ch == '\n' and text[i + 1:i + 2] == '[']
    last_error = None
    for start in candidates:
        try:
            data = json.loads(text[start:])
        except ValueError as exc:
            last_error = exc
            continue
        if isinstance(data, list):
            return data
    raise Pm2Error('pm2 jlist did not print a JSON list (%s); output starts with: %r' % (last_error, text[:200]))


def _number(value, default=0):
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def normalise_process(raw, now=None):
    """Turn one raw ``pm2 jlist`` entry into the normalised dict described in the module docstring."""
    now = time.time() if now is None else now
    env = raw.get('pm2_env') or {}
    monit = raw.get('monit') or {}
    status = env.get('status') or 'unknown'
    exec_mode = env.get('exec_mode') or 'fork_mode'
    if exec_mode.endswith('_mode'):
        exec_mode = exec_mode[:-len('_mode')]
    uptime_s = 0.0
    started_ms = env.get('pm_uptime')
    if status == 'online' and isinstance(started_ms, (int, float)) and not isinstance(started_ms, bool):
        uptime_s = max(0.0, round(now - started_ms / 1000.0, 3))
    instances = env.get('instances', 1)
    if not isinstance(instances, (int, str)) or isinstance(instances, bool):
        instances = 1
    return {
        'name': raw.get('name') or env.get('name'),
        'pm_id': _number(raw.get('pm_id', env.get('pm_id')), None),
        'pid': _number(raw.get('pid'), 0),
        'status': status,
        'restarts': _number(env.get('restart_time'), 0),
        'unstable_restarts': _number(env.get('unstable_restarts'), 0),
        'memory': _number(monit.get('memory'), 0),
        'cpu': _number(monit.get('cpu'), 0),
        'uptime_s': uptime_s,
        'exec_mode': exec_mode,
        'instances': instances,
    }


def restart_pending(raw):
    """Whether PM2 will start again a process that ``pm2 jlist`` shows as ``stopped``.

    When a process exits on its own, PM2 marks it ``stopped`` first and schedules the restart, which
    bumps ``restart_time`` only when it runs: a busy host can show that moment. PM2 restarts it unless
    ``autorestart`` is off or the exit code is one of ``stop_exit_codes`` (then ``stopped`` is final).
    """
    env = raw.get('pm2_env') or {}
    if env.get('status') != 'stopped' or env.get('autorestart') in (False, 'false'):
        return False
    codes = env.get('stop_exit_codes')
    codes = [] if codes is None else codes if isinstance(codes, list) else [codes]
    return _number(env.get('exit_code'), None) not in [_number(code, None) for code in codes]


class Pm2Cli:
    """Run the PM2 CLI for one PM2_HOME.

    :param binary: path to ``pm2`` (default: looked up on PATH).  Its directory is
        put first on PATH so that the ``node`` installed beside it is used.
    :param pm2_home: PM2_HOME; default ``~/.pm2`` of the user running the command.
    :param run_command: ``AnsibleModule.run_command``-compatible callable (required).
    :param timeout: seconds one PM2 call may take (None: no limit).
    """

    def __init__(self, binary=None, pm2_home=None, run_command=None, timeout=None):
        if run_command is None:
            raise ValueError('Pm2Cli needs a run_command callable (for example AnsibleModule.run_command)')
        self.binary = binary or shutil.which('pm2') or 'pm2'
        self.pm2_home = os.path.expanduser(pm2_home or os.path.join('~', '.pm2'))
        self._run = run_command
        self.timeout = timeout
        self._timeout_bin = shutil.which('timeout') if timeout else None

    def environ(self):
        """Environment additions for every PM2 call."""
        env = {'PM2_HOME': self.pm2_home}
        bindir = os.path.dirname(os.path.realpath(self.binary)) if os.path.sep in self.binary else ''
        linkdir = os.path.dirname(self.binary) if os.path.sep in self.binary else ''
        extra = [d for d in (linkdir, bindir) if d]
        if extra:
            env['PATH'] = os.pathsep.join(extra + [os.environ.get('PATH', os.defpath)])
        return env

    def run(self, *args):
        """Run ``pm2 ARGS...``; return (rc, stdout, stderr).  Raises Pm2Error when it cannot run or times out."""
        argv = [self.binary] + list(args)
        if self._timeout_bin:
            argv = [self._timeout_bin, '-k', '2', '%g' % self.timeout] + argv
        try:
            rc, out, err = self._run(argv, environ_update=self.environ())
        except OSError as exc:
            raise Pm2Error('cannot run %s: %s' % (self.binary, exc))
        if self._timeout_bin and rc in (124, 137):
            raise Pm2Error('pm2 %s did not finish within %gs' % (' '.join(args), self.timeout))
        return rc, out, err

    def daemon_pid(self):
        """PID of the PM2 daemon of this PM2_HOME, or None when it is not running.

        Checked through ``$PM2_HOME/pm2.pid`` so that, unlike ``pm2 jlist``, it never
        spawns a daemon.
        """
        try:
            with open(os.path.join(self.pm2_home, 'pm2.pid')) as handle:
                pid = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid  # alive, owned by another user
        return pid

    def jlist(self, now=None):
        """All processes of this PM2 daemon, normalised (see module docstring)."""
        rc, out, err = self.run('jlist')
        if rc != 0:
            raise Pm2Error('pm2 jlist failed (rc=%s): %s' % (rc, (err or out).strip()[-500:]))
        return [normalise_process(p, now=now) for p in parse_jlist(out) if isinstance(p, dict)]

    def processes(self, name, now=None):
        """The instances of app ``name`` sorted by pm_id (empty list when unknown)."""
        procs = [p for p in self.jlist(now=now) if p['name'] == name]
        return sorted(procs, key=lambda p: (p['pm_id'] is None, p['pm_id']))

    def jlist_raw(self):
        """All processes of this PM2 daemon exactly as ``pm2 jlist`` prints them (list of dicts).

        Added for ``pm2_app``, which compares the configuration PM2 runs (``pm2_env``) with the
        desired one.  The raw entries carry the application's environment, secrets included:
        never return or log them; normalise with :func:`normalise_process` for output.
        """
        rc, out, err = self.run('jlist')
        if rc != 0:
            raise Pm2Error('pm2 jlist failed (rc=%s): %s' % (rc, (err or out).strip()[-500:]))
        return [p for p in parse_jlist(out) if isinstance(p, dict)]
