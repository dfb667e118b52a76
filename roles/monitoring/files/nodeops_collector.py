"""nodeops textfile collector (installed by the nodeops.stack.monitoring role).

Usage: python3 nodeops_collector.py CONFIG.json

Publishes, for node-exporter's textfile collector, one ``nodeops_<section>.prom``
file per section, each written atomically (temporary file + rename in the same
directory, so node-exporter never reads half a file):

- backup: the backup role's last-run record (result, verified, start/finish
  time, size); a missing record is published as ``nodeops_backup_record_present 0``.
- tls: ``notAfter`` of each certificate file (glob patterns), as a timestamp.
- pm2: online/expected instances, restarts, memory and CPU per app, read with
  one ``pm2 jlist`` as the app user (through the collection's PM2 reader, never
  spawning a daemon that is not running).
- nginx: request counts per status class and a request-time histogram from
  nginx_tls's JSON access log, read incrementally (offsets and counters kept in
  the state directory; a rotated file is finished from ``<log>.1``).
- mongodb: "Slow query" entries in mongod's JSON log, read the same way.
- collector: success and duration per section, time of the last run.

A section that fails publishes ``nodeops_collector_success{section=...} 0``
and leaves its previous file in place (stale rather than wrong); the error
goes to stderr (the journal). The exit status is 0 unless the configuration
cannot be read.
"""

import calendar
import glob
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodeops_pm2 import Pm2Cli, Pm2Error  # noqa: E402  pylint: disable=wrong-import-position,import-error

STATUS_CLASSES = ('1xx', '2xx', '3xx', '4xx', '5xx')


# ---------------------------------------------------------------- exposition

def escape(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def number(value):
    if value == float('inf'):
        return '+Inf'
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Metrics:
    """Metric families in insertion order, rendered in the text exposition format."""

    def __init__(self):
        self.families = {}

    def declare(self, name, kind, help_text):
        return self.families.setdefault(name, {'type': kind, 'help': help_text, 'samples': []})

    def add(self, name, kind, help_text, value, labels=None, sample_name=None):
        """One sample; ``sample_name`` for a histogram's _bucket/_sum/_count samples."""
        self.declare(name, kind, help_text)['samples'].append((sample_name or name, labels or {}, value))

    def render(self):
        out = []
        for name, family in self.families.items():
            out.append('# HELP %s %s' % (name, family['help']))
            out.append('# TYPE %s %s' % (name, family['type']))
            for sample, labels, value in family['samples']:
                label_text = ','.join('%s="%s"' % (k, escape(v)) for k, v in labels.items())
                out.append('%s%s %s' % (sample, '{%s}' % label_text if label_text else '', number(value)))
        return '\n'.join(out) + '\n'


def write_atomically(path, text, mode=0o644):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- state

def load_json(path, default):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default
    except ValueError:
        return default


def state_file(state_dir, kind, path):
    return os.path.join(state_dir, '%s-%s.json' % (kind, re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')))


def read_new_lines(path, state):
    """Complete lines appended to ``path`` since ``state`` (inode, offset); updates ``state``.

    First sight of a file starts at its end (history is not counted). After a
    rotation (new inode), the rest of the old file is read from ``path.1`` when
    that still has the remembered inode, then the new file from its start.
    """
    st = os.stat(path)
    lines = []
    inode, offset = state.get('inode'), state.get('offset')
    if inode is None:
        state.update(inode=st.st_ino, offset=st.st_size)
        return lines
    if inode != st.st_ino:
        rotated = path + '.1'
        try:
            if os.stat(rotated).st_ino == inode:
                lines.extend(_read_from(rotated, offset)[0])
        except FileNotFoundError:
            pass
        offset = 0
    elif st.st_size < offset:  # truncated in place (copytruncate)
        offset = 0
    new_lines, offset = _read_from(path, offset)
    lines.extend(new_lines)
    state.update(inode=st.st_ino, offset=offset)
    return lines


def tail_logs(kind, paths, state_dir, errors):
    """Yield (path, state, new lines) per log; the state (offsets, counters) is saved after the caller's turn."""
    for path in paths:
        state_path = state_file(state_dir, kind, path)
        state = load_json(state_path, {})
        try:
            lines = read_new_lines(path, state)
        except OSError as exc:
            errors.append('cannot read %s: %s' % (path, exc))
            lines = []
        yield path, state, lines
        write_atomically(state_path, json.dumps(state), mode=0o600)


def _read_from(path, offset):
    with open(path, 'rb') as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b'\n') + 1  # an unfinished last line waits for the next run
    text = data[:end].decode('utf-8', 'replace')
    return [line for line in text.split('\n') if line], offset + end


# ---------------------------------------------------------------- sections

def collect_backup(cfg, now):
    m = Metrics()
    record = cfg['record']
    m.add('nodeops_backup_record_present', 'gauge', 'Whether the backup last-run record exists.', int(os.path.exists(record)))
    if not os.path.exists(record):
        return m
    try:
        with open(record) as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError('not a JSON object')
    except ValueError as exc:
        m.add('nodeops_backup_record_valid', 'gauge', 'Whether the record could be read as the backup role writes it.', 0)
        m.add('nodeops_backup_last_run_success', 'gauge', 'Last backup run succeeded (result "success").', 0)
        m.add('nodeops_backup_last_run_verified', 'gauge', 'Last backup run was verified.', 0)
        raise SectionError('backup record %s is not valid JSON: %s' % (record, exc), m)
    m.add('nodeops_backup_record_valid', 'gauge', 'Whether the record could be read as the backup role writes it.', 1)
    m.add('nodeops_backup_last_run_success', 'gauge', 'Last backup run succeeded (result "success").', int(data.get('result') == 'success'))
    m.add('nodeops_backup_last_run_verified', 'gauge', 'Last backup run was verified.', int(data.get('verified') is True))
    for key, name, help_text in (
            ('started_at', 'nodeops_backup_last_run_started_timestamp_seconds', 'Start of the last backup run (epoch seconds).'),
            ('finished_at', 'nodeops_backup_last_run_finished_timestamp_seconds', 'End of the last backup run (epoch seconds).'),
            ('size_bytes', 'nodeops_backup_last_run_size_bytes', 'Size of the last backup.')):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            m.add(name, 'gauge', help_text, value)
    if isinstance(data.get('started_at'), (int, float)) and isinstance(data.get('finished_at'), (int, float)):
        m.add('nodeops_backup_last_run_duration_seconds', 'gauge', 'Duration of the last backup run.', data['finished_at'] - data['started_at'])
    m.add('nodeops_backup_last_run_info', 'gauge', 'Name and result of the last backup run.', 1,
          {'backup': data.get('backup') or '', 'result': data.get('result') or ''})
    return m


def certificate_not_after(path):
    proc = subprocess.run(['openssl', 'x509', '-noout', '-enddate', '-in', path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode != 0 or not proc.stdout.startswith('notAfter='):
        raise ValueError('openssl cannot read %s: %s' % (path, proc.stderr.strip() or proc.stdout.strip()))
    # e.g. "notAfter=Nov 22 18:00:00 2027 GMT"
    return calendar.timegm(time.strptime(proc.stdout.strip()[len('notAfter='):], '%b %d %H:%M:%S %Y %Z'))


def collect_tls(cfg, now):
    m = Metrics()
    errors = []
    paths = []
    for pattern in cfg['certificates']:
        matched = sorted(glob.glob(pattern))
        if not matched:
            errors.append('no certificate matches %s' % pattern)
        paths.extend(p for p in matched if p not in paths)
    for path in paths:
        try:
            not_after = certificate_not_after(path)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        m.add('nodeops_tls_certificate_not_after_timestamp_seconds', 'gauge', 'Certificate notAfter (epoch seconds).', not_after, {'path': path})
    if errors:
        raise SectionError('; '.join(errors), m)
    return m


def run_as(user, timeout):
    """An AnsibleModule.run_command-like callable running the command as ``user``."""
    entry = pwd.getpwnam(user)

    def run(argv, environ_update=None):
        env = dict(os.environ, HOME=entry.pw_dir, USER=user, LOGNAME=user)
        env.update(environ_update or {})
        if os.geteuid() != entry.pw_uid:
            argv = ['runuser', '-u', user, '--'] + list(argv)
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout + 5, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    return run


def collect_pm2(cfg, now):
    m = Metrics()
    expected = dict((app['name'], int(app['instances'])) for app in cfg['apps'])
    cli = Pm2Cli(binary=cfg['binary'], pm2_home=cfg['home'], run_command=run_as(cfg['user'], cfg['timeout']), timeout=cfg['timeout'])
    error = None
    procs = []
    if cli.daemon_pid() is None:
        error = 'the PM2 daemon of %s (PM2_HOME %s) is not running' % (cfg['user'], cfg['home'])
    else:
        try:
            procs = cli.jlist(now=now)
        except Pm2Error as exc:
            error = str(exc)
    m.add('nodeops_pm2_up', 'gauge', 'Whether the PM2 daemon answered pm2 jlist.', int(error is None))
    # Online/expected only for the configured apps (AppDown pages on them); PM2
    # modules such as pm2-logrotate and other processes still get the rest.
    for app in expected:
        m.add('nodeops_pm2_instances_expected', 'gauge', 'Instances configured for the app.', expected[app], {'app': app})
    for app in expected:
        online = sum(1 for p in procs if p['name'] == app and p['status'] == 'online')
        m.add('nodeops_pm2_instances_online', 'gauge', 'Instances of the app PM2 reports online (0 when PM2 is down).', online, {'app': app})
    apps = list(expected) + sorted(set(p['name'] for p in procs if p['name'] not in expected))
    for app in apps:
        restarts = sum(p['restarts'] for p in procs if p['name'] == app)
        m.add('nodeops_pm2_restarts_total', 'counter', 'Restarts PM2 counted for the app (sum over its instances).', restarts, {'app': app})
    for p in procs:
        labels = {'app': p['name'], 'pm_id': p['pm_id']}
        m.add('nodeops_pm2_memory_bytes', 'gauge', 'Resident memory of one instance.', p['memory'], labels)
        m.add('nodeops_pm2_cpu_percent', 'gauge', 'CPU use of one instance (percent of one core).', p['cpu'], labels)
        m.add('nodeops_pm2_uptime_seconds', 'gauge', 'Seconds since the instance started (0 when not online).', p['uptime_s'], labels)
    if error:
        raise SectionError(error, m)
    return m


def collect_nginx(cfg, now, state_dir):
    buckets = sorted(float(b) for b in cfg['buckets']) + [float('inf')]
    m = Metrics()
    errors = []
    for path, state, lines in tail_logs('nginx', cfg['access_logs'], state_dir, errors):
        counts = state.setdefault('requests', dict((c, 0) for c in STATUS_CLASSES))
        hist = state.setdefault('duration', {'buckets': [0] * len(buckets), 'sum': 0.0, 'count': 0})
        if len(hist['buckets']) != len(buckets):  # buckets changed: restart the histogram
            hist.update(buckets=[0] * len(buckets), sum=0.0, count=0)
        skipped = state.setdefault('skipped', 0)
        for line in lines:
            try:
                entry = json.loads(line)
                status = int(entry['status'])
                seconds = float(entry['request_time'])
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            cls = '%dxx' % (status // 100)
            counts[cls] = counts.get(cls, 0) + 1
            for i, le in enumerate(buckets):
                if seconds <= le:
                    hist['buckets'][i] += 1
            hist['sum'] += seconds
            hist['count'] += 1
        state['skipped'] = skipped
        for cls in sorted(counts):
            m.add('nodeops_nginx_http_requests_total', 'counter', 'Requests in the nginx access log by status class.', counts[cls],
                  {'log': path, 'status_class': cls})
        m.add('nodeops_nginx_log_lines_skipped_total', 'counter', 'Access log lines that were not nodeops JSON.', skipped, {'log': path})
        name = 'nodeops_nginx_request_duration_seconds'
        help_text = 'nginx request_time (seconds).'
        for le, count in zip(buckets, hist['buckets']):
            m.add(name, 'histogram', help_text, count, {'log': path, 'le': number(le)}, sample_name=name + '_bucket')
        m.add(name, 'histogram', help_text, hist['sum'], {'log': path}, sample_name=name + '_sum')
        m.add(name, 'histogram', help_text, hist['count'], {'log': path}, sample_name=name + '_count')
    if errors:
        raise SectionError('; '.join(errors), m)
    return m


def collect_mongodb(cfg, now, state_dir):
    m = Metrics()
    errors = []
    total = 0
    for _path, state, lines in tail_logs('mongodb', cfg['logs'], state_dir, errors):
        for line in lines:
            try:
                if json.loads(line).get('msg') == 'Slow query':
                    state['slow'] = state.get('slow', 0) + 1
            except (ValueError, AttributeError):
                continue
        total += state.get('slow', 0)
    m.add('nodeops_mongodb_slow_queries_total', 'counter', 'mongod "Slow query" log entries.', total)
    if errors:
        raise SectionError('; '.join(errors), m)
    return m


class SectionError(Exception):
    """A section failed; ``metrics`` holds what it could still publish (or None)."""

    def __init__(self, message, metrics=None):
        super(SectionError, self).__init__(message)
        self.metrics = metrics


# ---------------------------------------------------------------- main

def sections(cfg, state_dir):
    """(name, callable or None) for every section; None = not configured on this node."""
    return [
        ('backup', (lambda now: collect_backup(cfg['backup'], now)) if cfg.get('backup') else None),
        ('tls', (lambda now: collect_tls(cfg, now)) if cfg.get('certificates') else None),
        ('pm2', (lambda now: collect_pm2(cfg['pm2'], now)) if cfg.get('pm2') else None),
        ('nginx', (lambda now: collect_nginx(cfg['nginx'], now, state_dir)) if (cfg.get('nginx') or {}).get('access_logs') else None),
        ('mongodb', (lambda now: collect_mongodb(cfg['mongodb'], now, state_dir)) if (cfg.get('mongodb') or {}).get('logs') else None),
    ]


def run(cfg, now=None):
    """Collect every configured section once; return {section: error or None}."""
    textfile_dir, state_dir = cfg['textfile_dir'], cfg['state_dir']
    meta = Metrics()
    results = {}
    for name, collect in sections(cfg, state_dir):
        target = os.path.join(textfile_dir, 'nodeops_%s.prom' % name)
        if collect is None:
            if os.path.exists(target):  # section switched off: no stale series
                os.unlink(target)
            continue
        started = time.time()
        metrics, error = None, None
        try:
            metrics = collect(time.time() if now is None else now)
        except SectionError as exc:
            metrics, error = exc.metrics, str(exc)
        except Exception as exc:  # pylint: disable=broad-except  # one broken source must not stop the others
            error = '%s: %s' % (type(exc).__name__, exc)
        if metrics is not None and (error is None or metrics.families):
            write_atomically(target, metrics.render())
        if error:
            sys.stderr.write('nodeops-collector: %s: %s\n' % (name, error))
        results[name] = error
        meta.add('nodeops_collector_success', 'gauge', 'Whether the section was collected without error.', int(error is None), {'section': name})
        meta.add('nodeops_collector_duration_seconds', 'gauge', 'Seconds the section took.', round(time.time() - started, 6), {'section': name})
    meta.add('nodeops_collector_last_run_timestamp_seconds', 'gauge', 'End of the last collector run (epoch seconds).',
             round(time.time() if now is None else now, 3))
    write_atomically(os.path.join(textfile_dir, 'nodeops_collector.prom'), meta.render())
    return results


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: %s CONFIG.json\n' % argv[0])
        return 2
    try:
        with open(argv[1]) as handle:
            cfg = json.load(handle)
    except (OSError, ValueError) as exc:
        sys.stderr.write('nodeops-collector: cannot read %s: %s\n' % (argv[1], exc))
        return 2
    run(cfg)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
