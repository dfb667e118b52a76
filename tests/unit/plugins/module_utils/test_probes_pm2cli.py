"""pm2.py: jlist parsing and normalisation, with a fake run_command (real PM2 runs in the integration tests)."""

import json
import os

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.pm2 import (
    Pm2Cli, Pm2Error, normalise_process, parse_jlist, restart_pending,
)

RAW = {
    'pid': 4242, 'name': 'api', 'pm_id': 1,
    'monit': {'memory': 1234567, 'cpu': 3.5},
    'pm2_env': {'status': 'online', 'restart_time': 2, 'unstable_restarts': 0, 'pm_uptime': 1700000000000,
                'exec_mode': 'cluster_mode', 'instances': 2, 'env': {'DB_PASSWORD': 'secret'}},
}


def test_normalise_process_keeps_only_public_fields():
    proc = normalise_process(RAW, now=1700000010.5)
    assert proc == {'name': 'api', 'pm_id': 1, 'pid': 4242, 'status': 'online', 'restarts': 2, 'unstable_restarts': 0,
                    'memory': 1234567, 'cpu': 3.5, 'uptime_s': 10.5, 'exec_mode': 'cluster', 'instances': 2}
    assert 'secret' not in json.dumps(proc)


def test_normalise_stopped_process_has_no_uptime():
    raw = dict(RAW, pm2_env=dict(RAW['pm2_env'], status='errored', exec_mode='fork_mode', instances='max'))
    proc = normalise_process(raw, now=1700000010.5)
    assert proc['uptime_s'] == 0.0 and proc['exec_mode'] == 'fork' and proc['instances'] == 'max'


@pytest.mark.parametrize('env,pending', [
    ({'status': 'stopped', 'exit_code': 1}, True),                                  # a crash: PM2 restarts it
    ({'status': 'stopped', 'exit_code': 1, 'autorestart': True, 'stop_exit_codes': [0]}, True),
    ({'status': 'stopped', 'exit_code': 1, 'autorestart': False}, False),          # autorestart off: final
    ({'status': 'stopped', 'exit_code': 1, 'autorestart': 'false'}, False),
    ({'status': 'stopped', 'exit_code': 0, 'stop_exit_codes': [0]}, False),         # a stop code: final
    ({'status': 'stopped', 'exit_code': 2, 'stop_exit_codes': ['2']}, False),
    ({'status': 'stopped', 'exit_code': 2, 'stop_exit_codes': 2}, False),
    ({'status': 'online', 'exit_code': 1}, False),                                  # not stopped at all
    ({'status': 'errored', 'exit_code': 1}, False),
])
def test_restart_pending_follows_pm2s_own_rule(env, pending):
    assert restart_pending(dict(RAW, pm2_env=dict(RAW['pm2_env'], **env))) is pending


def test_parse_jlist_skips_notices_before_json():
    out = '>>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\n' + json.dumps([RAW]) + '\n'
    assert parse_jlist(out)[0]['name'] == 'api'
    assert parse_jlist('') == []
    with pytest.raises(Pm2Error):
        parse_jlist('not json at all')


def test_cli_runs_jlist_with_pm2_home_and_node_dir_on_path(tmp_path):
    calls = []
    binary = tmp_path / 'bin' / 'pm2'
    binary.parent.mkdir()
    binary.write_text('')

    def run_command(args, environ_update=None):
        calls.append((args, environ_update))
        return 0, json.dumps([RAW, dict(RAW, name='worker', pm_id=2)]), ''

    cli = Pm2Cli(binary=str(binary), pm2_home=str(tmp_path / 'home'), run_command=run_command)
    assert [p['name'] for p in cli.jlist()] == ['api', 'worker']
    assert [p['pm_id'] for p in cli.processes('worker')] == [2]
    assert cli.processes('nope') == []
    args, env = calls[0]
    assert args == [str(binary), 'jlist']
    assert env['PM2_HOME'] == str(tmp_path / 'home')
    assert env['PATH'].split(os.pathsep)[0] == str(binary.parent)


def test_cli_reports_failures():
    cli = Pm2Cli(binary='pm2', pm2_home='/nonexistent', run_command=lambda args, environ_update=None: (1, '', 'boom'))
    with pytest.raises(Pm2Error) as err:
        cli.jlist()
    assert 'pm2 jlist failed (rc=1): boom' in str(err.value)


def test_daemon_pid(tmp_path):
    cli = Pm2Cli(binary='pm2', pm2_home=str(tmp_path), run_command=lambda *a, **k: (0, '[]', ''))
    assert cli.daemon_pid() is None
    (tmp_path / 'pm2.pid').write_text(str(os.getpid()))
    assert cli.daemon_pid() == os.getpid()
    (tmp_path / 'pm2.pid').write_text('99999999')
    assert cli.daemon_pid() is None


def test_cli_requires_a_runner():
    with pytest.raises(ValueError):
        Pm2Cli(binary='pm2')


def test_cli_timeout_wraps_in_coreutils_timeout_and_maps_errors(monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, 'which', lambda name: '/usr/bin/timeout' if name == 'timeout' else None)
    calls = []

    def slow(args, environ_update=None):
        calls.append(args)
        return 124, '', ''

    cli = Pm2Cli(binary='/opt/pm2/bin/pm2', run_command=slow, timeout=2.5)
    with pytest.raises(Pm2Error) as err:
        cli.jlist()
    assert calls[0] == ['/usr/bin/timeout', '-k', '2', '2.5', '/opt/pm2/bin/pm2', 'jlist']
    assert 'pm2 jlist did not finish within 2.5s' in str(err.value)

    def missing(args, environ_update=None):
        raise OSError(2, 'No such file or directory')

    with pytest.raises(Pm2Error) as err:
        Pm2Cli(binary='/nope/pm2', run_command=missing).jlist()
    assert 'cannot run /nope/pm2' in str(err.value)
