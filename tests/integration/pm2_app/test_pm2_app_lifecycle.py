"""Every state transition of pm2_app through real ansible-playbook against a real PM2 running the sample app.

absent -> started -> started (ok) -> reloaded -> restarted -> stopped -> stopped (ok) -> started -> absent -> absent (ok),
with check-mode predictions (nothing changes: same processes, same pids), --diff with the secret masked,
and a second playbook run reporting changed=0.
"""

import re

from pm2_app_support import PM2_BIN, SECRET, api_ecosystem, free_port, http_get, run_playbook  # pylint: disable=import-error


def task(pm2, port, _name, **over):
    args = {'name': 'life', 'pm2_home': pm2.home, 'pm2_binary': PM2_BIN, 'ecosystem': api_ecosystem(port),
            'env_public_keys': ['PORT', 'APP_ENV'], 'min_uptime': 1, 'stability_window': 1.5, 'wait_timeout': 30}
    check = over.pop('check_mode', False)
    args.update(over)
    out = {'_name': _name, 'nodeops.stack.pm2_app': args}
    if check:
        out['check_mode'] = True
    return out


def pids(result):
    return sorted(p['pid'] for p in result['processes'])


def test_state_transitions_through_ansible_playbook(pm2, tmp_path):
    port = free_port()
    steps = [
        ('absent (initial)', {'state': 'absent'}),
        ('started (check)', {'check_mode': True}),
        ('started', {}),
        ('started again', {}),
        ('reloaded (check)', {'state': 'reloaded', 'check_mode': True}),
        ('reloaded', {'state': 'reloaded'}),
        ('restarted', {'state': 'restarted'}),
        ('stopped (check)', {'state': 'stopped', 'check_mode': True}),
        ('stopped', {'state': 'stopped'}),
        ('stopped again', {'state': 'stopped'}),
        ('started from stopped', {}),
        ('absent (check)', {'state': 'absent', 'check_mode': True}),
        ('absent', {'state': 'absent'}),
        ('absent again', {'state': 'absent'}),
    ]
    try:
        results, out, rc = run_playbook([task(pm2, port, name, **over) for name, over in steps], tmp_path,
                                        extra_args=['--diff', '-v'])
    finally:
        pm2.delete('life')
    assert rc == 0, out[-3000:]
    assert len(results) == len(steps)
    r = dict((name, res) for (name, _over), res in zip(steps, results))
    for name, res in r.items():
        assert not res.get('failed'), (name, res.get('msg'))
        elapsed = (res.get('verification') or {}).get('elapsed')
        print('%-22s changed=%-5s actions=%s verify=%s' % (name, res['changed'], res['actions'], elapsed))
    expected_changed = {
        'absent (initial)': False, 'started (check)': True, 'started': True, 'started again': False, 'reloaded (check)': True,
        'reloaded': True, 'restarted': True, 'stopped (check)': True, 'stopped': True, 'stopped again': False,
        'started from stopped': True, 'absent (check)': True, 'absent': True, 'absent again': False,
    }
    assert dict((k, r[k]['changed']) for k in expected_changed) == expected_changed

    # check mode changes nothing: same processes and pids as the neighbouring real runs, no actions
    assert r['started (check)']['processes'] == [] and r['started (check)']['plan']['steps'] == [['start']]
    assert pids(r['reloaded (check)']) == pids(r['started again']) == pids(r['started'])
    assert r['reloaded (check)']['actions'] == [] and r['stopped (check)']['actions'] == []
    assert pids(r['stopped (check)']) == pids(r['restarted'])

    # real runs: what was done, and pids
    assert r['started']['actions'][0].startswith('pm2 start ') and r['started']['status'] == 'online'
    assert len(r['started']['processes']) == 2 and r['started']['verification']['passed']
    assert r['reloaded']['actions'] == ['pm2 reload life']
    assert not set(pids(r['reloaded'])) & set(pids(r['started']))  # every pid is new after the reload
    assert r['restarted']['actions'] == ['pm2 restart life']
    assert not set(pids(r['restarted'])) & set(pids(r['reloaded']))
    assert r['stopped']['status'] == 'stopped' and all(p['status'] == 'stopped' for p in r['stopped']['processes'])
    assert r['started from stopped']['actions'] == ['pm2 restart life']
    assert r['absent']['actions'] == ['pm2 delete life'] and r['absent']['processes'] == []

    # --diff: the ecosystem before/after with the secret masked; the secret appears nowhere (-v prints results)
    assert '+++ after: life (PM2_HOME %s)' % pm2.home in out
    assert re.search(r'''SESSION_SECRET"?: ['"]\*{8}['"]''', out), 'masked secret in the diff (JSON or YAML callback format)'
    assert SECRET not in out
    assert r['started']['diff']['before'] == {'status': 'absent'}
    assert r['started']['diff']['after']['env']['PORT'] == str(port)


def test_second_run_reports_no_change_and_app_serves(pm2, tmp_path):
    port = free_port()
    play = [task(pm2, port, 'start', name='idem'), task(pm2, port, 'start again', name='idem')]
    try:
        first, out1, rc1 = run_playbook(play, tmp_path / 'a' if (tmp_path / 'a').mkdir() is None else None)
        status, headers, body = http_get(port)
        second, out2, rc2 = run_playbook(play, tmp_path / 'b' if (tmp_path / 'b').mkdir() is None else None)
    finally:
        pm2.delete('idem')
    assert rc1 == 0 and rc2 == 0, out1[-2000:] + out2[-2000:]
    assert [x['changed'] for x in first] == [True, False]
    assert [x['changed'] for x in second] == [False, False]
    assert 'pm2_app' in out2 and 'changed=0' in out2.split('PLAY RECAP')[1]
    assert status == 200 and body['app_env'] == 'lab' and headers['x-app-version']
