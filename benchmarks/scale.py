"""Scale simulation of the rolling deploy (not a test: it measures, it does not assert).

20 lightweight app nodes (node role: the sample app, 1 PM2 cluster instance, no worker) and one
nginx_tls load balancer, this benchmark's own podman systemd containers (nodeops-bench-scale-*,
load balancer 127.0.2.20, app nodes 127.0.2.21-40). playbooks/deploy.yml with the rolling_update
role's defaults (gates, drain, smoke test; forks from ansible.cfg) deploys a new release to the
first N app nodes (``rolling_update_hosts=app[0:N-1]``) for every N in ``--nodes`` and every
serial ramp in ``--serial``; every measured deploy ships a new version (2.<k>.0), so every node
of the run changes, like a real deploy.

Per deploy: wall time, and the floor the role cannot go below on this machine

    floor = sum over batches of ( drain step on the load balancer (measured: one nginx_config call
                                  that validates, reloads nginx and waits for connections to end)
                                + the slowest node's PM2 reload in the batch (measured)
                                + node gate minimum 2 s + load balancer gate minimum 2 s )
            + smoke test minimum 2 s

(as benchmarks/rolling_update.py computes it). Orchestration overhead = wall - floor: Ansible's
task dispatch over podman exec (lock, artifact, pre-flight, distribution, switch, bookkeeping);
per node = overhead / N. A least-squares fit wall = a + b * batches + c * nodes summarises it
(docs/scale.md extends it to 500 nodes).

Run from the repository root:  .venv/bin/python benchmarks/scale.py [--nodes 5,10,20] [--serial 1,1 --serial 1,25% ...]
[--cell 20:1,25%] [--runs 1] [--keep] [--skip-provision]. Provisioning 21 nodes is slow on 2 cores: ``--keep`` leaves them
up and ``--skip-provision`` reuses them. Every container it started is removed at the end, even on
failure, unless --keep. Writes benchmarks/results/scale.json and .md; logs under benchmarks/results/raw/scale/.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  pylint: disable=wrong-import-position,import-error
from rolling_update import task_durations  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROOT = benchlib.ROOT
APP_COUNT = 20
LB_ADDRESS = 20
GATE_MIN_S = 2.0  # (success_threshold 3 - 1) * interval 1 s, node gate and load balancer gate (role defaults)
SMOKE_MIN_S = 2.0  # (success_threshold 5 - 1) * interval 0.5 s (role default smoke test)
DRAIN_TASK = 'Stage, validate, promote and reload (one step on the host, under the change lock)'
NODES = [('scale-lb1', benchlib.address(LB_ADDRESS), ['lb'])] + [
    ('scale-app%02d' % (i + 1), benchlib.address(LB_ADDRESS + 1 + i), ['app']) for i in range(APP_COUNT)]


def fleet_nodes(apps):
    """The load balancer and the first ``apps`` app nodes."""
    return NODES[:1 + apps]


def group_vars(releases):
    v1 = releases['1.0.0']
    return {
        'app': {
            'node_app_name': 'shop', 'node_environment': 'lab', 'node_nodejs_install_method': 'npm_registry', 'node_sysctl_apply': False,
            # Lightweight nodes: one API instance, no worker (24 GiB and 2 cores for 21 nodes).
            'node_api_instances': 1, 'node_worker_enabled': False,
            'node_app_env': {'APP_ENV': 'lab', 'HOST': '{{ nodeops_node_address }}', 'PORT': '3000'},
            'node_app_secret_env': {'SESSION_SECRET': 'bench-only-session-secret-0123456789'},
            'node_app_bootstrap_artifact': v1['path'], 'node_app_bootstrap_artifact_sha256': v1['sha256'],
            'node_app_bootstrap_release_id': '1.0.0',
            'rolling_update_lb_gate_server_name': 'shop.lab.test', 'rolling_update_lb_gate_ca_path': '/etc/ssl/nodeops/shop.lab.test.crt',
            'rolling_update_drain_timeout': 60,
        },
        'lb': {'nginx_tls_server_names': ['shop.lab.test'], 'nginx_tls_cert_mode': 'self_signed', 'nginx_tls_upstream_group': 'app',
               # The gates run on the load balancer itself; never rate-limit the benchmark's own probes.
               'nginx_tls_rate_limit_exempt': ['127.0.2.0/24']},
    }


def provision_play(path):
    with open(path, 'w') as handle:
        json.dump([{'name': 'Scale fleet - app nodes (node role, v1 bootstrap) and the load balancer (nginx_tls)', 'hosts': 'bench_nodes',
                    'gather_facts': True, 'strategy': 'free', 'become': True,
                    'tasks': [{'name': 'App node', 'ansible.builtin.include_role': {'name': 'nodeops.stack.node'}, 'when': "'app' in group_names"},
                              {'name': 'Load balancer', 'ansible.builtin.include_role': {'name': 'nodeops.stack.nginx_tls'},
                               'when': "'lb' in group_names"}]}], handle)
    return path


def parse_serial(text):
    return [int(x) if x.isdigit() else x for x in text.split(',')]


def batches(count, serial):
    """Batch sizes as Ansible's serial makes them (percentages of the play's hosts, the last size repeated)."""
    sizes, left, index = [], count, 0
    while left > 0:
        size = serial[min(index, len(serial) - 1)]
        size = max(1, int(float(str(size)[:-1]) * count / 100)) if str(size).endswith('%') else int(size)
        sizes.append(min(size, left))
        left -= sizes[-1]
        index += 1
    return sizes


def history(run_id, hosts):
    """{host: the history line of this run} from each node's deploy history."""
    rows = {}
    for host in hosts:
        out = subprocess.run(['podman', 'exec', benchlib.PREFIX + host, 'cat', '/srv/shop/deploy-history.jsonl'], capture_output=True,
                             text=True, env=benchlib.env(), check=False, timeout=60).stdout
        for line in out.splitlines():
            event = json.loads(line)
            if event.get('run_id') == run_id and event.get('event') == 'deployed':
                rows[host] = event
    return rows


def deploy(inv, log, rel, count, serial):
    rc, secs, text = benchlib.playbook(inv, log, os.path.join(ROOT, 'playbooks', 'deploy.yml'),
                                       '-e', 'rolling_update_artifact=%s' % rel['path'], '-e', 'rolling_update_artifact_sha256=%s' % rel['sha256'],
                                       '-e', 'rolling_update_hosts=app[0:%d]' % (count - 1),
                                       '-e', json.dumps({'rolling_update_serial': serial}),
                                       extra_env={'ANSIBLE_CALLBACKS_ENABLED': 'ansible.posix.profile_tasks'})
    return rc, secs, text


def measure(inv, log, rel, count, serial):
    rc, secs, text = deploy(inv, log, rel, count, serial)
    hosts = [h for h, _a, g in NODES if 'app' in g][:count]  # the inventory's app group order
    run_id = re.search(r'rolling_update deploy \w+ - run (\S+)', text)
    hist = history(run_id.group(1) if run_id else None, hosts)
    sizes = batches(count, serial)
    lb_calls = [s for name, s in task_durations(text) if name.endswith(DRAIN_TASK)]
    # One call per state change on the load balancer: drain, enable, drain, enable, ...
    drains = lb_calls[0::2] if len(lb_calls) == 2 * len(sizes) else []
    floor, start = SMOKE_MIN_S, 0
    for index, size in enumerate(sizes):
        batch = hosts[start:start + size]
        start += size
        floor += (drains[index] if drains else 0) + max((hist.get(h, {}).get('reload_s') or 0) for h in batch) + 2 * GATE_MIN_S
    recap = benchlib.recap(text)
    return {'nodes': count, 'serial': serial, 'batches': sizes, 'rc': rc, 'wall_s': round(secs, 1), 'floor_s': round(floor, 1),
            'overhead_s': round(secs - floor, 1), 'overhead_per_node_s': round((secs - floor) / count, 2),
            'drain_steps_measured': bool(drains), 'drain_s_total': round(sum(drains), 1),
            'reload_s_median': round(statistics.median([hist[h]['reload_s'] for h in hist if hist[h].get('reload_s') is not None]), 2)
            if hist else None,
            'nodes_deployed': len(hist), 'failed_hosts': sorted(h for h, r in recap.items() if r['failed'] or r['unreachable']),
            'version': rel['version'], 'log': os.path.relpath(log, ROOT)}


def fit(rows):
    """Least squares wall = a + b * batches + c * nodes (None if the rows cannot determine it)."""
    xs = [(1.0, float(len(r['batches'])), float(r['nodes'])) for r in rows]
    ys = [r['wall_s'] for r in rows]
    ata = [[sum(x[i] * x[j] for x in xs) for j in range(3)] for i in range(3)]
    aty = [sum(x[i] * y for x, y in zip(xs, ys)) for i in range(3)]
    # Gaussian elimination on the 3x3 normal equations.
    m = [row[:] + [v] for row, v in zip(ata, aty)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r, c=col: abs(m[r][c]))
        if abs(m[pivot][col]) < 1e-9:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col])]
    a, b, c = (m[i][3] / m[i][i] for i in range(3))
    return {'a_s': round(a, 1), 'per_batch_s': round(b, 2), 'per_node_s': round(c, 2)}


def markdown(data):
    lines = ['# Scale simulation: rolling deploy over up to %d app nodes' % data['fleet_apps'], '', '`%s`' % data['meta']['command'], '',
             benchlib.machine_line(data['meta']), '',
             'Fleet: %d app nodes (node role, sample app, 1 PM2 cluster instance, no worker) + 1 nginx_tls load balancer, podman '
             'systemd containers on this machine, containers.podman.podman connection, forks %s (ansible.cfg). Provisioning (not in '
             'the table): %s s. playbooks/deploy.yml with the role defaults (node gate and load balancer gate 3 x 1 s, drain, smoke test).'
             % (data['fleet_apps'], data['forks'], data.get('provision_s', '-')), '',
             '| nodes | serial | batches | wall (s) | floor (s) | overhead (s) | overhead per node (s) | median PM2 reload (s) | rc |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in data['deploys']:
        lines.append('| %d | %s | %d (%s) | %.1f | %.1f | %.1f | %.2f | %s | %d%s |' % (
            r['nodes'], json.dumps(r['serial']), len(r['batches']), '+'.join(str(b) for b in r['batches']), r['wall_s'], r['floor_s'],
            r['overhead_s'], r['overhead_per_node_s'], r['reload_s_median'], r['rc'],
            '' if r['drain_steps_measured'] else ' (drain not measured: floor without it)'))
    f = data.get('fit')
    if f:
        lines += ['', 'Least-squares fit over these rows: wall = %.1f s + %.2f s x batches + %.2f s x nodes.'
                  % (f['a_s'], f['per_batch_s'], f['per_node_s'])]
    lines += ['', 'Floor = sum over batches of the drain step on the load balancer + the slowest PM2 reload + 2 x 2 s gate minimum, '
              '+ 2 s smoke test minimum. Overhead = wall - floor: Ansible dispatching tasks (lock, artifact, pre-flight gate, '
              'distribution, switch, bookkeeping, report) over podman exec on 2 shared cores.', '']
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nodes', default='5,10,20', help='app node counts (default 5,10,20; at most %d)' % APP_COUNT)
    parser.add_argument('--serial', action='append', help='a serial ramp, comma-separated (default: 1,1  1,25%%  1,100%%); repeatable')
    parser.add_argument('--fleet', type=int, default=APP_COUNT, help='app nodes to start (default %d; fewer only to try the script out)' % APP_COUNT)
    parser.add_argument('--cell', action='append', help='one N:serial cell, e.g. 20:1,25%% (repeatable; replaces --nodes x --serial)')
    parser.add_argument('--runs', type=int, default=1, help='deploys per cell (default 1; the table shows medians)')
    parser.add_argument('--skip-provision', action='store_true', help='the nodes are up and provisioned (a previous --keep run)')
    args = benchlib.parse_args(parser, NODES, 'leave the nodes running (reuse with --skip-provision)')
    counts = [int(x) for x in args.nodes.split(',')]
    serials = [parse_serial(s) for s in (args.serial or ['1,1', '1,25%', '1,100%'])]
    logdir = os.path.join(args.out, 'raw', 'scale')
    cells = [(n, s) for s in serials for n in counts]
    if args.cell:
        cells = [(int(c.split(':')[0]), parse_serial(c.split(':', 1)[1])) for c in args.cell]
    if not 1 <= args.fleet <= APP_COUNT or not all(1 <= n <= args.fleet for n, _s in cells):
        sys.exit('--fleet must be within 1..%d and every node count within 1..--fleet' % APP_COUNT)
    versions = ['1.0.0'] + ['2.%d.0' % k for k in range(1, len(cells) * args.runs + 1)]
    _out, rels = benchlib.ensure_releases(versions, out=os.path.join(ROOT, '.cache', 'bench-scale-releases'))
    workdir = tempfile.mkdtemp(prefix='scale-bench-')
    data = {'forks': 10, 'fleet_apps': args.fleet, 'deploys': []}
    # 21 systemd nodes booting on 2 busy cores: one can take minutes.
    with benchlib.Fleet(fleet_nodes(args.fleet), keep=args.keep, boot_timeout=600) as fleet:
        inv = benchlib.write_inventory(workdir, fleet, group_vars=group_vars(rels), all_vars={
            'ansible_connection': 'containers.podman.podman', 'ansible_python_interpreter': '/usr/bin/python3', 'nodeops_environment': 'lab'})
        if not args.skip_provision:
            rc, secs, _text = benchlib.playbook(inv, os.path.join(logdir, 'provision.log'), provision_play(os.path.join(workdir, 'provision.yml')))
            print('provision: rc %d, %.1f s' % (rc, secs))
            if rc != 0:
                sys.exit('provisioning failed (rc %d), see %s' % (rc, os.path.join(logdir, 'provision.log')))
            data['provision_s'] = round(secs, 1)
        raw, k, failed = [], 0, None
        for _run in range(args.runs):
            for count, serial in cells:
                if failed:
                    break
                k += 1
                row = measure(inv, os.path.join(logdir, 'deploy-%02d-n%d.log' % (k, count)), rels[versions[k]], count, serial)
                print('n=%-3d serial=%-14s rc %d wall %.1f s floor %.1f s overhead/node %.2f s'
                      % (count, json.dumps(serial), row['rc'], row['wall_s'], row['floor_s'], row['overhead_per_node_s']))
                raw.append(row)
                # Saved after every deploy: an interrupted matrix still leaves the rows it measured.
                report(args.out, data, cells, raw)
                if row['rc'] != 0:
                    failed = row['log']
    # After the with block: a failed deploy leaves a --keep fleet for a rerun with --skip-provision.
    if failed:
        sys.exit('deploy failed, see %s; the matrix stopped there' % failed)


def report(out, data, cells, raw):
    data['deploys'] = []
    for count, serial in cells:
        same = [r for r in raw if r['nodes'] == count and r['serial'] == serial]
        if same:
            med = sorted(same, key=lambda r: r['wall_s'])[len(same) // 2]
            data['deploys'].append(dict(med, runs=len(same), walls_s=[r['wall_s'] for r in same]))
    data['fit'] = fit([r for r in data['deploys'] if r['rc'] == 0])
    data['meta'] = benchlib.meta(__file__)
    data['all_runs'] = raw
    benchlib.save(out, 'scale', data, markdown(data))


if __name__ == '__main__':
    main()
