# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the ``pm2_app`` module: desired state of one PM2 application.

Flow of one run (:class:`Pm2App`):

1. resolve the OS user, PM2_HOME and the pm2 binary, load and validate the ecosystem;
2. read the current state with ONE ``pm2 jlist`` (none at all when no daemon runs for the
   PM2_HOME, so that check mode, ``stopped`` and ``absent`` never spawn a daemon);
3. compute the config drift and decide the PM2 commands with :func:`plan` (a pure function
   of state x situation x drift, unit-tested as a table);
4. unless in check mode: write the generated ecosystem file (0600 in a 0700 directory under
   PM2_HOME, owned by the user), run the commands, then verify with :class:`Verifier`
   (every instance online, new pids after a restart/reload, min uptime, restart count
   stable over a window, overall timeout) and re-check that PM2 now runs the desired config.

Commands run as the app's user: either the module itself runs as that user (become), or it
runs as root with ``user`` set and every pm2 call goes through ``runuser -u USER --`` (util-linux,
present on every Debian/Ubuntu/RHEL; no ACLs or temp-file sharing needed).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import pwd
import re
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeops.stack.plugins.module_utils.pm2 import Pm2Cli, Pm2Error, normalise_process, restart_pending
from ansible_collections.nodeops.stack.plugins.module_utils.pm2_ecosystem import (
    MASK, RECREATE, RELOAD, EcosystemError, actual_config, build_desired, compute_drift, drift_kinds,
    load_ecosystem_file, ordered, redact_config, redact_drift, secret_values, select_app,
)

STATES = ('started', 'stopped', 'restarted', 'reloaded', 'absent')
PM2_LOCATIONS = ('/usr/local/bin/pm2', '/usr/bin/pm2')
RUNUSER_LOCATIONS = ('/usr/sbin/runuser', '/sbin/runuser', '/usr/bin/runuser', '/bin/runuser')
TIMEOUT_LOCATIONS = ('/usr/bin/timeout', '/bin/timeout')
GENERATED_DIR = 'nodeops'
POLL_INTERVAL = 0.25
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9._@:-]*$')
_ANSI_RE = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


class Pm2AppError(Exception):
    """A failure reported through fail_json (message plus extra result keys)."""

    def __init__(self, msg, **extra):
        super(Pm2AppError, self).__init__(msg)
        self.msg = msg
        self.extra = extra


# --------------------------------------------------------------------------- AnsibleModule glue

def _inline_secrets(params):
    eco = params.get('ecosystem')
    public = set(params.get('env_public_keys') or ())
    envs = []
    if isinstance(eco, dict):
        apps = eco.get('apps') if isinstance(eco.get('apps'), list) else [eco]
        for app in apps:
            if isinstance(app, dict) and isinstance(app.get('env'), dict):
                envs.append(app['env'])
    values = set()
    for env in envs:
        values.update(secret_values(dict((k, str(v)) for k, v in env.items() if v is not None), public))
    return values


def _redacted_params(params):
    """Module parameters with the values of every inline ``ecosystem`` env masked."""
    out = dict(params)
    eco = out.get('ecosystem')
    if isinstance(eco, dict):
        public = set(params.get('env_public_keys') or ())

        def mask(app):
            if isinstance(app, dict) and isinstance(app.get('env'), dict):
                app = dict(app)
                app['env'] = dict((k, v if k in public else MASK) for k, v in app['env'].items())
            return app
        eco = mask(eco)
        if isinstance(eco.get('apps'), list):
            eco = dict(eco)
            eco['apps'] = [mask(a) for a in eco['apps']]
        out['ecosystem'] = eco
    return out


class Pm2AppModule(AnsibleModule):
    """AnsibleModule that keeps the app's environment out of syslog, the result and ``invocation``.

    Values of an inline ``ecosystem`` env are masked structurally (all of them, except
    ``env_public_keys``) in the invocation logged to syslog/journald and returned, and the
    longer ones are added to ``no_log_values`` so that they are masked in free text too.
    """

    def _log_invocation(self):
        params = getattr(self, 'params', None) or {}
        self.no_log_values.update(_inline_secrets(params))
        original = params.get('ecosystem')
        try:
            self.params['ecosystem'] = _redacted_params(params).get('ecosystem')
            super(Pm2AppModule, self)._log_invocation()
        finally:
            self.params['ecosystem'] = original

    def exit_json(self, **kwargs):
        kwargs.setdefault('invocation', {'module_args': _redacted_params(self.params)})
        super(Pm2AppModule, self).exit_json(**kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs.setdefault('invocation', {'module_args': _redacted_params(self.params)})
        super(Pm2AppModule, self).fail_json(msg=msg, **kwargs)


# --------------------------------------------------------------------------- environment of the node

def find_pm2(binary=None, path=None):
    """Path of the pm2 executable: ``binary`` if given, else PATH, else PM2_LOCATIONS."""
    if binary:
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary
        raise Pm2AppError("pm2_binary: expected an executable PM2 CLI on the managed node, '%s' %s" % (
            binary, 'is not executable' if os.path.exists(binary) else 'does not exist'))
    found = shutil.which('pm2', path=path if path is not None else os.environ.get('PATH', os.defpath))
    if found:
        return found
    for candidate in PM2_LOCATIONS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise Pm2AppError('pm2_binary: PM2 was not found on the managed node (looked on PATH and in %s); install PM2 '
                      '(npm install -g pm2) or set pm2_binary to the path of the pm2 executable' % ', '.join(PM2_LOCATIONS))


def find_tool(name, locations=()):
    """Path of a helper executable (PATH, then ``locations``), or None."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in locations:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class UserContext:
    """The OS user PM2 runs as, and whether commands must switch to it (``runuser``)."""

    def __init__(self, name, uid, gid, home, switch):
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.switch = switch

    @classmethod
    def resolve(cls, user=None, euid=None, getpwnam=pwd.getpwnam, getpwuid=pwd.getpwuid):
        euid = os.geteuid() if euid is None else euid
        try:
            me = getpwuid(euid)
        except KeyError:
            me = None
        if not user:
            if me is None:
                raise Pm2AppError('user: the module runs as uid %d, which has no passwd entry; set user and pm2_home' % euid)
            return cls(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir, False)
        try:
            entry = getpwnam(user)
        except KeyError:
            raise Pm2AppError("user: expected an existing OS user on the managed node, '%s' was not found" % user)
        if entry.pw_uid == euid:
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, False)
        if euid != 0:
            raise Pm2AppError("user: switching to '%s' needs root, but the module runs as '%s'; use become: true (root) "
                              "with user, or become_user: %s without user" % (user, me.pw_name if me else euid, user))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, True)


def command_runner(ctx, timeout, run_command, runuser=None, timeout_bin=None):
    """A ``run_command``-compatible callable for Pm2Cli: clean environment, cwd '/', a timeout, ``runuser`` when switching.

    The command becomes ``[runuser -u USER --] [timeout -k 10 SECONDS] env -i VAR=... pm2 ARGS`` and runs through
    ``run_command`` (``AnsibleModule.run_command``). ``env -i`` builds the environment from scratch (PATH, HOME, USER,
    LOGNAME, LANG, LC_ALL, TZ, plus PM2_HOME and PATH from Pm2Cli) so that neither the module's nor Ansible's
    environment leaks into the PM2 daemon or the app. Secrets never appear on the command line: the app env only
    travels in the generated ecosystem file.
    """

    def run(args, environ_update=None, **_kwargs):
        env = {'HOME': ctx.home, 'USER': ctx.name, 'LOGNAME': ctx.name, 'LANG': os.environ.get('LANG') or 'C.UTF-8',
               'PATH': os.environ.get('PATH') or os.defpath}
        for key in ('LC_ALL', 'TZ'):
            if os.environ.get(key):
                env[key] = os.environ[key]
        env.update(environ_update or {})
        cmd = ['env', '-i'] + ['%s=%s' % (k, env[k]) for k in sorted(env)] + list(args)
        if timeout_bin and timeout:
            cmd = [timeout_bin, '-k', '10', '%g' % timeout] + cmd
        if ctx.switch:
            if not runuser:
                raise Pm2Error('runuser (util-linux) was not found; it is needed to run pm2 as %s' % ctx.name)
            cmd = [runuser, '-u', ctx.name, '--'] + cmd
        try:
            rc, out, err = run_command(cmd, cwd='/', expand_user_and_vars=False)
        except (OSError, IOError) as exc:
            raise Pm2Error('cannot run %s: %s' % (cmd[0], exc))
        if timeout_bin and timeout and rc in (124, 137):
            raise Pm2Error('pm2 %s did not finish within %ss (command_timeout)' % (' '.join(args[1:3]), timeout))
        return rc, out, err

    return run


def tail_lines(path, count, max_bytes=262144):
    """Last ``count`` lines of a text file (ANSI colours removed); [] when unreadable."""
    if count <= 0 or not path:
        return []
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except (IOError, OSError):
        return []
    lines = _ANSI_RE.sub('', data.decode('utf-8', 'replace')).splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # first line is probably cut
    return lines[-count:]


def clean_output(text, limit=1500):
    text = _ANSI_RE.sub('', text or '').strip()
    return text if len(text) <= limit else '...' + text[-limit:]


# --------------------------------------------------------------------------- situation and plan

def app_name(raw):
    return raw.get('name') or (raw.get('pm2_env') or {}).get('name')


def summarise(procs):
    """'absent', 'online', 'stopped' or 'mixed' for the normalised processes of one app."""
    if not procs:
        return 'absent'
    statuses = set(p['status'] for p in procs)
    if statuses == {'online'}:
        return 'online'
    if statuses == {'stopped'}:
        return 'stopped'
    return 'mixed'


class Plan:
    """What to do: ``steps`` (tuples naming pm2 commands), whether to verify, and why."""

    def __init__(self, steps=None, verify=False, new_pids=False, reason=''):
        self.steps = list(steps or [])
        self.verify = verify
        self.new_pids = new_pids
        self.reason = reason

    def as_dict(self):
        return {'steps': [list(s) for s in self.steps], 'verify': self.verify, 'new_pids': self.new_pids, 'reason': self.reason}


def _graceful_apply(count, desired_count, kinds, force_reload):
    """Steps applying reload/scale drift to an online app without stopping it."""
    steps = []
    scale_down = desired_count is not None and desired_count < count
    scale_up = desired_count is not None and desired_count > count
    if scale_down:
        steps.append(('scale', desired_count))
    if RELOAD in kinds:
        steps.append(('reload_eco',))
    elif force_reload:
        steps.append(('reload',))
    if scale_up:
        steps.append(('scale', desired_count))
    return steps


def plan(state, status, drift, have_config, count=0, desired_count=None, only_if_changed=False, strategy='graceful'):
    """Decide the PM2 commands (a pure function; see the module documentation for the table).

    :param status: 'absent', 'online', 'stopped' or 'mixed' (see :func:`summarise`).
    :param drift: list from :func:`compute_drift` ([] without a desired config).
    :param count: number of processes now; ``desired_count``: wanted (None without config).
    :raises Pm2AppError: when the app must be created but there is no ecosystem.
    """
    kinds = drift_kinds(drift)
    recreate = bool(drift) and (RECREATE in kinds or strategy == 'recreate')

    def need_config(verb):
        if not have_config:
            raise Pm2AppError('ecosystem: the app is not known to PM2, so an ecosystem or ecosystem_file is needed to %s it '
                              '(expected a definition with at least script; got neither option)' % verb)

    if state == 'absent':
        if status == 'absent':
            return Plan(reason='the app is absent')
        return Plan([('delete',)], reason='the app exists (%s)' % status)
    if state == 'stopped':
        if status in ('absent', 'stopped'):
            return Plan(reason='the app is %s' % status)
        return Plan([('stop',)], reason='the app is %s' % status)
    if status == 'absent':
        need_config('start')
        return Plan([('start',)], verify=True, reason='the app is absent')

    if state == 'started':
        if status == 'online':
            if not drift:
                return Plan(reason='the app is online with the desired config')
            if recreate:
                return Plan([('delete',), ('start',)], verify=True, new_pids=True,
                            reason='config drift that PM2 cannot apply in place' if strategy != 'recreate' else 'config drift')
            return Plan(_graceful_apply(count, desired_count, kinds, False), verify=True, new_pids=RELOAD in kinds,
                        reason='config drift')
        if drift:
            return Plan([('delete',), ('start',)], verify=True, new_pids=True, reason='the app is %s, with config drift' % status)
        return Plan([('restart',) if status == 'stopped' else ('reload',)], verify=True, new_pids=True,
                    reason='the app is %s' % status)

    if state == 'restarted':
        if only_if_changed and status == 'online' and not drift:
            return Plan(reason='only_if_changed: the app is online with the desired config')
        if drift:
            return Plan([('delete',), ('start',)], verify=True, new_pids=True, reason='restart with config drift')
        return Plan([('restart',)], verify=True, new_pids=True, reason='restart requested')

    # reloaded
    if only_if_changed and status == 'online' and not drift:
        return Plan(reason='only_if_changed: the app is online with the desired config')
    if drift and (recreate or status != 'online'):
        return Plan([('delete',), ('start',)], verify=True, new_pids=True,
                    reason='config drift that PM2 cannot apply by a reload' if status == 'online' else
                    'the app is %s, with config drift' % status)
    if drift:
        steps = _graceful_apply(count, desired_count, kinds, not only_if_changed)
        return Plan(steps, verify=True, new_pids=any(s[0] in ('reload', 'reload_eco') for s in steps), reason='config drift')
    return Plan([('reload',)], verify=True, new_pids=True, reason='reload requested' if status == 'online' else 'the app is %s' % status)


# --------------------------------------------------------------------------- verification

class Verifier:
    """Wait until the app runs as desired, or fail fast on a crash loop.

    Passes when, in one poll, there are ``expected`` instances, all ``online`` with a pid, none
    with a pid from ``old_pids``, each up for at least ``min_uptime`` seconds, and the (pid,
    restart count) of every instance has not changed for ``stability_window`` seconds.

    Fails at once when an instance is ``errored``, or ``stopped`` (it exited and PM2 will not restart
    it), or its restart count rises above what the first poll saw, or it is ``stopped`` with PM2's
    restart of it pending (either way it exited on its own after the action: a crash), and at
    ``timeout`` seconds otherwise.  One ``pm2 jlist`` per poll through ``read()``.
    """

    def __init__(self, read, expected, old_pids=(), min_uptime=2.0, stability_window=3.0, timeout=60.0,
                 clock=time.monotonic, sleep=time.sleep, wallclock=time.time, poll=POLL_INTERVAL):
        self.read = read
        self.expected = expected
        self.old_pids = set(p for p in old_pids if p)
        self.min_uptime = min_uptime
        self.stability_window = stability_window
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.wallclock = wallclock
        self.poll = poll

    def run(self):
        """Return a dict: passed, reason ('ok', 'crash', 'errored', 'exited', 'timeout'), message, elapsed, polls, raw, processes."""
        start = self.clock()
        deadline = start + self.timeout
        baseline = {}
        stable_since = None
        snapshot = None
        message = 'no observation yet'
        polls = 0
        while True:
            raw = sorted(self.read(), key=lambda p: (not isinstance(p.get('pm_id'), int), p.get('pm_id')))
            polls += 1
            now = self.clock()
            procs = [normalise_process(p, now=self.wallclock()) for p in raw]

            def result(passed, reason, msg):
                return {'passed': passed, 'reason': reason, 'message': msg, 'elapsed': round(now - start, 3),
                        'polls': polls, 'raw': raw, 'processes': procs}

            for entry, proc in zip(raw, procs):
                before = baseline.setdefault(proc['pm_id'], proc['restarts'])
                if proc['restarts'] > before:
                    return result(False, 'crash', 'pm_id %s was restarted by PM2 %d time(s) after the action (restarts %d -> %d): '
                                  'the app is crash-looping' % (proc['pm_id'], proc['restarts'] - before, before, proc['restarts']))
                if restart_pending(entry):
                    return result(False, 'crash', 'pm_id %s exited (exit code %s) after the action and PM2 is starting it again: '
                                  'the app is crash-looping' % (proc['pm_id'], (entry.get('pm2_env') or {}).get('exit_code')))
                if proc['status'] == 'errored':
                    return result(False, 'errored', 'pm_id %s is errored (PM2 gave up restarting it after %d restart(s))' % (
                        proc['pm_id'], proc['restarts']))
                if proc['status'] == 'stopped':
                    return result(False, 'exited', 'pm_id %s exited and PM2 does not restart it (autorestart false, or an '
                                  'exit code listed in stop_exit_codes)' % proc['pm_id'])
            problems = []
            if len(procs) != self.expected:
                problems.append('expected %d instance(s), found %d' % (self.expected, len(procs)))
            waiting = ['pm_id %s is %s' % (p['pm_id'], p['status']) for p in procs if p['status'] != 'online' or not p['pid']]
            if waiting:
                problems.append('expected every instance online, ' + ', '.join(waiting))
            stale = ['pm_id %s still has pid %s' % (p['pm_id'], p['pid']) for p in procs if p['pid'] in self.old_pids]
            if stale:
                problems.append('expected new pids, ' + ', '.join(stale))
            if problems:
                stable_since = snapshot = None
                message = '; '.join(problems)
            else:
                snap = dict((p['pm_id'], (p['pid'], p['restarts'])) for p in procs)
                if snap != snapshot:
                    snapshot, stable_since = snap, now
                young = ['pm_id %s up %.1fs' % (p['pm_id'], p['uptime_s']) for p in procs if p['uptime_s'] < self.min_uptime]
                stable_for = now - stable_since
                if not young and stable_for >= self.stability_window:
                    return result(True, 'ok', '%d instance(s) online, up >= %ss, no restart for %.1fs' % (
                        len(procs), self.min_uptime, stable_for))
                message = 'waiting for min_uptime %ss (%s) and a stability_window of %ss (stable for %.1fs)' % (
                    self.min_uptime, ', '.join(young) or 'reached', self.stability_window, stable_for)
            if now >= deadline:
                return result(False, 'timeout', 'not verified within wait_timeout %ss: %s' % (self.timeout, message))
            self.sleep(max(0.0, min(self.poll, deadline - now)))


def process_table(procs):
    if not procs:
        return '(no process)'
    lines = ['pm_id  pid      status     restarts  uptime_s']
    for p in procs:
        lines.append('%-6s %-8s %-10s %-9s %s' % (p['pm_id'], p['pid'], p['status'], p['restarts'], p['uptime_s']))
    return '\n'.join(lines)


def public_process(proc, count):
    """The process dict returned by the module."""
    return {
        'name': proc['name'], 'pm_id': proc['pm_id'], 'pid': proc['pid'], 'status': proc['status'],
        'restarts': proc['restarts'], 'unstable_restarts': proc['unstable_restarts'], 'memory': proc['memory'],
        'cpu': proc['cpu'], 'uptime': proc['uptime_s'], 'exec_mode': proc['exec_mode'], 'instances': count,
    }


# --------------------------------------------------------------------------- the runner

class Pm2App:
    """One run of the module. ``run()`` returns the result dict or raises :class:`Pm2AppError`."""

    def __init__(self, params, check_mode=False, diff=False, runner=None, clock=time.monotonic, sleep=time.sleep,
                 wallclock=time.time, cpu_count=None, euid=None, add_secrets=None, run_command=None):
        self.params = params
        self.run_command = run_command
        self.check_mode = check_mode
        self.diff = diff
        self.runner = runner
        self.clock = clock
        self.sleep = sleep
        self.wallclock = wallclock
        self.cpu_count = cpu_count
        self.euid = euid
        self.add_secrets = add_secrets or (lambda values: None)
        self.actions = []
        self.public = set(params.get('env_public_keys') or ())
        self.ctx = self.cli = self.desired = self.eco_path = None
        self.pm2_home = None

    # ---- setup
    def _validate(self):
        p = self.params
        name = p['name']
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in ('all', 'Infinity'):
            raise Pm2AppError("name: expected a PM2 app name (a letter or '_' first, then letters, digits, '.', '_', '-', "
                              "'@' or ':'; not 'all'), got %r" % (name,))
        if p['state'] not in STATES:
            raise Pm2AppError('state: expected one of %s, got %r' % (', '.join(STATES), p['state']))
        for key in ('wait_timeout', 'min_uptime', 'stability_window'):
            if p[key] is not None and p[key] < 0:
                raise Pm2AppError('%s: expected a number of seconds >= 0, got %s' % (key, p[key]))
        if p['command_timeout'] is not None and p['command_timeout'] <= 0:
            raise Pm2AppError('command_timeout: expected a number of seconds > 0, got %s' % p['command_timeout'])
        if p['log_lines'] is not None and p['log_lines'] < 0:
            raise Pm2AppError('log_lines: expected an integer >= 0, got %s' % p['log_lines'])
        if p.get('ecosystem') is not None and p.get('ecosystem_file') is not None:
            raise Pm2AppError('ecosystem, ecosystem_file: expected one of them, got both (they are mutually exclusive)')
        if p.get('revision') is not None and p.get('ecosystem') is None and p.get('ecosystem_file') is None:
            raise Pm2AppError('revision: needs ecosystem or ecosystem_file (the revision is stored in the app env as '
                              'NODEOPS_REVISION and applied with the rest of the config)')

    def _desired(self, pm2_home):
        p = self.params
        if p.get('ecosystem') is None and p.get('ecosystem_file') is None:
            return None, None
        if p.get('ecosystem') is not None:
            data, label, base = p['ecosystem'], 'ecosystem', None
        else:
            path = os.path.abspath(p['ecosystem_file'])
            data, label, base = load_ecosystem_file(path), 'ecosystem_file', os.path.dirname(path)
        app = select_app(data, p['name'], label)
        if isinstance(app, dict) and isinstance(app.get('env'), dict):
            self.add_secrets(secret_values(dict((k, str(v)) for k, v in app['env'].items() if v is not None), self.public))
        check = p['state'] in ('started', 'restarted', 'reloaded')
        return build_desired(app, p['name'], pm2_home, revision=p.get('revision'), cpu_count=self.cpu_count,
                             base_dir=base, label=label, check_paths=check)

    # ---- pm2 calls
    def _cmd(self, *args):
        self.actions.append(' '.join(['pm2'] + [str(a) for a in args]))
        try:
            rc, out, err = self.cli.run(*[str(a) for a in args])
        except Pm2Error as exc:
            raise Pm2AppError('pm2 %s failed: %s' % (' '.join(str(a) for a in args), exc), actions=self.actions)
        if rc != 0:
            raise Pm2AppError('pm2 %s failed (rc=%s): %s' % (' '.join(str(a) for a in args), rc, clean_output(err or out)),
                              actions=self.actions)
        return out

    def _read(self):
        try:
            return [p for p in self.cli.jlist_raw() if app_name(p) == self.params['name']]
        except Pm2Error as exc:
            raise Pm2AppError(str(exc), actions=self.actions)

    def _write_ecosystem(self, entry):
        """Write the generated ecosystem file; return its path."""
        home = self.pm2_home
        directory = os.path.join(home, GENERATED_DIR)
        path = os.path.join(directory, '%s.ecosystem.json' % self.params['name'])
        try:
            if not os.path.isdir(home):
                os.mkdir(home, 0o700)
                if self.ctx.switch:
                    os.chown(home, self.ctx.uid, self.ctx.gid)
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o700)
            if self.ctx.switch:
                os.chown(directory, self.ctx.uid, self.ctx.gid)
            os.chmod(directory, 0o700)
            fd, tmp = tempfile.mkstemp(prefix='.%s.' % self.params['name'], dir=directory)
            try:
                with os.fdopen(fd, 'w') as handle:
                    os.fchmod(handle.fileno(), 0o600)
                    if self.ctx.switch:
                        os.fchown(handle.fileno(), self.ctx.uid, self.ctx.gid)
                    json.dump({'apps': [entry]}, handle, indent=2, sort_keys=True)
                    handle.write('\n')
                os.rename(tmp, path)
            except Exception:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except (IOError, OSError) as exc:
            raise Pm2AppError("pm2_home: cannot write the generated ecosystem file '%s': %s" % (path, exc.strerror or exc))
        return path

    def _run_step(self, step):
        name = self.params['name']
        kind = step[0]
        if kind == 'start':
            self._cmd('start', self.eco_path)
        elif kind == 'reload_eco':
            self._cmd('reload', self.eco_path, '--update-env')
        elif kind == 'scale':
            self._cmd('scale', name, step[1])
        else:  # delete, stop, restart, reload
            self._cmd(kind, name)

    def _error_log(self, raw):
        paths = []
        for proc in raw:
            path = (proc.get('pm2_env') or {}).get('pm_err_log_path')
            if path and path not in paths:
                paths.append(path)
        if not paths and self.desired:
            paths = [self.desired['error_file']]
        lines = []
        for path in paths:
            chunk = tail_lines(path, self.params['log_lines'])
            if len(paths) > 1:
                chunk = ['[%s] %s' % (os.path.basename(path), line) for line in chunk]
            lines.extend(chunk)
        return paths, lines[-self.params['log_lines']:] if self.params['log_lines'] else []

    # ---- main
    def run(self):
        p = self.params
        self._validate()
        self.ctx = UserContext.resolve(p.get('user'), euid=self.euid)
        self.pm2_home = os.path.abspath(os.path.expanduser(p['pm2_home'])) if p.get('pm2_home') else os.path.join(self.ctx.home, '.pm2')
        binary = find_pm2(p.get('pm2_binary'))
        runuser = find_tool('runuser', RUNUSER_LOCATIONS) if self.ctx.switch else None
        if self.ctx.switch and not self.runner and not runuser:
            raise Pm2AppError("user: runuser (util-linux) was not found on the managed node; it is needed to run pm2 as '%s' "
                              "from root (or use become_user: %s without user)" % (self.ctx.name, self.ctx.name))
        runner = self.runner or command_runner(self.ctx, p['command_timeout'], self.run_command, runuser=runuser,
                                               timeout_bin=find_tool('timeout', TIMEOUT_LOCATIONS))
        self.cli = Pm2Cli(binary=binary, pm2_home=self.pm2_home, run_command=runner)
        try:
            self.desired, entry = self._desired(self.pm2_home)
        except EcosystemError as exc:
            raise Pm2AppError(str(exc))

        # ONE jlist for the decision (none when no daemon runs: nothing can exist then).
        raw = self._read() if self.cli.daemon_pid() is not None else []
        now = self.wallclock()
        before_procs = [normalise_process(r, now=now) for r in sorted(raw, key=lambda r: r.get('pm_id', 0))]
        status = summarise(before_procs)
        actual = actual_config(raw, self.desired)
        if actual:
            self.add_secrets(secret_values(actual['env'], self.public))  # the values PM2 runs with are secrets too
        drift = compute_drift(self.desired, actual) if self.desired else []
        decision = plan(p['state'], status, drift, self.desired is not None, count=len(raw),
                        desired_count=self.desired['instances'] if self.desired else None,
                        only_if_changed=p['only_if_changed'], strategy=p['update_strategy'])
        changed = bool(decision.steps)
        changed_env = set(d['key'][4:] for d in drift if d['key'].startswith('env.'))
        result = {
            'changed': changed,
            'state': p['state'],
            'status': status,
            'pm2_home': self.pm2_home,
            'user': self.ctx.name,
            'drift': redact_drift(drift, self.public),
            'plan': decision.as_dict(),
            'actions': self.actions,
            'ecosystem': ordered(redact_config(entry, self.public)) if entry else None,
            'ecosystem_path': None,
            'processes': [public_process(x, len(before_procs)) for x in before_procs],
        }
        if self.diff:
            result['diff'] = self._diff(status, actual, changed_env)
        if self.check_mode or not decision.steps:
            result['msg'] = self._message(decision, changed, status)
            return result

        if any(s[0] in ('start', 'reload_eco') for s in decision.steps):
            self.eco_path = result['ecosystem_path'] = self._write_ecosystem(entry)
        old_pids = [x['pid'] for x in before_procs] if decision.new_pids else []
        for step in decision.steps:
            self._run_step(step)

        verification = None
        if decision.verify and p['verify']:
            expected = self.desired['instances'] if self.desired else (len(before_procs) or 1)
            verifier = Verifier(self._read, expected, old_pids=old_pids, min_uptime=p['min_uptime'],
                                stability_window=p['stability_window'], timeout=p['wait_timeout'],
                                clock=self.clock, sleep=self.sleep, wallclock=self.wallclock)
            outcome = verifier.run()
            after_raw = outcome.pop('raw')
            after_procs = outcome.pop('processes')
            verification = outcome
            if not outcome['passed']:
                paths, lines = self._error_log(after_raw)
                msg = ("app '%s' failed verification after %s: %s\n%s" % (
                    p['name'], ', '.join(self.actions), outcome['message'], process_table(after_procs)))
                if lines:
                    msg += '\nlast %d line(s) of %s:\n%s' % (len(lines), ', '.join(paths), '\n'.join(lines))
                elif paths:
                    msg += '\n(error log %s is empty or unreadable)' % ', '.join(paths)
                result.update(verification=verification, error_log=paths, log_lines=lines,
                              processes=[public_process(x, len(after_procs)) for x in after_procs])
                raise Pm2AppError(msg, **result)
            if self.desired:
                left = compute_drift(self.desired, actual_config(after_raw, self.desired))
                if left:
                    result.update(verification=verification, processes=[public_process(x, len(after_procs)) for x in after_procs])
                    raise Pm2AppError("app '%s': PM2 did not apply %s after %s (state %s); use update_strategy=recreate" % (
                        p['name'], ', '.join(d['key'] for d in redact_drift(left, self.public)), ', '.join(self.actions),
                        p['state']), **result)
        else:
            after_raw = self._read()
            now = self.wallclock()
            after_procs = [normalise_process(r, now=now) for r in sorted(after_raw, key=lambda r: r.get('pm_id', 0))]
            self._check_settled(p['state'], after_procs, result)
        if p['save']:
            self._cmd('save', '--force')
        result['verification'] = verification
        result['processes'] = [public_process(x, len(after_procs)) for x in after_procs]
        result['status'] = summarise(after_procs)
        result['msg'] = self._message(decision, changed, status)
        return result

    def _check_settled(self, state, procs, result):
        if state == 'absent' and procs:
            raise Pm2AppError("app '%s' is still listed by PM2 after %s:\n%s" % (
                self.params['name'], ', '.join(self.actions), process_table(procs)), **result)
        if state == 'stopped' and any(x['status'] != 'stopped' for x in procs):
            raise Pm2AppError("app '%s' is not stopped after %s:\n%s" % (
                self.params['name'], ', '.join(self.actions), process_table(procs)), **result)

    def _message(self, decision, changed, status):
        verb = 'would run' if self.check_mode else 'ran'
        if not changed:
            return "app '%s': nothing to do (%s)" % (self.params['name'], decision.reason)
        steps = ', '.join(' '.join(str(x) for x in s) for s in decision.steps)
        return "app '%s' was %s: %s %s (%s)" % (self.params['name'], status, verb, steps, decision.reason)

    def _diff(self, status, actual, changed_env):
        state = self.params['state']
        before = dict(redact_config(actual, self.public) or {})
        before['status'] = status
        if state == 'absent':
            after = {'status': 'absent'}
        elif state == 'stopped':
            after = dict(before)
            after['status'] = 'absent' if status == 'absent' else 'stopped'
        else:
            after = dict(redact_config(self.desired, self.public, changed_env) if self.desired else before)
            for key in ('interpreter', 'revision'):  # not managed unless given
                if after.get(key) is None and before.get(key) is not None:
                    after[key] = before[key]
            after['status'] = 'online'
        header = '%s (PM2_HOME %s)' % (self.params['name'], self.pm2_home)
        return {'before': ordered(before, True), 'after': ordered(after, True), 'before_header': header, 'after_header': header}


def run_module(module, **kwargs):
    """Run :class:`Pm2App` for an AnsibleModule and exit_json/fail_json; never returns."""
    app = Pm2App(module.params, check_mode=module.check_mode, diff=module._diff,
                 add_secrets=module.no_log_values.update, run_command=module.run_command, **kwargs)
    try:
        result = app.run()
    except Pm2AppError as exc:
        extra = dict(exc.extra)
        extra.setdefault('actions', app.actions)
        extra.pop('msg', None)
        extra.pop('failed', None)
        module.fail_json(msg=exc.msg, **extra)
    except Pm2Error as exc:
        module.fail_json(msg=str(exc), actions=app.actions)
    module.exit_json(**result)
