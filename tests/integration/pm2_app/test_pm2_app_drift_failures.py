"""Config drift applied for real (env change + instances 2 -> 3, check mode first), crash loops and broken releases
reported as failures with the error log, through the module's main() run as a subprocess against a real PM2."""

import time

from pm2_app_support import SECRET, api_ecosystem, free_port, http_get, run_module, wait_for  # pylint: disable=import-error


def process_info(pid):
    """What the OS knows of a process (for assertion messages): its command line and parent, or that it is gone."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            cmdline = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
        with open('/proc/%d/stat' % pid) as handle:
            ppid = handle.read().rsplit(')', 1)[1].split()[1]
        return 'cmdline %r, ppid %s' % (cmdline, ppid)
    except (OSError, IndexError):
        return 'gone'


def versions_served(port, count=30):
    seen = set()
    for _i in range(count):
        _status, headers, _body = http_get(port)
        seen.add(headers.get('x-app-version'))
    return seen


def test_config_drift_env_and_instances_applied(pm2, module_args):
    port = free_port()
    try:
        failed, res = run_module(module_args(name='drift', ecosystem=api_ecosystem(port, APP_VERSION='d1')))
        assert not failed, res['msg']
        assert versions_served(port) == {'d1'}
        before = pm2.pids('drift')
        assert len(before) == 2

        changed_eco = api_ecosystem(port, instances=3, APP_VERSION='d2', SESSION_SECRET=SECRET + '-rotated')
        # check mode predicts the change, with a masked diff, and touches nothing
        failed, res = run_module(module_args(name='drift', ecosystem=changed_eco), check=True, diff=True)
        assert not failed and res['changed'] is True and res['actions'] == []
        assert res['plan']['steps'] == [['reload_eco'], ['scale', 3]]
        assert sorted((d['key'], d['apply']) for d in res['drift']) == [
            ('env.APP_VERSION', 'reload'), ('env.SESSION_SECRET', 'reload'), ('instances', 'scale')]
        assert res['diff']['before']['env']['SESSION_SECRET'] == '********'
        assert res['diff']['after']['env']['SESSION_SECRET'] == '******** (changed)'
        assert res['diff']['before']['env']['APP_VERSION'] == 'd1' and res['diff']['after']['env']['APP_VERSION'] == 'd2'
        assert (res['diff']['before']['instances'], res['diff']['after']['instances']) == (2, 3)
        assert pm2.pids('drift') == before
        assert SECRET not in str(res)

        # applied: a reload with the new env, then a scale to 3
        failed, res = run_module(module_args(name='drift', ecosystem=changed_eco), diff=True)
        assert not failed, res['msg']
        assert res['changed'] is True
        assert [a.split()[1] for a in res['actions']] == ['reload', 'scale']
        assert res['actions'][0].endswith('--update-env') and res['actions'][1] == 'pm2 scale drift 3'
        assert len(res['processes']) == 3 and all(p['status'] == 'online' for p in res['processes'])
        assert not set(before) & set(p['pid'] for p in res['processes'])
        assert versions_served(port) == {'d2'}
        env = [p['pm2_env']['env'] for p in pm2.jlist() if p['name'] == 'drift']
        assert all(e['SESSION_SECRET'] == SECRET + '-rotated' and e['APP_VERSION'] == 'd2' for e in env)

        # and idempotent afterwards
        failed, res = run_module(module_args(name='drift', ecosystem=changed_eco))
        assert not failed and res['changed'] is False and res['actions'] == []

        # removing an env key and switching to fork mode cannot be done by a reload: delete + start
        fork_eco = api_ecosystem(port, instances=1, APP_VERSION='d3')
        fork_eco['exec_mode'] = 'fork'
        del fork_eco['env']['SESSION_SECRET']
        failed, res = run_module(module_args(name='drift', ecosystem=fork_eco))
        assert not failed, res['msg']
        assert [a.split()[1] for a in res['actions']] == ['delete', 'start']
        assert [(p['exec_mode'], p['status']) for p in res['processes']] == [('fork', 'online')]
        assert all('SESSION_SECRET' not in p['pm2_env']['env'] for p in pm2.jlist() if p['name'] == 'drift')
        assert versions_served(port, 5) == {'d3'}
    finally:
        pm2.delete('drift')


def test_crash_looping_app_fails_within_timeout_with_error_log(pm2, module_args):
    port = free_port()
    eco = api_ecosystem(port, CRASH_AFTER_MS=500)
    t0 = time.monotonic()
    try:
        failed, res = run_module(module_args(name='crashy', ecosystem=eco, wait_timeout=20, log_lines=10))
        elapsed = time.monotonic() - t0
    finally:
        pm2.delete('crashy')
    assert failed is True and res['changed'] is True
    assert elapsed < 20, elapsed
    msg = res['msg']
    assert msg.startswith("app 'crashy' failed verification after pm2 start ")
    assert 'the app is crash-looping' in msg
    assert 'pm_id  pid      status' in msg
    assert 'line(s) of %s/logs/crashy-error.log:\n' % pm2.home in msg
    assert '"event":"crash"' in msg and 'CRASH_AFTER_MS' in msg
    assert 1 <= len(res['log_lines']) <= 10 and res['error_log'] == ['%s/logs/crashy-error.log' % pm2.home]
    assert res['verification']['reason'] == 'crash'
    assert SECRET not in msg
    print('crash loop reported after %.1fs: %s' % (elapsed, res['verification']['message']))


def test_reload_to_release_that_crashes_after_ready_is_caught(pm2, module_args):
    port = free_port()
    try:
        failed, res = run_module(module_args(name='bad-release', ecosystem=api_ecosystem(port, APP_VERSION='good'),
                                             revision='good'))
        assert not failed, res['msg']
        old = set(pm2.pids('bad-release'))
        # the new release becomes ready (PM2's reload is satisfied and kills the old workers), then dies after 800 ms
        bad = api_ecosystem(port, APP_VERSION='bad', CRASH_AFTER_MS=800)
        t0 = time.monotonic()
        failed, res = run_module(module_args(name='bad-release', ecosystem=bad, revision='bad', state='reloaded',
                                             only_if_changed=True, min_uptime=2, stability_window=2, wait_timeout=20))
        elapsed = time.monotonic() - t0
        assert failed is True, res.get('msg')
        assert res['actions'][0].startswith('pm2 reload ') and res['actions'][0].endswith('--update-env')
        verification = {k: v for k, v in res['verification'].items() if k in ('reason', 'message', 'elapsed', 'polls')}
        assert verification['reason'] == 'crash', verification
        assert 'the app is crash-looping' in res['msg'] and '"event":"crash"' in res['msg'], verification
        new = set(p['pid'] for p in res['processes'] if p['pid'])
        assert not old & new, 'old workers are gone: PM2 killed them although the new release is broken'
        wait_for(lambda: all(p[3] >= 2 for p in pm2.table('bad-release')), what='new workers restarting')
        assert elapsed < 20
        print('broken release caught after %.1fs: %s' % (elapsed, res['verification']['message']))
    finally:
        pm2.delete('bad-release')


def test_stopped_app_config_drift_reported_not_applied(pm2, module_args):
    port = free_port()
    try:
        assert not run_module(module_args(name='parked', ecosystem=api_ecosystem(port)))[0]
        failed, res = run_module(module_args(name='parked', state='stopped'))  # no ecosystem needed to stop
        assert not failed and res['changed'] and res['status'] == 'stopped'
        failed, res = run_module(module_args(name='parked', state='stopped', ecosystem=api_ecosystem(port, APP_ENV='staging')))
        assert not failed and res['changed'] is False
        assert res['drift'] == [{'key': 'env.APP_ENV', 'before': 'lab', 'after': 'staging', 'apply': 'reload'}]
        assert all(p['status'] == 'stopped' for p in res['processes'])
        failed, res = run_module(module_args(name='parked', ecosystem=api_ecosystem(port, APP_ENV='staging')))
        assert not failed and [a.split()[1] for a in res['actions']] == ['delete', 'start']
        new_pids = sorted(p['pid'] for p in res['processes'])
        answers = [http_get(port)[2] for _i in range(6)]
        # every answer comes from the processes the module started, with the new environment
        stale = [(a['pid'], a['app_env'], process_info(a['pid'])) for a in answers if a['pid'] not in new_pids or a['app_env'] != 'staging']
        assert not stale, (new_pids, stale, pm2.table('parked'))
    finally:
        pm2.delete('parked')
