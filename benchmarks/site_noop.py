"""Benchmark of a no-op playbooks/site.yml on 3 lab nodes (not a test: it measures, it does not assert).

The smallest fleet site.yml accepts with every tier present: one load balancer (lb: nginx_tls),
one app node (app: node role, the sample app's v1, PM2 under systemd) and one data node
(redis, mongo and backup: redis role, the MongoDB wire-protocol test server, backup role).
The nodes are this benchmark's own podman systemd containers (nodeops-bench-*, 127.0.2.1-3),
configured by the lab inventory's group_vars, reached with containers.podman.podman.

1. Scaffolding (lab/scaffolding.yml) and a first site.yml converge: not timed for the table.
2. ``--runs`` further site.yml runs, timed: median, min, max wall time, and the PLAY RECAP's
   changed count per run (a no-op run must change nothing; a non-zero count is reported,
   with the tasks that changed).

Run from the repository root:  .venv/bin/python benchmarks/site_noop.py [--runs 3] [--keep]
(``--keep`` leaves the nodes running for benchmarks/connection_settings.py; without it every
container it started is removed, even on failure). It writes benchmarks/results/site_noop.json
and .md; the playbook logs go to benchmarks/results/raw/site_noop/ (git-ignored).
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROOT = benchlib.ROOT
SITE = os.path.join(ROOT, 'playbooks', 'site.yml')
NODES = [('lb1', benchlib.address(1), ['lb']),
         ('app1', benchlib.address(2), ['app']),
         ('data1', benchlib.address(3), ['redis', 'mongo', 'backup'])]


def fleet(keep=False):
    return benchlib.Fleet(NODES, keep=keep)


def inventory(workdir, nodes, host_vars=None):
    releases, _listed = benchlib.ensure_releases()
    host_vars = {host: dict(values) for host, values in (host_vars or {}).items()}
    host_vars.setdefault('app1', {})['nodeops_lab_releases_dir'] = releases
    for host, _name, _address, _groups in nodes.nodes:
        # connection_settings logs in over ssh as root (with a key); site.yml's hardening must keep allowing that.
        host_vars.setdefault(host, {})['hardening_ssh_permit_root_login'] = 'prohibit-password'
    return benchlib.write_inventory(workdir, nodes, host_vars=host_vars)


def converge(inv, logdir):
    """Scaffolding and one site.yml run (untimed setup); exits naming the log on failure."""
    for name, path in (('scaffolding', os.path.join(ROOT, 'lab', 'scaffolding.yml')), ('converge', SITE)):
        log = os.path.join(logdir, name + '.log')
        rc, secs, _text = benchlib.playbook(inv, log, path, '-e', 'lab_repo_root=%s' % ROOT)
        print('%s: rc %d, %.1f s' % (name, rc, secs))
        if rc != 0:
            sys.exit('%s failed (rc %d), see %s' % (name, rc, log))
        yield name, round(secs, 1)


def noop_run(inv, log, *extra, extra_env=None):
    """One timed site.yml run: {rc, wall_s, changed, changed_tasks, recap}."""
    load1 = round(os.getloadavg()[0], 2)
    rc, secs, text = benchlib.playbook(inv, log, SITE, *extra, extra_env=extra_env)
    rec = benchlib.recap(text)
    return {'rc': rc, 'wall_s': round(secs, 2), 'load1_before': load1, 'changed': sum(h['changed'] for h in rec.values()),
            'failed': sum(h['failed'] + h['unreachable'] for h in rec.values()), 'tasks_ok': sum(h['ok'] for h in rec.values()),
            'changed_tasks': benchlib.changed_tasks(text), 'recap': rec, 'log': os.path.relpath(log, ROOT)}


def markdown(data):
    s = data['summary']
    lines = ['# site.yml no-op benchmark', '', '`%s`' % data['meta']['command'], '', benchlib.machine_line(data['meta']), '',
             'Fleet: %s; connection containers.podman.podman, ansible.cfg defaults (pipelining on, forks 10).'
             % ', '.join('%s (%s, %s)' % (h, a, '+'.join(g)) for h, a, g in NODES), '',
             'Setup (not in the table): %s.' % ', '.join('%s %s s' % kv for kv in data['setup_s'].items()), '',
             '## No-op site.yml runs', '',
             '| runs | wall median (s) | wall min (s) | wall max (s) | changed per run | failed per run | tasks ok per run | 1-min load before each run |',
             '|---|---|---|---|---|---|---|---|',
             '| %d | %.1f | %.1f | %.1f | %s | %s | %s | %s |' % (
                 len(data['runs']), s['median_s'], s['min_s'], s['max_s'], ', '.join(str(r['changed']) for r in data['runs']),
                 ', '.join(str(r['failed']) for r in data['runs']), ', '.join(str(r['tasks_ok']) for r in data['runs']),
                 ', '.join(str(r.get('load1_before', '-')) for r in data['runs']))]
    changed = sorted({t for r in data['runs'] for t in r['changed_tasks']})
    lines += ['', 'Changed tasks in the timed runs: %s.' % ('; '.join(changed) if changed else 'none (changed=0 in every run)'), '']
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3, help='timed no-op runs (default 3)')
    args = benchlib.parse_args(parser, NODES, 'leave the nodes running (for connection_settings.py)')
    logdir = os.path.join(args.out, 'raw', 'site_noop')
    workdir = tempfile.mkdtemp(prefix='site-noop-bench-')
    with fleet(args.keep) as nodes:
        inv = inventory(workdir, nodes)
        setup = dict(converge(inv, logdir))
        runs = []
        for index in range(args.runs):
            run = noop_run(inv, os.path.join(logdir, 'noop-%d.log' % (index + 1)))
            print('no-op run %d: rc %d, %.1f s, changed=%d' % (index + 1, run['rc'], run['wall_s'], run['changed']))
            runs.append(run)
    data = {'meta': benchlib.meta(__file__), 'nodes': NODES, 'setup_s': setup, 'runs': runs,
            'summary': benchlib.summary([r['wall_s'] for r in runs])}
    benchlib.save(args.out, 'site_noop', data, markdown(data))
    if any(r['rc'] != 0 for r in runs):
        sys.exit('a timed run failed, see the logs under %s' % logdir)


if __name__ == '__main__':
    main()
