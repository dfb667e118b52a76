"""Pm2Cli.jlist_raw (added for pm2_app): raw entries of real captured output, errors, PM2 notices before the JSON."""

import json
import os

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.pm2 import Pm2Cli, Pm2Error, normalise_process

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'pm2')


def cli_answering(rc, out, err=''):
    calls = []

    def run(args, environ_update=None, **_kwargs):
        calls.append((args, environ_update))
        return rc, out, err
    return Pm2Cli(binary='/opt/node/bin/pm2', pm2_home='/home/app/.pm2', run_command=run), calls


def test_jlist_raw_keeps_pm2_env_and_matches_jlist():
    with open(os.path.join(FIXTURES, 'cluster_and_worker_online.json')) as handle:
        text = handle.read()
    cli, calls = cli_answering(0, '>>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\n' + text)
    raw = cli.jlist_raw()
    assert [p['name'] for p in raw] == ['api', 'api', 'worker']
    assert raw[0]['pm2_env']['pm_exec_path'] == '/srv/app/current/server.js'
    assert calls[0][0] == ['/opt/node/bin/pm2', 'jlist']
    assert calls[0][1]['PM2_HOME'] == '/home/app/.pm2'
    assert [normalise_process(p, now=0)['exec_mode'] for p in raw] == ['cluster', 'cluster', 'fork']
    assert cli.jlist(now=0) == [normalise_process(p, now=0) for p in json.loads(text)]


def test_jlist_raw_errors():
    cli, _calls = cli_answering(1, '', 'connect EACCES /home/app/.pm2/rpc.sock')
    with pytest.raises(Pm2Error, match=r'pm2 jlist failed \(rc=1\): connect EACCES'):
        cli.jlist_raw()
    cli, _calls = cli_answering(0, 'not json at all')
    with pytest.raises(Pm2Error, match='pm2 jlist did not print a JSON list'):
        cli.jlist_raw()
    cli, _calls = cli_answering(0, '')
    assert cli.jlist_raw() == []
