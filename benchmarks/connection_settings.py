"""Benchmark of connection settings on a no-op playbooks/site.yml (not a test: it measures, it does not assert).

The fleet of benchmarks/site_noop.py (lb1, app1, data1 on 127.0.2.1-3, nodeops-bench-*),
converged once, then the same no-op site.yml run under each setting:

- containers.podman.podman (the lab's connection), pipelining on (ansible.cfg), forks 5: the podman baseline;
- ssh to sshd on each node's own address, port 2222 (tests/support/lab_tasks/sshd_on_node_address.yml),
  as root with a throw-away key: the ssh baseline (pipelining on, ControlPersist=60s, forks 5),
  then one change at a time: pipelining off, ControlPersist off (ControlMaster=no, ControlPath=none),
  forks 1, forks 20, and fact caching on (jsonfile, gathering smart; the cache warmed by one untimed run).

Runs are interleaved (run 1 of every setting, then run 2 of every setting, ...) so a change in
the machine's load hits every setting alike; each ssh run starts with no ControlPersist master
(its own control path directory), like a fresh AWX job. Medians over ``--runs`` and ratios
against the ssh baseline and the podman baseline measured in the same run.

Run from the repository root:  .venv/bin/python benchmarks/connection_settings.py [--runs 3] [--keep] [--skip-converge]
Every container it started is removed at the end, even on failure, unless --keep. It writes
benchmarks/results/connection_settings.json and .md; logs under benchmarks/results/raw/connection_settings/.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  pylint: disable=wrong-import-position,import-error
import site_noop  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROOT = benchlib.ROOT
SSH_PORT = 2222
CP_ON = '-C -o ControlMaster=auto -o ControlPersist=60s'
CP_OFF = '-C -o ControlMaster=no -o ControlPath=none'


def settings(workdir):
    """(label, connection, env) per setting; the baselines first."""
    ssh = {'ANSIBLE_PIPELINING': 'True', 'ANSIBLE_SSH_PIPELINING': 'True', 'ANSIBLE_SSH_ARGS': CP_ON, 'ANSIBLE_FORKS': '5',
           'ANSIBLE_SSH_COMMON_ARGS': '-o UserKnownHostsFile=%s -o StrictHostKeyChecking=accept-new' % os.path.join(workdir, 'known_hosts')}
    podman = {'ANSIBLE_PIPELINING': 'True', 'ANSIBLE_FORKS': '5'}
    cache = {'ANSIBLE_GATHERING': 'smart', 'ANSIBLE_CACHE_PLUGIN': 'jsonfile', 'ANSIBLE_CACHE_PLUGIN_TIMEOUT': '86400',
             'ANSIBLE_CACHE_PLUGIN_CONNECTION': os.path.join(workdir, 'facts')}
    return [
        ('podman, pipelining on, forks 5 (podman baseline)', 'podman', podman),
        ('ssh, pipelining on, ControlPersist 60s, forks 5 (ssh baseline)', 'ssh', ssh),
        ('ssh, pipelining off', 'ssh', dict(ssh, ANSIBLE_PIPELINING='False', ANSIBLE_SSH_PIPELINING='False')),
        ('ssh, ControlPersist off', 'ssh', dict(ssh, ANSIBLE_SSH_ARGS=CP_OFF)),
        ('ssh, forks 1', 'ssh', dict(ssh, ANSIBLE_FORKS='1')),
        ('ssh, forks 20', 'ssh', dict(ssh, ANSIBLE_FORKS='20')),
        ('ssh, fact cache jsonfile + gathering smart', 'ssh', dict(ssh, **cache)),
    ]


def setup_ssh(inv, nodes, workdir, logdir):
    """sshd on every node's own address and a throw-away root key; returns an inventory that reaches the nodes over ssh."""
    key = os.path.join(workdir, 'id_ed25519')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'nodeops-bench', '-f', key], check=True)
    with open(key + '.pub') as handle:
        pub = handle.read().strip()
    play = os.path.join(workdir, 'sshd.yml')
    tasks = [
        {'name': 'sshd', 'ansible.builtin.include_tasks': os.path.join(ROOT, 'tests', 'support', 'lab_tasks', 'sshd_on_node_address.yml'),
         'vars': {'lab_sshd_port': SSH_PORT}},
        {'name': 'root ssh directory', 'ansible.builtin.file': {'path': '/root/.ssh', 'state': 'directory', 'mode': '0700'}},
        {'name': 'root key', 'ansible.builtin.copy': {'dest': '/root/.ssh/authorized_keys', 'content': pub + '\n', 'mode': '0600'}},
    ]
    with open(play, 'w') as handle:
        json.dump([{'name': 'sshd on the node address, root key for the benchmark', 'hosts': 'all', 'become': True, 'gather_facts': False,
                    'tasks': tasks}], handle)
    rc, secs, _text = benchlib.playbook(inv, os.path.join(logdir, 'sshd.log'), play)
    if rc != 0:
        sys.exit('sshd setup failed (rc %d), see %s' % (rc, os.path.join(logdir, 'sshd.log')))
    print('sshd setup: %.1f s' % secs)
    # Host vars of a second inventory (not extra vars: those would apply to localhost too, which tasks delegate to).
    ssh_dir = os.path.join(workdir, 'ssh-inventory')
    return site_noop.inventory(ssh_dir, nodes, host_vars={
        host: {'ansible_connection': 'ansible.builtin.ssh', 'ansible_host': addr, 'ansible_port': SSH_PORT, 'ansible_user': 'root',
               'ansible_ssh_private_key_file': key} for host, _name, addr, _groups in nodes.nodes})


def markdown(data):
    lines = ['# Connection settings benchmark (no-op site.yml, 3 nodes)', '', '`%s`' % data['meta']['command'], '',
             benchlib.machine_line(data['meta']), '',
             'Fleet: the site_noop fleet (%s). ssh goes to sshd on each node\'s loopback address: no network latency, so '
             'every setting that saves round trips saves more on a real network. With 3 nodes, forks above 3 cannot run more '
             'hosts at once, and every tier play of site.yml here has one host: forks only matter for the first play (all 3 nodes); '
             'benchmarks/scale.py shows how time grows with node count at forks 10.' % ', '.join(h for h, _a, _g in site_noop.NODES), '',
             '| setting | runs | wall median (s) | min (s) | max (s) | vs ssh baseline | vs podman baseline | changed per run '
             '| 1-min load before each run |',
             '|---|---|---|---|---|---|---|---|---|']
    for row in data['settings']:
        lines.append('| %s | %d | %.1f | %.1f | %.1f | %.2f | %.2f | %s | %s |' % (
            row['label'], len(row['runs']), row['median_s'], row['min_s'], row['max_s'], row['ratio_ssh_baseline'],
            row['ratio_podman_baseline'], ', '.join(str(r['changed']) for r in row['runs']),
            ', '.join(str(r.get('load1_before', '-')) for r in row['runs'])))
    lines += ['', 'Ratio = the setting\'s median / the baseline\'s median, both from the same interleaved runs (below 1 = faster). '
              'With one run per setting, or when the load column moves a lot within a round, the ratios mostly show the '
              'machine\'s load: rerun with --runs 3 or more.', '']
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3, help='timed runs per setting (default 3)')
    parser.add_argument('--skip-converge', action='store_true', help='the nodes are up and converged (site_noop.py --keep ran just before)')
    args = benchlib.parse_args(parser, site_noop.NODES, 'leave the nodes running')
    logdir = os.path.join(args.out, 'raw', 'connection_settings')
    workdir = tempfile.mkdtemp(prefix='conn-bench-', dir='/tmp')
    table = settings(workdir)
    results = {label: [] for label, _conn, _env in table}
    with site_noop.fleet(args.keep) as nodes:
        inv = site_noop.inventory(workdir, nodes)
        setup = {} if args.skip_converge else dict(site_noop.converge(inv, logdir))
        ssh_inv = setup_ssh(inv, nodes, workdir, logdir)
        # Warm the fact cache (and the ssh known_hosts) once, untimed.
        warm = site_noop.noop_run(ssh_inv, os.path.join(logdir, 'warm-cache.log'), extra_env=table[-1][2])
        if warm['rc'] != 0:
            sys.exit('the warm-up run over ssh failed, see %s' % warm['log'])
        for run in range(args.runs):
            for index, (label, conn, extra_env) in enumerate(table):
                cp_dir = tempfile.mkdtemp(prefix='cp', dir=workdir)
                log = os.path.join(logdir, 'setting%d-run%d.log' % (index + 1, run + 1))
                row = site_noop.noop_run(ssh_inv if conn == 'ssh' else inv, log, extra_env=dict(extra_env, ANSIBLE_SSH_CONTROL_PATH_DIR=cp_dir))
                shutil.rmtree(cp_dir, ignore_errors=True)
                print('run %d %-62s rc %d %6.1f s changed=%d' % (run + 1, label, row['rc'], row['wall_s'], row['changed']))
                if row['rc'] != 0:
                    sys.exit('%s: run failed, see %s' % (label, row['log']))
                results[label].append(row)
    rows = []
    for label, _conn, _env in table:
        row = dict(benchlib.summary([r['wall_s'] for r in results[label]]), label=label, runs=results[label])
        rows.append(row)
    for row in rows:
        row['ratio_podman_baseline'] = round(row['median_s'] / rows[0]['median_s'], 2)
        row['ratio_ssh_baseline'] = round(row['median_s'] / rows[1]['median_s'], 2)
    data = {'meta': benchlib.meta(__file__), 'setup_s': setup, 'settings': rows}
    benchlib.save(args.out, 'connection_settings', data, markdown(data))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
