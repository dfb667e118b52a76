"""pm2 probes against a real PM2 daemon (private PM2_HOME, killed in teardown) running a small Node app."""

import os

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from health_gate_support import free_port, run_command, wait_for  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils.pm2 import Pm2Cli
from ansible_collections.nodeops.stack.plugins.module_utils.probes import build_probes
from ansible_collections.nodeops.stack.plugins.modules import health_gate

APP = r"""
const http = require('http');
const crashAfter = parseInt(process.env.CRASH_AFTER_MS || '0', 10);
http.createServer((req, res) => { res.setHeader('Content-Type', 'application/json'); res.end('{"status":"ok"}'); })
  .listen(parseInt(process.env.PORT, 10), '127.0.0.1', () => { if (process.send) process.send('ready'); });
if (crashAfter > 0) setTimeout(() => { console.error('crashing on purpose'); process.exit(1); }, crashAfter);
"""


def write_app(tmp_path):
    path = tmp_path / 'app.js'
    path.write_text(APP)
    return str(path)


def pm2_spec(pm2, **extra):
    spec = {'kind': 'pm2', 'name': 'proc', 'app': 'demo', 'pm2_home': pm2.home, 'pm2_binary': pm2.binary}
    spec.update(extra)
    return spec


def start_cluster(pm2, tmp_path, port, instances=2, crash_after=0):
    env = dict(PORT=str(port), CRASH_AFTER_MS=str(crash_after))
    pm2.env.update(env)
    pm2('start', write_app(tmp_path), '--name', 'demo', '-i', str(instances), '--restart-delay', '100')


def online_count(pm2):
    return sum(1 for p in pm2.jlist() if p['pm2_env']['status'] == 'online')


def test_cluster_of_two_passes_and_cli_normalises(gate, pm2, tmp_path):
    port = free_port()
    start_cluster(pm2, tmp_path, port)
    wait_for(lambda: online_count(pm2) == 2, timeout=30, what='2 online instances')
    res = gate([pm2_spec(pm2, instances=2), {'kind': 'http', 'name': 'api', 'url': 'http://127.0.0.1:%d/' % port,
                                             'json': [{'path': 'status', 'equals': 'ok'}]}],
               success_threshold=2, interval=0.2, timeout=10)
    assert res['passed'] is True, res['msg']
    probe = res['timeline'][-1]['probes'][0]
    assert probe['status'] == 'online 2/2'
    assert [p['pm_id'] for p in probe['detail']['processes']] == [0, 1]
    procs = Pm2Cli(binary=pm2.binary, pm2_home=pm2.home, run_command=run_command).processes('demo')
    assert [(p['name'], p['status'], p['exec_mode'], p['instances']) for p in procs] == [('demo', 'online', 'cluster', 2)] * 2
    assert all(p['pid'] > 0 and isinstance(p['memory'], int) and p['restarts'] == 0 for p in procs)
    # wrong expected count fails with both numbers
    res = gate([pm2_spec(pm2, instances=3)], success_threshold=1, failure_threshold=1, timeout=10)
    assert res['passed'] is False
    assert 'expected 3 instance(s), found 2' in res['msg']
    # unknown app
    res = gate([pm2_spec(pm2, app='nope')], success_threshold=1, failure_threshold=1, timeout=10)
    assert "expected PM2 app 'nope', not found (apps: demo)" in res['msg']


def test_restart_during_gate_is_detected(pm2, tmp_path):
    port = free_port()
    start_cluster(pm2, tmp_path, port, instances=1)
    wait_for(lambda: online_count(pm2) == 1, timeout=30, what='1 online instance')
    probe = build_probes([pm2_spec(pm2)], run_command=run_command)[0]
    first = probe.run(10)
    assert first.ok, first.error
    pm2('restart', 'demo')
    wait_for(lambda: online_count(pm2) == 1, timeout=30, what='instance back online')
    second = probe.run(10)
    assert second.ok is False
    assert 'expected no restart during the gate, pm_id 0 restarts rose from 0 to 1' in second.error
    probe.reset()  # a new gate run takes a new baseline
    assert probe.run(10).ok


def test_crash_looping_app_fails_the_gate(gate, pm2, tmp_path):
    port = free_port()
    start_cluster(pm2, tmp_path, port, instances=2, crash_after=400)
    res = gate([pm2_spec(pm2, instances=2)], success_threshold=3, interval=0.3, failure_threshold=3, deadline=20, timeout=10)
    assert res['passed'] is False, res['msg']
    assert res['reason'] == 'failure_threshold'
    assert 'expected no restart during the gate' in res['msg'] or 'online, got' in res['msg']
    assert "probe 'proc' (pm2 app 'demo' (PM2_HOME %s))" % pm2.home in res['msg']


def test_daemon_not_running_fails_without_spawning_one(gate, pm2):
    res = gate([pm2_spec(pm2)], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'PM2 daemon is not running for PM2_HOME %s' % pm2.home in res['msg']
    assert not os.path.exists(os.path.join(pm2.home, 'pm2.pid'))


def run_module(args):
    """Run health_gate's main() in-process with AnsibleModule.run_command (exit/fail captured)."""
    class Done(Exception):
        pass

    def finish(self, msg=None, **kwargs):
        kwargs['msg'] = msg
        raise Done(kwargs)
    mp = pytest.MonkeyPatch()
    mp.setattr(basic.AnsibleModule, 'exit_json', lambda self, **kw: finish(self, failed=False, **kw))
    mp.setattr(basic.AnsibleModule, 'fail_json', lambda self, msg, **kw: finish(self, msg, failed=True, **kw))
    try:
        with patch_module_args(args):
            with pytest.raises(Done) as info:
                health_gate.main()
    finally:
        mp.undo()
    return info.value.args[0]


def test_module_runs_pm2_through_run_command(pm2, tmp_path):
    port = free_port()
    start_cluster(pm2, tmp_path, port, instances=2)
    wait_for(lambda: online_count(pm2) == 2, timeout=30, what='2 online instances')
    result = run_module({'probes': [pm2_spec(pm2, instances=2)], 'interval': 0.1, 'success_threshold': 2, 'deadline': 30, 'timeout': 10})
    assert result['failed'] is False, result['msg']
    assert result['timeline'][-1]['probes'][0]['status'] == 'online 2/2'
    # a pm2 binary that cannot be run is a failed probe with an explanation, not a crashed module
    result = run_module({'probes': [pm2_spec(pm2, pm2_binary='pm2-binary-that-does-not-exist')],
                         'success_threshold': 1, 'failure_threshold': 1})
    assert result['failed'] is True
    assert 'pm2-binary-that-does-not-exist' in result['msg']
    assert result['reason'] == 'failure_threshold'
