"""Benchmark of the rolling_update role (not a test: it measures, it does not assert).

A 3-node rollout v1 -> v2 on the molecule scenario `rolling`'s nodes (3 app nodes behind
one nginx load balancer), under continuous load:

1. The role (playbooks/deploy.yml, canary then 2): deploy wall time against its floor,
   the sum over batches of drain + reload + the gates' minimum time
     floor = sum over batches of ( connection drain wait on the load balancer
                                   + the slowest node's PM2 reload (measured)
                                   + node gate minimum (success_threshold - 1) * interval
                                   + load balancer gate minimum, the same )
   failed requests and client-side retries through the load balancer, and p50/p99 latency
   during the rollout against the steady state before it.
2. The naive runbook (benchmarks/naive_rollout.yml: stop, replace, start, serial 1, no drain)
   doing the same v1 -> v2, with the same load.

Both runs also send load straight to the first app node (bypassing the load balancer), which
shows what each node's clients see: a PM2 cluster reload against a stop/start.

Run from the repository root, with the scenario's nodes up:

    .venv/bin/molecule converge -s rolling       # or: create + converge; leaves the nodes running
    .venv/bin/python benchmarks/rolling_update.py [--steady 20] [--runs 3]
    .venv/bin/molecule destroy -s rolling

It writes benchmarks/results/rolling_update.json and .md (command line, machine note) and
the playbook logs under benchmarks/results/raw/ (git-ignored).
"""

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'support'))

from loadgen import LoadGenerator  # noqa: E402  pylint: disable=wrong-import-position,import-error

APPS = {'nodeops-mol-rolling-app1': '127.0.1.141', 'nodeops-mol-rolling-app2': '127.0.1.142',
        'nodeops-mol-rolling-app3': '127.0.1.143'}
LB = 'nodeops-mol-rolling-lb1'
LB_URL = 'https://127.0.1.149/'
SERVER_NAME = 'shop.lab.test'
RATE = 100
RATE_POST = 20
CONCURRENCY = 4
GATE_MIN_S = 2.0  # (success_threshold 3 - 1) * interval 1 s, node gate and load balancer gate (role defaults)


def env():
    e = dict(os.environ)
    e.update({
        'ANSIBLE_CONFIG': os.path.join(ROOT, 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.cache', 'collections'),
        'ANSIBLE_CALLBACKS_ENABLED': 'ansible.posix.profile_tasks',
        'ANSIBLE_NOCOLOR': '1',
        'CONTAINERS_CONF': os.path.join(ROOT, 'lab', 'containers.conf'),
        'PATH': '%s:%s:%s' % (os.path.join(ROOT, '.venv', 'bin'), os.path.join(ROOT, '.cache', 'node', 'bin'), e.get('PATH', '')),
    })
    return e


def find_inventory():
    if os.environ.get('MOLECULE_INVENTORY_FILE'):
        return os.environ['MOLECULE_INVENTORY_FILE']
    found = sorted(glob.glob(os.path.expanduser('~/.ansible/tmp/molecule.*.rolling/inventory/ansible_inventory.yml')),
                   key=os.path.getmtime)
    if not found:
        sys.exit('no inventory of the molecule scenario "rolling" found: run `molecule converge -s rolling` first '
                 '(or set MOLECULE_INVENTORY_FILE)')
    return found[-1]


def podman(container, *cmd):
    return subprocess.run(['podman', 'exec', container] + list(cmd), capture_output=True, text=True, env=env(),
                          check=True, timeout=120).stdout


def build_releases(out):
    subprocess.run([os.path.join(ROOT, '.cache', 'node', 'bin', 'node'), 'scripts/build-releases.js', '--out', out,
                    '--versions', '1.0.0,2.0.0'], cwd=os.path.join(ROOT, 'tests', 'support', 'sample_app'), check=True, env=env())
    return {r['version']: dict(r, path=os.path.join(out, r['file'])) for r in json.load(open(os.path.join(out, 'releases.json')))}


def playbook(inventory, log, path, *extra):
    start = time.monotonic()
    with open(log, 'w') as out:
        rc = subprocess.run([os.path.join(ROOT, '.venv', 'bin', 'ansible-playbook'), '-i', inventory, path] + list(extra),
                            stdout=out, stderr=subprocess.STDOUT, env=env(), cwd=ROOT, check=False).returncode
    return rc, round(time.monotonic() - start, 1), open(log).read()


def deploy(inventory, log, rel, *extra):
    return playbook(inventory, log, os.path.join(ROOT, 'playbooks', 'deploy.yml'),
                    '-e', 'rolling_update_artifact=%s' % rel['path'], '-e', 'rolling_update_artifact_sha256=%s' % rel['sha256'], *extra)


def task_durations(log):
    """(task name, seconds) in order, from ansible.posix.profile_tasks output."""
    lines = log.splitlines()
    out, prev = [], None
    for i, line in enumerate(lines):
        m = re.match(r'TASK \[(.*)\] \*+', line)
        if m and i + 1 < len(lines):
            d = re.search(r'\((\d+):(\d+):(\d+\.\d+)\)', lines[i + 1])
            if d and prev is not None:
                out.append((prev, int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))))
            prev = m.group(1)
    return out


def history(run_id):
    rows = {}
    for container in APPS:
        for line in podman(container, 'cat', '/srv/shop/deploy-history.jsonl').splitlines():
            event = json.loads(line)
            if event.get('run_id') == run_id and event.get('event') == 'deployed':
                rows[container] = event
    return rows


def window(gen, start, end):
    r = gen.report(start=start, end=end)
    return {'total': r['total'], 'failed': r['failed'], 'failed_by_kind': r['failed_by_kind'], 'retries': r['retries'],
            'versions': r['versions'], 'p50_ms': r['latency_ms']['p50'] if r['latency_ms'] else None,
            'p99_ms': r['latency_ms']['p99'] if r['latency_ms'] else None, 'duration_s': r['duration_s']}


def lb_reloads(since):
    out = podman(LB, 'journalctl', '-u', 'nginx', '-o', 'short-unix', '--no-pager', '--since=@%d' % int(since))
    return sum(1 for line in out.splitlines() if 'Reloading nginx' in line)


def measured_rollout(inventory, logdir, label, run, steady):
    """Run ``run()`` under load through the LB and straight at app1; return the windows."""
    cafile = os.path.join(logdir, 'lb-cert.pem')
    with open(cafile, 'w') as handle:
        handle.write(podman(LB, 'cat', '/etc/ssl/nodeops/%s.crt' % SERVER_NAME))
    lb = LoadGenerator(LB_URL, concurrency=CONCURRENCY, rate=RATE, duration=600, timeout=10, cafile=cafile, sni=SERVER_NAME)
    direct = LoadGenerator('http://%s:3000/' % APPS['nodeops-mol-rolling-app1'], concurrency=2, rate=20, duration=600, timeout=10)
    # Non-idempotent requests: nginx does not pass a POST to another server once it was sent to one,
    # so a node that stops under it shows through the load balancer.
    post = LoadGenerator(LB_URL + 'echo', method='POST', body='{"order": 1}', headers={'Content-Type': 'application/json'},
                         concurrency=2, rate=RATE_POST, duration=600, timeout=10, cafile=cafile, sni=SERVER_NAME)
    gens = (lb, direct, post)
    with lb, direct, post:
        time.sleep(1)
        for g in gens:
            g.mark('steady')
        time.sleep(steady)
        for g in gens:
            g.mark('rollout')
        started = time.time()
        result = run()
        for g in gens:
            g.mark('done')
        time.sleep(3)
    if lb.report()['stopped_by'] != 'stop':
        print('warning: the load stopped before the rollout ended (%s)' % lb.report()['stopped_by'])
    return dict(result, label=label, lb_steady=window(lb, 'steady', 'rollout'), lb_rollout=window(lb, 'rollout', 'done'),
                direct_rollout=window(direct, 'rollout', 'done'), post_rollout=window(post, 'rollout', 'done'),
                lb_reloads=lb_reloads(started))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steady', type=float, default=20, help='seconds of steady-state load before each rollout')
    parser.add_argument('--runs', type=int, default=1, help='measured role + naive pairs (default 1); the summary shows medians')
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results'), help='output directory')
    args = parser.parse_args()
    if args.runs < 1:
        parser.error('--runs must be at least 1, got %d' % args.runs)
    inventory = find_inventory()
    logdir = os.path.join(args.out, 'raw', 'rolling_update')
    os.makedirs(logdir, exist_ok=True)
    rels = build_releases(tempfile.mkdtemp(prefix='rolling-bench-'))
    v1, v2 = rels['1.0.0'], rels['2.0.0']

    # Start from v1 everywhere (through the role; not measured).
    rc, secs, log = deploy(inventory, os.path.join(logdir, 'setup-v1.log'), v1)
    if rc != 0:
        sys.exit('could not put the fleet on v1 (rc %s), see %s/setup-v1.log' % (rc, logdir))

    def role_run():
        rc, secs, log = deploy(inventory, os.path.join(logdir, 'role-v2.log'), v2)
        run_id = re.search(r'rolling_update deploy \w+ - run (\S+)', log)
        durations = task_durations(log)
        # nginx_tls's upstream_state makes one nginx_config call per state change on the load balancer: drain, enable, drain,
        # enable. A drain call = stage + nginx -t + promote + reload + wait for new workers + wait for the connections to end.
        lb_calls = [s for name, s in durations if name.endswith('Stage, validate, promote and reload (one step on the host, under the change lock)')]
        drain_waits = lb_calls[0::2]
        hist = history(run_id.group(1) if run_id else None)
        # batches: the canary, then the other two
        nodes = list(APPS)
        batches = [nodes[:1], nodes[1:]]
        floor = 0.0
        for index, batch in enumerate(batches):
            reload_s = max((hist.get(n, {}).get('reload_s') or 0) for n in batch)
            floor += (drain_waits[index] if index < len(drain_waits) else 0) + reload_s + 2 * GATE_MIN_S
        return {'rc': rc, 'wall_s': secs, 'floor_s': round(floor, 1), 'drain_waits_s': [round(x, 2) for x in drain_waits],
                'nodes': {n: {k: hist.get(n, {}).get(k) for k in ('reload_s', 'node_gate_s', 'lb_gate_s', 'total_s')} for n in APPS}}

    runs = []
    for index in range(args.runs):
        if index:
            # From the naive runbook's release back to v1 through the role (not measured).
            rc, secs, log = deploy(inventory, os.path.join(logdir, 'setup-v1-%d.log' % index), v1)
            if rc != 0:
                sys.exit('could not put the fleet back on v1 (rc %s), see %s/setup-v1-%d.log' % (rc, logdir, index))
        role = measured_rollout(inventory, logdir, 'rolling_update role', role_run, args.steady)

        # Back to v1 through the role (not measured), then the naive runbook.
        rc, secs, log = playbook(inventory, os.path.join(logdir, 'setup-rollback.log'), os.path.join(ROOT, 'playbooks', 'rollback.yml'))
        if rc != 0:
            sys.exit('could not roll the fleet back to v1 (rc %s), see %s/setup-rollback.log' % (rc, logdir))

        def naive_run(index=index):
            rc, secs, _log = playbook(inventory, os.path.join(logdir, 'naive-v2.log'), os.path.join(ROOT, 'benchmarks', 'naive_rollout.yml'),
                                      '-e', 'naive_artifact=%s' % v2['path'], '-e', 'naive_release_id=naive-2.0.0-%d' % index)
            return {'rc': rc, 'wall_s': secs}

        naive = measured_rollout(inventory, logdir, 'naive runbook (stop, replace, start; serial 1; no drain)', naive_run, args.steady)
        runs.append({'role': role, 'naive': naive})
        print('run %d of %d: role %.1f s, naive %.1f s' % (index + 1, args.runs, role['wall_s'], naive['wall_s']), flush=True)

    # Leave the fleet consistent: the role takes it to v2 (its own release directory).
    deploy(inventory, os.path.join(logdir, 'cleanup-v2.log'), v2)

    machine = 'Machine: %d CPU(s), Python %s, %s; %s; load average at the end %s (other work on the machine skews the numbers)' % (
        os.cpu_count(), platform.python_version(), platform.platform(), time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        '/'.join('%.2f' % x for x in os.getloadavg()))
    command = ('.venv/bin/python benchmarks/rolling_update.py' + (' --steady %g' % args.steady if args.steady != 20 else '')
               + (' --runs %d' % args.runs if args.runs != 1 else ''))
    # The detailed tables show the run with the median role wall time; the summary covers every run.
    median_run = sorted(runs, key=lambda r: r['role']['wall_s'])[(len(runs) - 1) // 2]
    data = {'command': command, 'machine': machine, 'load': {'lb': '%d req/s, %d keep-alive connections, HTTPS, GET /' % (RATE, CONCURRENCY),
                                                             'post': '%d req/s, 2 keep-alive connections, HTTPS, POST /echo (never retried)' % RATE_POST,
                                                             'direct': '20 req/s, 2 connections, HTTP, GET / on app1'},
            'role': median_run['role'], 'naive': median_run['naive'], 'runs': runs, 'summary': summarize(runs)}
    with open(os.path.join(args.out, 'rolling_update.json'), 'w') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write('\n')
    md = render(data)
    with open(os.path.join(args.out, 'rolling_update.md'), 'w') as handle:
        handle.write(md)
    print(md)


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else round((values[mid - 1] + values[mid]) / 2, 3)


def summarize(runs):
    """Medians over the runs, and ratios measured side by side (role and naive in the same run)."""
    out = {'runs': len(runs)}
    for key in ('role', 'naive'):
        rows = [r[key] for r in runs]
        out[key] = {'wall_s': median([r['wall_s'] for r in rows]),
                    'failed_lb': sum(r['lb_rollout']['failed'] for r in rows),
                    'requests_lb': sum(r['lb_rollout']['total'] for r in rows),
                    'failed_post': sum(r['post_rollout']['failed'] for r in rows),
                    'failed_direct': sum(r['direct_rollout']['failed'] for r in rows),
                    'p99_ratio': median([r['lb_rollout']['p99_ms'] / r['lb_steady']['p99_ms']
                                         for r in rows if r['lb_rollout']['p99_ms'] and r['lb_steady']['p99_ms']])}
    out['role']['floor_s'] = median([r['role']['floor_s'] for r in runs])
    out['role_over_floor'] = median([r['role']['wall_s'] / r['role']['floor_s'] for r in runs if r['role']['floor_s']])
    out['role_over_naive'] = median([r['role']['wall_s'] / r['naive']['wall_s'] for r in runs if r['naive']['wall_s']])
    return out


def render(d):
    role, naive = d['role'], d['naive']
    summary = d.get('summary')
    lines = ['# rolling_update benchmark', '', '`%s`' % d['command'], '', d['machine'], '',
             'Load: through the load balancer %s, and %s; straight at a node %s.' % (d['load']['lb'], d['load']['post'], d['load']['direct']), '']
    lines += render_summary(summary)
    lines += ['## 3-node rollout v1 -> v2 (the run with the median role wall time)', '',
              '| | wall (s) | floor (s) | failed GET via LB | retries via LB | LB reloads | failed POST via LB | failed direct to app1 '
              '| p50 steady (ms) | p50 rollout (ms) | p99 steady (ms) | p99 rollout (ms) | versions via LB |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for row in (role, naive):
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            row['label'], row['wall_s'], row.get('floor_s', '-'), row['lb_rollout']['failed'], row['lb_rollout']['retries'], row['lb_reloads'],
            '%s of %s' % (row['post_rollout']['failed'], row['post_rollout']['total']), row['direct_rollout']['failed'],
            row['lb_steady']['p50_ms'], row['lb_rollout']['p50_ms'], row['lb_steady']['p99_ms'],
            row['lb_rollout']['p99_ms'], ', '.join('%s: %s' % kv for kv in sorted(row['lb_rollout']['versions'].items()))))
    lines += ['', 'Floor = sum over the 2 batches of the drain step on the load balancer (%s s: one nodeops.stack.nginx_config call '
              'that validates, promotes, reloads nginx, waits for new workers and for the connections to end) + the slowest node\'s PM2 '
              'reload + 2 x the gate minimum (2 s node gate, 2 s load balancer gate). Everything above the floor is orchestration: Ansible '
              'tasks over `podman exec` (pre-flight, distribution, switch, enable, bookkeeping).' % role.get('drain_waits_s'), '',
              '| node | reload (s) | node gate (s) | LB gate (s) | node total (s) |', '|---|---|---|---|---|']
    for node, row in sorted(role['nodes'].items()):
        lines.append('| %s | %s | %s | %s | %s |' % (node, row['reload_s'], row['node_gate_s'], row['lb_gate_s'], row['total_s']))
    lines += ['', 'Direct-to-node load shows each node\'s own availability: failures there mean the node refused or dropped '
              'requests while it was restarted (the load balancer hides most of that from its clients by retrying idempotent '
              'requests on another server; it does not do that for a POST it already sent). Retries via the load balancer are the load '
              'generator\'s keep-alive-race retries (a GET sent in the instant an nginx reload\'s old worker closed its idle '
              'connection; idle connections it finds closed before sending are reconnected, not retried).', '']
    return '\n'.join(lines)


def round2(value):
    return '-' if value is None else round(value, 2)


def render_summary(summary):
    if not summary:
        return []
    role, naive = summary['role'], summary['naive']
    role_row = (role['wall_s'], role['floor_s'], role['failed_lb'], role['requests_lb'], role['failed_post'], role['failed_direct'],
                round2(role['p99_ratio']))
    naive_row = (naive['wall_s'], naive['failed_lb'], naive['requests_lb'], naive['failed_post'], naive['failed_direct'], round2(naive['p99_ratio']))
    ratios = (round2(summary['role_over_floor']), round2(summary['role_over_naive']))
    return ['## Summary over %d run(s) (medians; failures summed over every run)' % summary['runs'], '',
            '| | median wall (s) | median floor (s) | failed GET via LB | failed POST via LB | failed direct to app1 | median p99 rollout / steady |',
            '|---|---|---|---|---|---|---|',
            '| rolling_update role | %s | %s | %s of %s | %s | %s | %s |' % role_row,
            '| naive runbook | %s | - | %s of %s | %s | %s | %s |' % naive_row,
            '', 'Ratios measured side by side in each run (medians): role wall / floor %s, role wall / naive wall %s.' % ratios, '']


if __name__ == '__main__':
    main()
