"""Shared plumbing of the benchmarks that start their own lab nodes (site_noop, connection_settings, scale).

Not a benchmark itself. It gives:
- ``Fleet``: podman systemd nodes named nodeops-bench-*, each binding its own address in
  127.0.2.1-127.0.2.60 (host var nodeops_node_address), created through scripts/lab.py's ``up``
  and always removed (``finally`` + atexit + SIGTERM/SIGHUP), unless asked to keep them;
- ``write_inventory``: an inventory for such a fleet that links the lab inventory's group_vars;
- ``playbook``: one timed ansible-playbook run, its log kept under benchmarks/results/raw/;
- ``recap``: the PLAY RECAP counters per host;
- ``meta`` and ``save``: the command line and machine note, and the JSON + Markdown results.
"""

import atexit
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))

import lab  # noqa: E402  pylint: disable=wrong-import-position,import-error

IMAGE = 'localhost/nodeops-lab:bookworm'
PREFIX = 'nodeops-bench-'
# The address range reserved for the benchmarks' own nodes.
ADDRESS_FIRST, ADDRESS_LAST = 1, 60
RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)')


def env(extra=None):
    """The environment the Makefile sets for every tool, plus ``extra``."""
    e = dict(os.environ)
    e.update({
        'ANSIBLE_CONFIG': os.path.join(ROOT, 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.cache', 'collections'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_RETRY_FILES_ENABLED': '0',
        'CONTAINERS_CONF': os.path.join(ROOT, 'lab', 'containers.conf'),
        'PATH': '%s:%s:%s' % (os.path.join(ROOT, '.venv', 'bin'), os.path.join(ROOT, '.cache', 'node', 'bin'), e.get('PATH', '')),
    })
    e.update(extra or {})
    return e


def address(index):
    """127.0.2.<index>, refusing anything outside the benchmarks' range."""
    if not ADDRESS_FIRST <= index <= ADDRESS_LAST:
        raise ValueError('address index %d outside 127.0.2.%d-%d' % (index, ADDRESS_FIRST, ADDRESS_LAST))
    return '127.0.2.%d' % index


class Fleet:
    """Podman systemd nodes: ``nodes`` is [(inventory_hostname, address, [groups])]."""

    def __init__(self, nodes, keep=False, boot_timeout=180):
        self.nodes = [(host, PREFIX + host, addr, groups) for host, addr, groups in nodes]
        self.keep = keep
        self.boot_timeout = boot_timeout
        self.removed = False
        self.finished = False

    def up(self):
        os.environ['CONTAINERS_CONF'] = os.path.join(ROOT, 'lab', 'containers.conf')
        atexit.register(lambda: self.down(force=not self.finished))
        for signum in (signal.SIGTERM, signal.SIGHUP):
            # sys.exit runs the finally blocks and atexit, so the containers go even when the run is killed.
            signal.signal(signum, lambda num, _frame: sys.exit(128 + num))
        lab.up([(host, name, addr, IMAGE) for host, name, addr, _groups in self.nodes], IMAGE, self.boot_timeout)
        return self

    def down(self, force=False):
        if (self.keep and not force) or self.removed:
            return
        self.removed = True
        lab.down([(host, name, addr, IMAGE) for host, name, addr, _groups in self.nodes])

    def __enter__(self):
        return self.up()

    def __exit__(self, exc_type, exc, traceback):
        # Kept only after a successful run: a failed or killed one never leaves nodes behind.
        self.finished = exc_type is None
        self.down(force=not self.finished)


def parse_args(parser, nodes, keep_help):
    """Add the options every fleet benchmark has (--keep, --out, --down), parse, and handle --down."""
    parser.add_argument('--keep', action='store_true', help=keep_help)
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results'), help='output directory')
    parser.add_argument('--down', action='store_true', help='only remove the nodes a --keep run left, then exit')
    args = parser.parse_args()
    if args.down:
        Fleet(nodes).down(force=True)
        sys.exit(0)
    return args


def write_inventory(directory, fleet, host_vars=None, all_vars=None, group_vars=None):
    """An inventory of ``fleet`` in ``directory``: the lab inventory's group_vars (linked), or ``group_vars`` if given."""
    os.makedirs(directory, exist_ok=True)
    link = os.path.join(directory, 'group_vars')
    if group_vars is None and not os.path.islink(link):
        os.symlink(os.path.join(ROOT, 'inventories', 'lab', 'group_vars'), link)
    hosts, groups = {}, {}
    for host, name, addr, host_groups in fleet.nodes:
        hosts[host] = dict({'ansible_host': name, 'nodeops_node_address': addr}, **((host_vars or {}).get(host, {})))
        for group in host_groups:
            groups.setdefault(group, {'hosts': {}, 'vars': dict((group_vars or {}).get(group, {}))})['hosts'][host] = None
    inventory = {'all': {'vars': dict(all_vars or {}), 'children': dict({'bench_nodes': {'hosts': hosts}}, **groups)}}
    path = os.path.join(directory, 'hosts.yml')
    with open(path, 'w') as handle:
        # JSON is YAML; ansible's yaml inventory plugin reads it.
        json.dump(inventory, handle, indent=2)
    return path


def playbook(inventory, log, path, *extra, extra_env=None):
    """Run ansible-playbook; return (rc, wall seconds, log text)."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    start = time.monotonic()
    with open(log, 'w') as out:
        rc = subprocess.run([os.path.join(ROOT, '.venv', 'bin', 'ansible-playbook'), '-i', inventory, path] + list(extra),
                            stdout=out, stderr=subprocess.STDOUT, env=env(extra_env), cwd=ROOT, check=False).returncode
    secs = time.monotonic() - start
    with open(log) as handle:
        return rc, secs, handle.read()


def recap(log):
    """{host: {ok, changed, unreachable, failed, ...}} from the PLAY RECAP."""
    keys = ('ok', 'changed', 'unreachable', 'failed', 'skipped', 'rescued', 'ignored')
    out = {}
    for line in log.splitlines():
        match = RECAP.match(line.strip())
        if match:
            out[match.group(1)] = dict(zip(keys, (int(x) for x in match.groups()[1:])))
    return out


def changed_tasks(log):
    """'TASK name (host)' for every changed result, to name what a no-op run still changed."""
    task, out = None, []
    for line in log.splitlines():
        match = re.match(r'TASK \[(.*)\] \*+', line)
        if match:
            task = match.group(1)
        match = re.match(r'changed: \[([^\]]+)\]', line)
        if match:
            out.append('%s (%s)' % (task, match.group(1)))
    return out


def summary(values):
    """Median, min, max of a list of seconds, rounded."""
    return {'median_s': round(statistics.median(values), 2), 'min_s': round(min(values), 2), 'max_s': round(max(values), 2),
            'runs_s': [round(v, 2) for v in values]}


def meta(script):
    return {
        'command': ' '.join(['.venv/bin/python', os.path.relpath(os.path.abspath(script), ROOT)] + sys.argv[1:]),
        'nproc': os.cpu_count(),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'loadavg_1_5_15': [round(x, 2) for x in os.getloadavg()],
    }


def machine_line(m):
    return ('Machine: %s CPU(s), Python %s, %s; %s; load average at the end %s (other work on the shared machine skews the '
            'absolute times: compare the ratios measured side by side)'
            % (m['nproc'], m['python'], m['platform'], m['date'], '/'.join(str(x) for x in m['loadavg_1_5_15'])))


def save(out_dir, name, data, markdown):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name + '.json'), 'w') as handle:
        json.dump(data, handle, indent=2)
        handle.write('\n')
    with open(os.path.join(out_dir, name + '.md'), 'w') as handle:
        handle.write(markdown)
    print(markdown)


def ensure_releases(versions=('1.0.0',), out=os.path.join(ROOT, '.cache', 'releases')):
    """The sample app's release tarballs in ``out`` (default .cache/releases: the lab inventory's bootstrap release)."""
    wanted = [os.path.join(out, 'nodeops-sample-app-%s.tgz' % v) for v in versions]
    if not all(os.path.exists(p) and os.path.exists(p + '.sha256') for p in wanted):
        subprocess.run([os.path.join(ROOT, '.cache', 'node', 'bin', 'node'), 'scripts/build-releases.js', '--out', out,
                        '--versions', ','.join(versions)], cwd=os.path.join(ROOT, 'tests', 'support', 'sample_app'), check=True, env=env())
    with open(os.path.join(out, 'releases.json')) as handle:
        listed = {r['version']: r for r in json.load(handle)}
    return out, {v: dict(listed[v], path=os.path.join(out, listed[v]['file'])) for v in versions if v in listed}
