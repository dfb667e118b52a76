# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ecosystem definitions for ``pm2_app``: validation, normalisation, drift detection, redaction.

Two views of one application's configuration are built in the same *canonical* shape so
that they can be compared key by key:

* :func:`build_desired` turns the user's ecosystem entry (inline dict or JSON/YAML file)
  into the canonical config **and** the PM2 app entry written to the generated ecosystem
  file.  Every setting that decides how the app runs is written explicitly (with PM2's own
  defaults where the user gave none), so a later ``pm2 reload <file> --update-env`` can also
  set a setting *back* to its default.
* :func:`actual_config` reads the same canonical shape from the raw ``pm2 jlist`` entries
  (``pm2_env``) of the running app.

:func:`compute_drift` compares them and classifies each difference by how PM2 can apply it
(checked against PM2 6.0 sources and behaviour):

* ``reload``: ``pm2 reload <ecosystem> --update-env`` replaces these in ``pm2_env`` and the
  new workers start with them (env values, args, node_args, max_memory_restart, wait_ready,
  listen_timeout, kill_timeout and the pass-through options).
* ``scale``: the number of instances (``pm2 scale``).  A reload never changes it; PM2 even
  copies the new ``instances`` value into ``pm2_env`` while keeping the old process count,
  so the count is always read from the process list, never from ``pm2_env.instances``.
* ``recreate``: ``pm2 delete`` + ``pm2 start <ecosystem>``.  A reload keeps the old
  ``pm_exec_path``, ``pm_cwd``, log paths, ``exec_mode`` and interpreter, and cannot remove
  an environment variable or unset an option.

Secrets: environment values are never returned.  :func:`redact_config` masks every value
whose key is not listed as public; :func:`secret_values` lists what to add to AnsibleModule's
``no_log_values`` so that free text (PM2 output, log lines) is masked as well.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import re
import shlex
import shutil

MASK = '********'
MASK_CHANGED = '******** (changed)'

#: Environment variables the module manages itself inside the app's env.
ENV_REVISION = 'NODEOPS_REVISION'
ENV_KEYS = 'NODEOPS_ENV_KEYS'
RESERVED_ENV = (ENV_REVISION, ENV_KEYS)

#: PM2 defaults (PM2 6.0 constants.js / schema.json).
PM2_KILL_TIMEOUT_MS = 1600
PM2_LISTEN_TIMEOUT_MS = 3000

#: Extra PM2 options passed through as they are: name -> (kind, PM2 default or None).
PASSTHROUGH = {
    'autorestart': ('bool', True),
    'max_restarts': ('int', 16),
    'min_uptime': ('ms', 1000),
    'restart_delay': ('int', None),
    'exp_backoff_restart_delay': ('int', None),
    'time': ('bool', False),
    'log_date_format': ('str', None),
    'shutdown_with_message': ('bool', False),
    'instance_var': ('str', 'NODE_APP_INSTANCE'),
    'treekill': ('bool', True),
    'stop_exit_codes': ('intlist', None),
}

CORE_KEYS = (
    'name', 'script', 'cwd', 'args', 'node_args', 'interpreter', 'exec_mode', 'instances', 'env',
    'max_memory_restart', 'wait_ready', 'listen_timeout', 'kill_timeout', 'out_file', 'error_file', 'merge_logs',
)
SUPPORTED_KEYS = CORE_KEYS + tuple(sorted(PASSTHROUGH))

#: Canonical config keys in display order.
CANONICAL_ORDER = (
    'name', 'script', 'cwd', 'args', 'node_args', 'interpreter', 'exec_mode', 'instances', 'revision', 'env',
    'max_memory_restart', 'wait_ready', 'listen_timeout', 'kill_timeout', 'out_file', 'error_file', 'merge_logs',
) + tuple(sorted(PASSTHROUGH))

RELOAD = 'reload'
SCALE = 'scale'
RECREATE = 'recreate'

#: How a changed canonical key is applied (env and pass-through options are decided per value).
APPLY_BY_KEY = {
    'script': RECREATE, 'cwd': RECREATE, 'exec_mode': RECREATE, 'interpreter': RECREATE,
    'out_file': RECREATE, 'error_file': RECREATE, 'merge_logs': RECREATE,
    'instances': SCALE,
    'args': RELOAD, 'node_args': RELOAD, 'revision': RELOAD, 'max_memory_restart': RELOAD,
    'wait_ready': RELOAD, 'listen_timeout': RELOAD, 'kill_timeout': RELOAD,
}

_BYTES_RE = re.compile(r'^\s*(\d+)\s*([KMG])?B?\s*$', re.I)
_MS_RE = re.compile(r'^\s*(\d+)\s*(ms|s|m|h)?\s*$', re.I)
_ENV_NAME_RE = re.compile(r'^[^=\x00]+$')
_TRUE = ('true', 'yes', 'on', '1', 'y')
_FALSE = ('false', 'no', 'off', '0', 'n')


class EcosystemError(Exception):
    """Invalid ecosystem definition; the message names the offending field, what was expected and what was given."""


def _describe(value):
    if value is None:
        return 'nothing'
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, (dict, list)):
        return 'a %s' % type(value).__name__
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


# --------------------------------------------------------------------------- loading

def load_ecosystem_file(path):
    """Read a JSON or YAML ecosystem file on the managed node; return the parsed data."""
    if path.endswith(('.js', '.cjs', '.mjs')):
        raise EcosystemError("ecosystem_file: expected a JSON or YAML file, got the JavaScript file '%s' "
                             "(JavaScript ecosystem files must be run by Node.js; export the definition to JSON "
                             "or pass it inline as ecosystem)" % path)
    try:
        with open(path, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError) as exc:
        raise EcosystemError("ecosystem_file: expected a readable JSON or YAML file on the managed node, "
                             "cannot read '%s': %s" % (path, exc.strerror or exc))
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise EcosystemError("ecosystem_file: expected UTF-8 text, '%s' is not" % path)
    try:
        return json.loads(text)
    except ValueError as json_error:
        if path.endswith('.json'):
            raise EcosystemError("ecosystem_file: '%s' is not valid JSON: %s" % (path, json_error))
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise EcosystemError("ecosystem_file: '%s' is not JSON, and reading YAML needs the PyYAML Python library "
                             "on the managed node (install python3-yaml, or use a JSON file)" % path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EcosystemError("ecosystem_file: '%s' is neither valid JSON nor valid YAML: %s" % (path, exc))


def select_app(data, name, label='ecosystem'):
    """Pick the app entry called ``name``: from ``apps`` (or a list), or the single app dict itself."""
    apps = None
    if isinstance(data, dict) and 'apps' in data:
        apps = data['apps']
        if not isinstance(apps, list):
            raise EcosystemError('%s.apps: expected a list of app definitions, got %s' % (label, _describe(apps)))
    elif isinstance(data, list):
        apps = data
    if apps is not None:
        matches = [app for app in apps if isinstance(app, dict) and app.get('name') == name]
        if not matches:
            names = [str(app.get('name')) for app in apps if isinstance(app, dict)]
            raise EcosystemError("%s: expected an app named '%s' in apps, found %s" % (
                label, name, ', '.join("'%s'" % n for n in names) if names else 'no named app'))
        if len(matches) > 1:
            raise EcosystemError("%s: expected one app named '%s' in apps, found %d" % (label, name, len(matches)))
        return matches[0]
    if not isinstance(data, dict):
        raise EcosystemError('%s: expected a dict (one app, or one with an apps list), got %s' % (label, _describe(data)))
    if data.get('name') not in (None, name):
        raise EcosystemError("%s.name: expected '%s' (the module's name option) or no name, got %s" % (
            label, name, _describe(data.get('name'))))
    return data


# --------------------------------------------------------------------------- value parsing

def _bool(value, field):
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE + _FALSE:
        return str(value).strip().lower() in _TRUE
    raise EcosystemError('%s: expected a boolean (true or false), got %s' % (field, _describe(value)))


def _int(value, field, minimum=0):
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, int):
        ok = True
    elif isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    elif isinstance(value, str) and re.match(r'^\s*\d+\s*$', value):
        value, ok = int(value), True
    else:
        ok = False
    if not ok or value < minimum:
        raise EcosystemError('%s: expected an integer >= %d, got %s' % (field, minimum, _describe(value)))
    return value


def _ms(value, field):
    """Milliseconds from an integer or PM2's '<n>ms|s|m|h' string."""
    if isinstance(value, str):
        match = _MS_RE.match(value)
        if not match:
            raise EcosystemError("%s: expected milliseconds (an integer, or a string such as '5s', '2m'), got %s" % (
                field, _describe(value)))
        factor = {None: 1, 'ms': 1, 's': 1000, 'm': 60000, 'h': 3600000}[(match.group(2) or '').lower() or None]
        return int(match.group(1)) * factor
    return _int(value, field)


def parse_bytes(value, field='max_memory_restart'):
    """PM2 memory size: integer bytes or '<n>K|M|G' (1024-based, as PM2 does) -> int bytes."""
    if isinstance(value, bool):
        raise EcosystemError("%s: expected bytes (an integer) or a size such as '300M' or '1G', got %s" % (field, _describe(value)))
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        match = _BYTES_RE.match(value)
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * {None: 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3}[
                match.group(2).upper() if match.group(2) else None]
    raise EcosystemError("%s: expected bytes (an integer > 0) or a size such as '300M' or '1G', got %s" % (field, _describe(value)))


def parse_instances(value, field='instances'):
    """Validate ``instances``: int >= 1, 0 / 'max' (one per CPU core) or -N (cores minus N, at least 1)."""
    expected = "expected an integer >= 1, 0 or 'max' (one instance per CPU core), or a negative integer -N (cores minus N)"
    if isinstance(value, bool) or value is None:
        raise EcosystemError('%s: %s, got %s' % (field, expected, _describe(value)))
    if isinstance(value, str):
        text = value.strip().lower()
        if text == 'max':
            return 'max'
        if not re.match(r'^-?\d+$', text):
            raise EcosystemError('%s: %s, got %s' % (field, expected, _describe(value)))
        value = int(text)
    if isinstance(value, float):
        if not value.is_integer():
            raise EcosystemError('%s: %s, got %s' % (field, expected, _describe(value)))
        value = int(value)
    if not isinstance(value, int):
        raise EcosystemError('%s: %s, got %s' % (field, expected, _describe(value)))
    return value


def resolve_instances(spec, cpu_count):
    """Number of processes PM2 starts for ``spec`` (PM2's God.prepare: 0 -> cores, -N -> cores - N, min 1)."""
    cpus = max(1, int(cpu_count or 1))
    if spec == 'max' or spec == 0:
        return cpus
    if spec < 0:
        return max(1, cpus + spec)
    return spec


def _arg_list(value, field):
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise EcosystemError('%s: cannot split %s into arguments: %s' % (field, _describe(value), exc))
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise EcosystemError('%s: expected a list of strings (or one string split like a shell would), got %s' % (
        field, _describe(value)))


def env_string(value):
    """Environment values as PM2/Node.js hand them to the process (strings)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return ''
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(',', ':'))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _env(value, field):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EcosystemError('%s: expected a dict of variable names to values, got %s' % (field, _describe(value)))
    env = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise EcosystemError("%s: expected variable names without '=' or NUL, got %s" % (field, _describe(key)))
        if key in RESERVED_ENV:
            raise EcosystemError('%s.%s: reserved for the module (%s is set from the revision option), remove it' % (
                field, key, ENV_REVISION if key == ENV_REVISION else 'the list of managed keys'))
        env[key] = env_string(val)
    return env


def log_name(name):
    """PM2's file-name form of an app name (Common.prepareAppConf)."""
    return re.sub(r'[^a-zA-Z0-9\\.\-]', '-', name)


def _abspath(path, base, field):
    if not isinstance(path, str) or not path.strip():
        raise EcosystemError('%s: expected a path, got %s' % (field, _describe(path)))
    path = os.path.expanduser(path) if path.startswith('~/') else path
    if os.path.isabs(path):
        return os.path.normpath(path)
    if base is None:
        raise EcosystemError("%s: expected an absolute path, got %s" % (field, _describe(path)))
    return os.path.normpath(os.path.join(base, path))


# --------------------------------------------------------------------------- desired

def build_desired(app, name, pm2_home, revision=None, cpu_count=None, base_dir=None, label='ecosystem',
                  check_paths=True, which=shutil.which):
    """Validate one ecosystem app entry.

    :param app: the app dict (from :func:`select_app`).
    :param base_dir: directory of the ecosystem file (relative ``cwd``/``script`` resolve against it),
        None for an inline definition.
    :param check_paths: check on this node that ``cwd`` and ``script`` exist.
    :returns: ``(canonical, pm2_entry)``: the canonical config and the app entry of the generated file.
    """
    if not isinstance(app, dict):
        raise EcosystemError('%s: expected a dict, got %s' % (label, _describe(app)))
    unknown = sorted(str(k) for k in app if k not in SUPPORTED_KEYS)
    if unknown:
        raise EcosystemError('%s: unsupported key(s) %s; supported keys are: %s' % (
            label, ', '.join("'%s'" % k for k in unknown), ', '.join(SUPPORTED_KEYS)))

    def field(key):
        return '%s.%s' % (label, key)

    script = app.get('script')
    if not isinstance(script, str) or not script.strip():
        raise EcosystemError("%s: expected the path of the app's entry file (absolute, or relative to cwd), got %s" % (
            field('script'), _describe(script)))
    if app.get('cwd') is not None:
        cwd = _abspath(app['cwd'], base_dir, field('cwd'))
    elif os.path.isabs(script):
        cwd = os.path.dirname(os.path.normpath(script))
    elif base_dir is not None:
        cwd = base_dir
    else:
        raise EcosystemError("%s: required when script %s is relative (expected an absolute directory)" % (
            field('cwd'), _describe(script)))
    script_path = _abspath(script, cwd, field('script'))
    if check_paths:
        if not os.path.isdir(cwd):
            raise EcosystemError("%s: expected an existing directory on the managed node, '%s' does not exist" % (field('cwd'), cwd))
        if not os.path.isfile(script_path):
            found = which(script) if os.sep not in script else None
            if not found:
                raise EcosystemError("%s: expected an existing file on the managed node, '%s' does not exist "
                                     "(script %s resolved against cwd '%s')" % (field('script'), script_path, _describe(script), cwd))
            script_path = found

    if 'instances' in app and app['instances'] is not None:
        spec = parse_instances(app['instances'], field('instances'))
    else:
        spec = None
    exec_mode = app.get('exec_mode')
    if exec_mode is None:
        exec_mode = 'cluster' if spec is not None else 'fork'
    if not isinstance(exec_mode, str) or exec_mode.replace('_mode', '') not in ('cluster', 'fork'):
        raise EcosystemError("%s: expected 'cluster' or 'fork', got %s" % (field('exec_mode'), _describe(exec_mode)))
    exec_mode = exec_mode.replace('_mode', '')
    instances = resolve_instances(1 if spec is None else spec, cpu_count or os.cpu_count())

    env = _env(app.get('env'), field('env'))
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise EcosystemError('revision: expected a non-empty string (release path, version or commit), got %s' % _describe(revision))

    canonical = {
        'name': name,
        'script': script_path,
        'cwd': cwd,
        'args': _arg_list(app.get('args'), field('args')),
        'node_args': _arg_list(app.get('node_args'), field('node_args')),
        'interpreter': None,
        'exec_mode': exec_mode,
        'instances': instances,
        'revision': revision,
        'env': env,
        'max_memory_restart': None,
        'wait_ready': _bool(app['wait_ready'], field('wait_ready')) if app.get('wait_ready') is not None else False,
        'listen_timeout': (_int(app['listen_timeout'], field('listen_timeout'), 1) if app.get('listen_timeout') is not None
                           else PM2_LISTEN_TIMEOUT_MS),
        'kill_timeout': (_int(app['kill_timeout'], field('kill_timeout'), 1) if app.get('kill_timeout') is not None
                         else PM2_KILL_TIMEOUT_MS),
        'merge_logs': _bool(app['merge_logs'], field('merge_logs')) if app.get('merge_logs') is not None else True,
    }
    if app.get('interpreter') is not None:
        if not isinstance(app['interpreter'], str) or not app['interpreter'].strip():
            raise EcosystemError('%s: expected a command or path, got %s' % (field('interpreter'), _describe(app['interpreter'])))
        canonical['interpreter'] = app['interpreter']
    if app.get('max_memory_restart') is not None:
        canonical['max_memory_restart'] = parse_bytes(app['max_memory_restart'], field('max_memory_restart'))
    default_logs = os.path.join(pm2_home, 'logs', log_name(name))
    for key, suffix in (('out_file', '-out.log'), ('error_file', '-error.log')):
        value = app.get(key)
        if value is None:
            canonical[key] = default_logs + suffix
        elif value in ('/dev/null', 'NULL'):
            canonical[key] = '/dev/null'
        else:
            canonical[key] = _abspath(value, cwd, field(key))
    for key, (kind, default) in sorted(PASSTHROUGH.items()):
        value = app.get(key)
        if value is None:
            canonical[key] = default
        elif kind == 'bool':
            canonical[key] = _bool(value, field(key))
        elif kind == 'int':
            canonical[key] = _int(value, field(key))
        elif kind == 'ms':
            canonical[key] = _ms(value, field(key))
        elif kind == 'intlist':
            values = value if isinstance(value, list) else [value]
            canonical[key] = sorted(set(_int(v, field(key)) for v in values))
        elif not isinstance(value, str):
            raise EcosystemError('%s: expected a string, got %s' % (field(key), _describe(value)))
        else:
            canonical[key] = value
    return canonical, pm2_entry(canonical)


def pm2_entry(canonical):
    """The app entry of the generated ecosystem file (JSON-serialisable; env holds the secrets)."""
    env = dict(canonical['env'])
    if canonical.get('revision') is not None:
        env[ENV_REVISION] = canonical['revision']
    env[ENV_KEYS] = ','.join(sorted(canonical['env']))
    entry = {
        'name': canonical['name'],
        'script': canonical['script'],
        'cwd': canonical['cwd'],
        'args': list(canonical['args']),
        'node_args': list(canonical['node_args']),
        'exec_mode': canonical['exec_mode'],
        'instances': canonical['instances'],
        'env': env,
        'wait_ready': canonical['wait_ready'],
        'listen_timeout': canonical['listen_timeout'],
        'kill_timeout': canonical['kill_timeout'],
        'out_file': canonical['out_file'],
        'error_file': canonical['error_file'],
        'merge_logs': canonical['merge_logs'],
    }
    if canonical.get('interpreter') is not None:
        entry['interpreter'] = canonical['interpreter']
    if canonical.get('max_memory_restart') is not None:
        entry['max_memory_restart'] = canonical['max_memory_restart']
    for key in sorted(PASSTHROUGH):
        if canonical.get(key) is not None:
            entry[key] = canonical[key]
    return entry


# --------------------------------------------------------------------------- actual

def _strip_instance_suffix(path, merge_logs):
    # Without merge_logs PM2 appends '-<pm_id>' before '.log' (God.executeApp).
    if not path or merge_logs:
        return path
    return re.sub(r'-\d+\.log$', '.log', path)


def app_env(pm2_env):
    """The application environment PM2 holds for one process (``pm2_env.env``), values as strings."""
    env = pm2_env.get('env')
    if not isinstance(env, dict):
        return {}
    return dict((str(k), env_string(v)) for k, v in env.items())


def managed_keys(pm2_env):
    """Env keys the module set last time (from ``NODEOPS_ENV_KEYS``), or None for an app started elsewhere."""
    env = app_env(pm2_env)
    value = env.get(ENV_KEYS)
    if value is None and isinstance(pm2_env.get(ENV_KEYS), str):
        value = pm2_env[ENV_KEYS]
    if value is None:
        return None
    return set(k for k in value.split(',') if k)


def actual_config(raw_procs, desired=None):
    """Canonical config of the running app from its raw ``pm2 jlist`` entries (None when there are none).

    With ``desired``, ``env`` holds only the keys that matter for the comparison: the desired
    keys plus the keys the module managed before (so that a removed key shows up), not the
    whole inherited environment.
    """
    if not raw_procs:
        return None
    procs = sorted(raw_procs, key=lambda p: (not isinstance(p.get('pm_id'), int), p.get('pm_id')))
    pm2_env = procs[0].get('pm2_env') or {}
    env = app_env(pm2_env)
    managed = managed_keys(pm2_env)
    if desired is not None:
        wanted = set(desired['env']) | (managed or set())
        shown_env = dict((k, env[k]) for k in wanted if k in env)
    else:
        shown_env = dict((k, env[k]) for k in (managed if managed is not None else ()) if k in env)
    merge_logs = bool(pm2_env.get('merge_logs', False))
    exec_mode = str(pm2_env.get('exec_mode') or 'fork_mode').replace('_mode', '')
    mmr = pm2_env.get('max_memory_restart')
    config = {
        'name': pm2_env.get('name') or procs[0].get('name'),
        'script': pm2_env.get('pm_exec_path'),
        'cwd': pm2_env.get('pm_cwd'),
        'args': [str(a) for a in (pm2_env.get('args') or [])] if isinstance(pm2_env.get('args') or [], list) else [str(pm2_env['args'])],
        'node_args': [str(a) for a in (pm2_env.get('node_args') or [])] if isinstance(pm2_env.get('node_args') or [], list)
        else [str(pm2_env['node_args'])],
        'interpreter': pm2_env.get('exec_interpreter'),
        'exec_mode': exec_mode,
        'instances': len(procs),
        'revision': env.get(ENV_REVISION),
        'env': shown_env,
        'max_memory_restart': mmr if isinstance(mmr, int) and not isinstance(mmr, bool) and mmr > 0 else None,
        'wait_ready': bool(pm2_env.get('wait_ready', False)),
        'listen_timeout': pm2_env.get('listen_timeout') or PM2_LISTEN_TIMEOUT_MS,
        'kill_timeout': pm2_env.get('kill_timeout') or PM2_KILL_TIMEOUT_MS,
        'out_file': _strip_instance_suffix(pm2_env.get('pm_out_log_path'), merge_logs),
        'error_file': _strip_instance_suffix(pm2_env.get('pm_err_log_path'), merge_logs),
        'merge_logs': merge_logs,
    }
    for key, (kind, default) in PASSTHROUGH.items():
        value = pm2_env.get(key, default)
        if kind == 'ms' and isinstance(value, str):
            try:
                value = _ms(value, key)
            except EcosystemError:
                pass
        if kind == 'intlist' and value is not None:
            values = value if isinstance(value, list) else [value]
            value = sorted(set(v for v in values if isinstance(v, int)))
        config[key] = value
    return config


# --------------------------------------------------------------------------- drift

def compute_drift(desired, actual):
    """Differences between the canonical ``desired`` and ``actual`` configs.

    Returns a list of dicts ``{key, before, after, apply}`` (``key`` is ``env.NAME`` for
    environment variables; values are NOT redacted here, see :func:`redact_drift`).  An empty
    list means PM2 runs exactly what is desired.  ``actual`` None (app unknown) gives ``[]``.
    """
    if actual is None:
        return []
    drift = []
    for key in CANONICAL_ORDER:
        if key == 'env':
            continue
        want, have = desired.get(key), actual.get(key)
        if key == 'interpreter' and want is None:
            continue  # not managed unless given
        if key == 'revision' and want is None:
            continue  # not managed unless given
        if want == have:
            continue
        if key in PASSTHROUGH:
            apply = RECREATE if want is None else RELOAD
        elif key == 'max_memory_restart' and want is None:
            apply = RECREATE  # PM2 cannot unset it on reload
        else:
            apply = APPLY_BY_KEY[key]
        drift.append({'key': key, 'before': have, 'after': want, 'apply': apply})
    want_env, have_env = desired['env'], actual['env']
    for key in sorted(set(want_env) | set(have_env)):
        if key in want_env and want_env[key] == have_env.get(key):
            continue
        if key in want_env:
            drift.append({'key': 'env.' + key, 'before': have_env.get(key), 'after': want_env[key], 'apply': RELOAD})
        else:
            drift.append({'key': 'env.' + key, 'before': have_env[key], 'after': None, 'apply': RECREATE})
    return drift


def drift_kinds(drift):
    """Set of apply kinds ('reload', 'scale', 'recreate') needed for ``drift``."""
    return set(item['apply'] for item in drift)


# --------------------------------------------------------------------------- redaction

def is_public(key, public_keys):
    return key in public_keys or key in RESERVED_ENV


def redact_env(env, public_keys, changed=()):
    """Env with every value masked except ``public_keys``; masked values of ``changed`` keys say so."""
    out = {}
    for key, value in (env or {}).items():
        if is_public(key, public_keys):
            out[key] = value
        else:
            out[key] = MASK_CHANGED if key in changed else MASK
    return out


def redact_config(config, public_keys, changed_env=()):
    """Copy of a canonical config (or generated PM2 entry) whose env values are masked."""
    if config is None:
        return None
    out = dict(config)
    if 'env' in out:
        out['env'] = redact_env(out['env'], public_keys, changed_env)
    return out


def redact_drift(drift, public_keys):
    out = []
    for item in drift:
        item = dict(item)
        if item['key'].startswith('env.') and not is_public(item['key'][4:], public_keys):
            item['before'] = None if item['before'] is None else MASK
            item['after'] = None if item['after'] is None else (MASK_CHANGED if item['before'] is not None else MASK)
        out.append(item)
    return out


def secret_values(env, public_keys, min_length=4):
    """Env values to register as no_log values (long enough not to mask unrelated text, not purely numeric)."""
    values = set()
    for key, value in (env or {}).items():
        if is_public(key, public_keys) or not isinstance(value, str):
            continue
        if len(value) >= min_length and not value.isdigit() and value.lower() not in _TRUE + _FALSE:
            values.add(value)
    return values


def ordered(config, drop_none=False):
    """Config dict in display order (keys not in CANONICAL_ORDER last), optionally without None values."""
    if config is None:
        return None
    out = {}
    for key in CANONICAL_ORDER:
        if key in config:
            out[key] = config[key]
    for key in sorted(config):
        if key not in out:
            out[key] = config[key]
    if drop_none:
        out = dict((k, v) for k, v in out.items() if v is not None)
    return out
