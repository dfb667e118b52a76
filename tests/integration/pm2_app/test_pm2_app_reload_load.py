"""Zero-downtime: five consecutive pm2_app reloads (each a new release: new revision + APP_VERSION) of a 2-instance
cluster app under continuous keep-alive load from tests/support/loadgen must not fail a single request.

The numbers (total, failed, retries, versions, latency) are printed (run pytest with -s) and written to
``pm2_app_reload_under_load.json`` in pytest's base temp directory.
"""

import json
import os
import sys
import time

from pm2_app_support import REPO, api_ecosystem, free_port, http_get, run_module  # pylint: disable=import-error

sys.path.insert(0, os.path.join(REPO, 'tests', 'support'))
from loadgen import LoadGenerator  # noqa: E402  pylint: disable=import-error,wrong-import-position

RELOADS = 5
RATE = 500          # requests/s over 8 keep-alive connections
CONCURRENCY = 8


def test_five_reloads_under_keepalive_load_lose_no_request(pm2, module_args, tmp_path_factory):
    port = free_port()

    def args(version, **over):
        base = dict(name='zdt', ecosystem=api_ecosystem(port, APP_VERSION=version), revision=version, state='reloaded',
                    only_if_changed=True, min_uptime=1, stability_window=1)
        base.update(over)
        return module_args(**base)

    reloads = []
    try:
        failed, res = run_module(args('v0', state='started'))
        assert not failed, res['msg']
        assert http_get(port)[1]['x-app-version'] == 'v0'
        with LoadGenerator('http://127.0.0.1:%d/' % port, concurrency=CONCURRENCY, rate=RATE, duration=180,
                           keepalive=True, retry=True) as gen:
            time.sleep(1.0)
            for i in range(1, RELOADS + 1):
                version = 'v%d' % i
                before = set(pm2.pids('zdt'))
                gen.mark('reload_%d_start' % i)
                t0 = time.monotonic()
                failed, res = run_module(args(version))
                took = time.monotonic() - t0
                gen.mark('reload_%d_end' % i)
                assert not failed, res['msg']
                assert res['changed'] is True and res['verification']['passed']
                assert res['actions'][0].startswith('pm2 reload ') and res['actions'][0].endswith('--update-env')
                after = set(p['pid'] for p in res['processes'])
                assert len(after) == 2 and not before & after, 'every worker replaced'
                window = gen.report(start='reload_%d_start' % i, end='reload_%d_end' % i)
                reloads.append({'version': version, 'seconds': round(took, 2), 'requests': window['total'],
                                'failed': window['failed'], 'retries': window['retries'], 'versions': window['versions']})
            time.sleep(1.5)
        report = gen.report()
    finally:
        pm2.delete('zdt')

    summary = {
        'reloads': RELOADS, 'rate': RATE, 'concurrency': CONCURRENCY, 'total': report['total'], 'ok': report['ok'],
        'failed': report['failed'], 'failed_by_kind': report['failed_by_kind'], 'retries': report['retries'],
        'retried_ok': report['retried_ok'], 'versions': report['versions'], 'latency_ms': report['latency_ms'],
        'duration_s': report['duration_s'], 'stopped_by': report['stopped_by'], 'per_reload': reloads,
        'failure_samples': report['failure_samples'][:5], 'retry_samples': report['retry_samples'][:5],
    }
    out = os.path.join(str(tmp_path_factory.getbasetemp()), 'pm2_app_reload_under_load.json')
    with open(out, 'w') as handle:
        json.dump(summary, handle, indent=2)
    print('\nreload under load: %d reloads, %d requests, %d failed %s, %d keep-alive retries (%d ok), versions %s, '
          'p50 %.1f ms, p99 %.1f ms, max %.1f ms; per reload: %s; results: %s' % (
              RELOADS, report['total'], report['failed'], report['failed_by_kind'], report['retries'], report['retried_ok'],
              report['versions'], report['latency_ms']['p50'], report['latency_ms']['p99'], report['latency_ms']['max'],
              [(r['version'], r['seconds'], r['requests'], r['failed'], r['retries']) for r in reloads], out))

    assert report['stopped_by'] == 'stop', 'the load covered every reload'
    assert report['total'] >= 2000
    assert report['failed'] == 0, summary['failure_samples']
    assert isinstance(report['retries'], int)  # reported separately from failures
    assert set(report['versions']) <= set('v%d' % i for i in range(RELOADS + 1))
    assert 'v%d' % RELOADS in report['versions']
    assert all(r['requests'] > 0 for r in reloads), 'load ran during every reload'
