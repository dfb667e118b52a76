"""Benchmark of nodeops.stack.health_gate (not a test: it measures, it does not assert).

1. Decision latency: how long after the Nth consecutive success the gate decides,
   against a healthy local HTTP endpoint, for N = 1, 3, 5 and interval 0.2 s and 1 s.
   The floor is (N - 1) * interval (attempts start at 0, interval, ...); the overhead
   is elapsed - floor, i.e. the last attempt's probe time plus scheduling.
2. Per-probe overhead: wall-clock milliseconds of one probe run, per kind
   (http, https, tcp, tls, redis, mongodb, pm2), each against a real local server.

Medians over repeats.  Prints a Markdown table and writes
benchmarks/results/health_gate.json and .md with the command line and a machine note.

Run from the repository root:  .venv/bin/python benchmarks/health_gate.py [--repeats 5] [--probe-repeats 30]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration', 'health_gate'))
sys.path.insert(0, os.path.join(ROOT, '.cache', 'collections'))


def ensure_collection_link():
    ns_dir = os.path.join(ROOT, '.cache', 'collections', 'ansible_collections', 'nodeops')
    link = os.path.join(ns_dir, 'stack')
    os.makedirs(ns_dir, exist_ok=True)
    if not os.path.islink(link):
        os.symlink(os.path.relpath(ROOT, ns_dir), link)


ensure_collection_link()

from health_gate_support import (  # noqa: E402  pylint: disable=wrong-import-position,import-error
    Pki, Pm2, Reply, ScriptedHTTPServer, free_port, run_command, server_tls_context, start_mongo_test_server, start_redis,
    wait_for,
)
from ansible_collections.nodeops.stack.plugins.module_utils.health_policy import HealthGate, Policy  # noqa: E402
from ansible_collections.nodeops.stack.plugins.module_utils.probes import build_probes  # noqa: E402

APP = "require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1');\n"


def decision_latency(server, repeats):
    rows = []
    for interval in (0.2, 1.0):
        for n in (1, 3, 5):
            elapsed = []
            for _repeat in range(repeats):
                probes = build_probes([{'kind': 'http', 'url': server.url('/health')}])
                start = time.monotonic()
                result = HealthGate(probes, Policy(interval=interval, success_threshold=n, deadline=60)).run()
                took = time.monotonic() - start
                assert result['passed'], result['msg']
                elapsed.append(took)
            floor = (n - 1) * interval
            med = statistics.median(elapsed)
            rows.append({'n': n, 'interval_s': interval, 'floor_s': round(floor, 3), 'elapsed_median_s': round(med, 4),
                         'overhead_median_ms': round((med - floor) * 1000, 2),
                         'elapsed_max_s': round(max(elapsed), 4), 'repeats': repeats})
    return rows


def probe_overhead(specs, repeats):
    rows = []
    for kind, spec, count in specs:
        probe = build_probes([spec], run_command=run_command)[0]
        warm = probe.run(5)
        assert warm.ok, '%s warm-up failed: %s' % (kind, warm.error)
        walls, latencies = [], []
        for _repeat in range(count or repeats):
            start = time.perf_counter()
            result = probe.run(5)
            walls.append((time.perf_counter() - start) * 1000)
            assert result.ok, '%s failed: %s' % (kind, result.error)
            latencies.append(result.latency_ms)
        rows.append({'kind': kind, 'runs': len(walls), 'wall_median_ms': round(statistics.median(walls), 3),
                     'wall_p95_ms': round(sorted(walls)[max(0, int(len(walls) * 0.95) - 1)], 3),
                     'reported_latency_median_ms': round(statistics.median(latencies), 3)})
    return rows


def markdown(decisions, overheads, meta):
    lines = ['# health_gate benchmark', '', '`%s`' % meta['command'], '',
             'Machine: %s CPU(s), Python %s, %s; %s; load average at the end %s (other work on the machine skews the numbers)'
             % (meta['nproc'], meta['python'], meta['platform'], meta['date'], '/'.join(str(x) for x in meta['loadavg_1_5_15'])), '',
             '## Decision latency after the Nth consecutive success (healthy local HTTP endpoint)', '',
             '| N | interval (s) | floor (N-1)*interval (s) | elapsed median (s) | overhead median (ms) | elapsed max (s) | repeats |',
             '|---|---|---|---|---|---|---|']
    for r in decisions:
        lines.append('| %d | %.1f | %.3f | %.4f | %.2f | %.4f | %d |' % (
            r['n'], r['interval_s'], r['floor_s'], r['elapsed_median_s'], r['overhead_median_ms'], r['elapsed_max_s'], r['repeats']))
    lines += ['', '## Per-probe overhead (one probe run, wall clock, local server)', '',
              '| kind | runs | wall median (ms) | wall p95 (ms) | reported latency_ms median |', '|---|---|---|---|---|']
    for r in overheads:
        lines.append('| %s | %d | %.3f | %.3f | %.3f |' % (r['kind'], r['runs'], r['wall_median_ms'], r['wall_p95_ms'],
                                                           r['reported_latency_median_ms']))
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='repeats per decision-latency cell (default 5)')
    parser.add_argument('--probe-repeats', type=int, default=30, help='runs per probe kind (default 30; pm2 uses a third)')
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results'), help='output directory')
    args = parser.parse_args()

    cleanups = []
    work = tempfile.mkdtemp(prefix='hg-bench-')
    try:
        http = ScriptedHTTPServer().start()
        cleanups.append(http.stop)
        http.set_script([Reply(body={'status': 'ok'})])
        pki = Pki(work)
        certfile, keyfile = pki.issue('bench')
        https = ScriptedHTTPServer(tls=server_tls_context(certfile, keyfile)).start()
        cleanups.append(https.stop)
        redis_proc, redis_port = start_redis(work, 'bench-pw')
        cleanups.append(redis_proc.stop)
        mongo_proc, mongo_host, mongo_port = start_mongo_test_server()
        cleanups.append(mongo_proc.stop)
        pm2_home = os.path.join(work, 'pm2')
        os.mkdir(pm2_home)
        pm2 = Pm2(pm2_home)
        cleanups.append(pm2.kill)
        app = os.path.join(work, 'app.js')
        with open(app, 'w') as handle:
            handle.write(APP)
        pm2.env['PORT'] = str(free_port())
        pm2('start', app, '--name', 'bench')
        wait_for(lambda: [p['pm2_env']['status'] for p in pm2.jlist()] == ['online'], what='pm2 app online')

        decisions = decision_latency(http, args.repeats)
        n = args.probe_repeats
        specs = [
            ('http', {'kind': 'http', 'url': http.url('/health'), 'json': [{'path': 'status', 'equals': 'ok'}]}, n),
            ('https', {'kind': 'https', 'url': https.url('/health'), 'ca_path': pki.ca_path}, n),
            ('tcp', {'kind': 'tcp', 'host': '127.0.0.1', 'port': http.port}, n),
            ('tls', {'kind': 'tls', 'host': '127.0.0.1', 'port': https.port, 'ca_path': pki.ca_path, 'min_days_left': 1}, n),
            ('redis', {'kind': 'redis', 'port': redis_port, 'password': 'bench-pw', 'role': 'master'}, n),
            ('mongodb', {'kind': 'mongodb', 'uri': 'mongodb://%s:%d/?directConnection=true' % (mongo_host, mongo_port)}, n),
            ('pm2', {'kind': 'pm2', 'app': 'bench', 'pm2_home': pm2_home, 'pm2_binary': pm2.binary}, max(3, n // 3)),
        ]
        overheads = probe_overhead(specs, n)
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:  # pylint: disable=broad-except
                print('cleanup failed: %s' % exc, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        'command': ' '.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable]
                            + [os.path.relpath(os.path.abspath(__file__), ROOT)] + sys.argv[1:]),
        'nproc': os.cpu_count(),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'loadavg_1_5_15': [round(x, 2) for x in os.getloadavg()],
    }
    text = markdown(decisions, overheads, meta)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'health_gate.json'), 'w') as handle:
        json.dump({'meta': meta, 'decision_latency': decisions, 'probe_overhead': overheads}, handle, indent=2)
        handle.write('\n')
    with open(os.path.join(args.out, 'health_gate.md'), 'w') as handle:
        handle.write(text)


if __name__ == '__main__':
    main()
