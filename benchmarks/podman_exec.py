"""Benchmark of lab/bin/podman-runc against plain podman as the lab's Ansible executable (not a test: it measures).

Every Ansible task on a lab node is one ``podman exec`` (containers.podman.podman connection);
lab/bin/podman-runc runs the simple forms of it straight through ``runc exec``. This measures both,
side by side, on 3 podman systemd nodes of the lab image (nodeops-bench-pe1..3, 127.0.2.50-52):

1. one ``exec NODE true`` at a time, ``--execs`` per round: wall time and machine-wide CPU per exec
   (podman's own process, conmon and runc included: they are not all children of this process,
   so the CPU comes from /proc/stat, less the background rate measured before each round);
2. a play of ``--tasks`` tasks (command, stat, copy with unchanged content, in turn) on the 3 nodes,
   forks 3, pipelining on: wall time and machine-wide CPU per run.

The variants alternate within each of ``--rounds`` rounds, so both see the same machine load; the
table gives medians and the ratio runc/podman. Run from the repository root:
  .venv/bin/python benchmarks/podman_exec.py [--rounds 3] [--execs 40] [--tasks 60]
It writes benchmarks/results/podman_exec.json and .md; every container it started is removed, even on failure.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROOT = benchlib.ROOT
NODES = [('pe%d' % i, benchlib.address(49 + i), ['bench']) for i in (1, 2, 3)]
VARIANTS = (('podman', 'podman'), ('podman-runc', os.path.join(ROOT, 'lab', 'bin', 'podman-runc')))
TASKS = ('- ansible.builtin.command: /bin/true\n  changed_when: false\n',
         '- ansible.builtin.stat: {path: /etc/hostname}\n',
         '- ansible.builtin.copy: {content: "bench\\n", dest: /var/tmp/podman-exec-bench.txt, mode: "0644"}\n')
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def busy_seconds():
    """CPU seconds the whole machine has spent busy (every state but idle and iowait) since boot."""
    with open('/proc/stat') as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def background_rate(seconds=3.0):
    """Busy CPU seconds per second while this benchmark does nothing."""
    before = busy_seconds()
    time.sleep(seconds)
    return (busy_seconds() - before) / seconds


def measured(run, background):
    """Run ``run()``; return (wall seconds, machine CPU seconds less the background, its result)."""
    cpu0, wall0 = busy_seconds(), time.monotonic()
    result = run()
    wall = time.monotonic() - wall0
    return wall, max(0.0, busy_seconds() - cpu0 - background * wall), result


def exec_loop(executable, container, count):
    env = benchlib.env()
    for _i in range(count):
        subprocess.run([executable, 'exec', container, 'true'], env=env, check=True, stdout=subprocess.DEVNULL)


def write_play(workdir, tasks):
    body = ''.join('    ' + line for i in range(tasks) for line in TASKS[i % len(TASKS)].splitlines(True))
    path = os.path.join(workdir, 'play.yml')
    with open(path, 'w') as handle:
        handle.write('- hosts: all\n  gather_facts: false\n  tasks:\n' + body)
    return path


def median(values):
    return round(statistics.median(values), 4)


def markdown(data):
    m = data['meta']
    lines = ['# podman exec benchmark: lab/bin/podman-runc against podman', '', '`%s`' % m['command'], '',
             benchlib.machine_line(m), '',
             'Fleet: 3 podman systemd nodes of the lab image. CPU is machine-wide (/proc/stat: podman, conmon, runc, '
             'ansible-playbook and the modules), less the background rate measured before each round. The variants '
             'alternate within each round.', '',
             '## One exec at a time (`exec NODE true`)', '',
             '| executable | rounds x execs | wall per exec median (ms) | CPU per exec median (ms) |', '|---|---|---|---|']
    for name, row in data['exec'].items():
        lines.append('| %s | %d x %d | %.1f | %.1f |' % (name, data['rounds'], data['execs'], row['wall_ms'], row['cpu_ms']))
    lines += ['', '## A play of %d tasks on 3 nodes (%d task runs; forks 3, pipelining on)' % (data['tasks'], 3 * data['tasks']), '',
              '| executable | runs | wall median (s) | CPU median (s) | changed per run | rc per run |', '|---|---|---|---|---|---|']
    for name, row in data['play'].items():
        changed, rcs = ', '.join(str(c) for c in row['changed']), ', '.join(str(r) for r in row['rc'])
        lines.append('| %s | %d | %.1f | %.1f | %s | %s |' % (name, data['rounds'], row['wall_s'], row['cpu_s'], changed, rcs))
    ratio = data['ratio_runc_to_podman']
    lines += ['', 'podman-runc / podman (medians): exec wall %.2f, exec CPU %.2f, play wall %.2f, play CPU %.2f.' % (
        ratio['exec_wall'], ratio['exec_cpu'], ratio['play_wall'], ratio['play_cpu']), '']
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3, help='rounds; each runs every variant once (default 3)')
    parser.add_argument('--execs', type=int, default=40, help='execs per variant and round (default 40)')
    parser.add_argument('--tasks', type=int, default=60, help='tasks in the play (default 60, on 3 nodes)')
    args = benchlib.parse_args(parser, NODES, 'leave the nodes running afterwards')
    for name in ('rounds', 'execs', 'tasks'):
        if getattr(args, name) < 1:
            parser.error('--%s must be at least 1, got %d' % (name, getattr(args, name)))

    execs = {name: {'wall': [], 'cpu': []} for name, _exe in VARIANTS}
    plays = {name: {'wall': [], 'cpu': [], 'changed': [], 'rc': []} for name, _exe in VARIANTS}
    with benchlib.Fleet(NODES, keep=args.keep) as fleet, tempfile.TemporaryDirectory(prefix='nodeops-bench-pe-') as workdir:
        inventory = benchlib.write_inventory(workdir, fleet, group_vars={}, all_vars={
            'ansible_connection': 'containers.podman.podman', 'ansible_python_interpreter': '/usr/bin/python3'})
        play = write_play(workdir, args.tasks)
        first = fleet.nodes[0][1]
        raw = os.path.join(ROOT, 'benchmarks', 'results', 'raw', 'podman_exec')
        # Untimed: the copy task's file exists afterwards, so every timed run changes nothing.
        rc, _secs, log = benchlib.playbook(inventory, os.path.join(raw, 'warmup.log'), play)
        if rc != 0:
            sys.exit('the warm-up play failed (rc %d): see %s/warmup.log\n%s' % (rc, raw, log[-2000:]))
        for round_no in range(args.rounds):
            for name, executable in VARIANTS:
                background = background_rate()
                wall, cpu, _none = measured(lambda: exec_loop(executable, first, args.execs), background)
                execs[name]['wall'].append(wall / args.execs)
                execs[name]['cpu'].append(cpu / args.execs)
                log_path = os.path.join(raw, '%s-%d.log' % (name, round_no + 1))
                wall, cpu, (rc, _secs, log) = measured(lambda: benchlib.playbook(
                    inventory, log_path, play, '-f', '3', '-e', 'ansible_podman_executable=%s' % executable), background)
                plays[name]['wall'].append(wall)
                plays[name]['cpu'].append(cpu)
                plays[name]['rc'].append(rc)
                plays[name]['changed'].append(sum(host['changed'] for host in benchlib.recap(log).values()))
                print('round %d %s: exec %.1f ms wall %.1f ms CPU; play %.1f s wall %.1f s CPU rc %d' % (
                    round_no + 1, name, execs[name]['wall'][-1] * 1000, execs[name]['cpu'][-1] * 1000, wall, cpu, rc), flush=True)

    data = {'meta': benchlib.meta(__file__), 'rounds': args.rounds, 'execs': args.execs, 'tasks': args.tasks,
            'exec': {name: {'wall_ms': median(v['wall']) * 1000, 'cpu_ms': median(v['cpu']) * 1000,
                            'wall_ms_runs': [round(x * 1000, 1) for x in v['wall']], 'cpu_ms_runs': [round(x * 1000, 1) for x in v['cpu']]}
                     for name, v in execs.items()},
            'play': {name: {'wall_s': median(v['wall']), 'cpu_s': median(v['cpu']), 'changed': v['changed'], 'rc': v['rc'],
                            'wall_s_runs': [round(x, 2) for x in v['wall']], 'cpu_s_runs': [round(x, 2) for x in v['cpu']]}
                     for name, v in plays.items()}}
    data['ratio_runc_to_podman'] = {
        'exec_wall': round(data['exec']['podman-runc']['wall_ms'] / data['exec']['podman']['wall_ms'], 2),
        'exec_cpu': round(data['exec']['podman-runc']['cpu_ms'] / data['exec']['podman']['cpu_ms'], 2),
        'play_wall': round(data['play']['podman-runc']['wall_s'] / data['play']['podman']['wall_s'], 2),
        'play_cpu': round(data['play']['podman-runc']['cpu_s'] / data['play']['podman']['cpu_s'], 2)}
    benchlib.save(args.out, 'podman_exec', data, markdown(data))
    failed = [name for name, v in plays.items() if any(v['rc'])]
    if failed:
        sys.exit('play runs failed with: %s (logs in benchmarks/results/raw/podman_exec)' % ', '.join(failed))


if __name__ == '__main__':
    main()
