"""pm2_app main(): bad input gives a clear fail_json (parameter, expected, given), never a traceback; secrets stay masked."""

import json

import pytest

from ansible.module_utils import basic

from ansible_collections.nodeops.stack.plugins.module_utils import pm2_app as pm2_app_utils
from ansible_collections.nodeops.stack.plugins.modules import pm2_app

from module_harness import run_main as run_module_main

SECRET = 'module-test-secret-value-77'


@pytest.fixture
def node(tmp_path):
    """A fake pm2 binary (never run: no daemon runs for the tmp PM2_HOME) and an app directory."""
    binary = tmp_path / 'pm2'
    binary.write_text('#!/bin/sh\necho "pm2 must not be called" >&2\nexit 99\n')
    binary.chmod(0o755)
    app = tmp_path / 'app'
    app.mkdir()
    (app / 'server.js').write_text('')
    home = tmp_path / 'pm2home'
    return {'pm2_binary': str(binary), 'pm2_home': str(home), 'app': str(app)}


def run_main(args):
    return run_module_main(pm2_app, args)


def base(node, **over):
    args = {'name': 'api', 'pm2_binary': node['pm2_binary'], 'pm2_home': node['pm2_home'],
            'ecosystem': {'script': 'server.js', 'cwd': node['app'], 'instances': 2,
                          'env': {'PORT': 3000, 'SESSION_SECRET': SECRET}},
            'env_public_keys': ['PORT'], '_ansible_check_mode': True, '_ansible_diff': True}
    args.update(over)
    return args


def fail_msg(args):
    failed, result = run_main(args)
    assert failed, result
    return result['msg']


def test_check_mode_start_predicts_change_without_touching_pm2(node):
    failed, result = run_main(base(node))
    assert not failed, result
    assert result['changed'] is True and result['plan']['steps'] == [['start']] and result['actions'] == []
    assert result['diff']['before'] == {'status': 'absent'}
    assert result['diff']['after']['env'] == {'PORT': '3000', 'SESSION_SECRET': '********'}
    assert SECRET not in json.dumps(result)


def test_invocation_is_masked(node, monkeypatch):
    monkeypatch.setattr(basic, '_PARSED_MODULE_ARGS', {'_ansible_inject_invocation': True}, raising=False)
    failed, result = run_main(base(node))
    assert not failed
    assert result['invocation']['module_args']['ecosystem']['env'] == {'PORT': 3000, 'SESSION_SECRET': '********'}
    assert SECRET not in json.dumps(result)


@pytest.mark.parametrize('over, expected', [
    ({'pm2_binary': '/nonexistent/bin/pm2'},
     "pm2_binary: expected an executable PM2 CLI on the managed node, '/nonexistent/bin/pm2' does not exist"),
    ({'state': 'running'}, 'value of state must be one of: started, stopped, restarted, reloaded, absent, got: running'),
    ({'ecosystem_file': '/x.json'}, 'ecosystem, ecosystem_file: expected one of them, got both (they are mutually exclusive)'),
    ({'name': 'all'}, "name: expected a PM2 app name (a letter or '_' first"),
    ({'ecosystem': None, 'revision': 'r1'}, 'revision: needs ecosystem or ecosystem_file'),
    ({'ecosystem': None}, 'ecosystem: the app is not known to PM2, so an ecosystem or ecosystem_file is needed to start it'),
    ({'wait_timeout': -1}, 'wait_timeout: expected a number of seconds >= 0, got -1'),
    ({'wait_timeout': 'soon'}, "argument 'wait_timeout' is of type str and we were unable to convert to float"),
    ({'log_lines': -3}, 'log_lines: expected an integer >= 0, got -3'),
    ({'user': 'no-such-user-xyz'}, "user: expected an existing OS user on the managed node, 'no-such-user-xyz' was not found"),
    ({'ecosystem_file': '/nonexistent/eco.json', 'ecosystem': None},
     "ecosystem_file: expected a readable JSON or YAML file on the managed node, cannot read '/nonexistent/eco.json'"),
])
def test_bad_options(node, over, expected):
    assert fail_msg(base(node, **over)).startswith(expected)


@pytest.mark.parametrize('change, expected', [
    ({'script': 'missing.js'}, "ecosystem.script: expected an existing file on the managed node, '%(app)s/missing.js' does not exist "
                               "(script 'missing.js' resolved against cwd '%(app)s')"),
    ({'instances': 'lots'}, "ecosystem.instances: expected an integer >= 1, 0 or 'max' (one instance per CPU core), or a negative "
                            "integer -N (cores minus N), got 'lots'"),
    ({'instances': 1.5}, 'ecosystem.instances: expected an integer >= 1'),
    ({'exec_mode': 'threads'}, "ecosystem.exec_mode: expected 'cluster' or 'fork', got 'threads'"),
    ({'max_memory_restart': 'a lot'}, "ecosystem.max_memory_restart: expected bytes (an integer > 0) or a size such as '300M'"),
    ({'watch': True}, "ecosystem: unsupported key(s) 'watch'; supported keys are: name, script, cwd"),
    ({'name': 'web'}, "ecosystem.name: expected 'api' (the module's name option) or no name, got 'web'"),
    ({'env': 'A=1'}, "ecosystem.env: expected a dict of variable names to values, got 'A=1'"),
])
def test_bad_ecosystem(node, change, expected):
    args = base(node)
    args['ecosystem'] = dict(args['ecosystem'], **change)
    msg = fail_msg(args)
    assert msg.startswith(expected % node), msg
    assert 'Traceback' not in msg


def test_missing_script_is_not_checked_for_stop_and_absent(node):
    args = base(node, state='absent')
    args['ecosystem'] = dict(args['ecosystem'], script='gone.js')
    failed, result = run_main(args)
    assert not failed and result['changed'] is False


def test_pm2_not_found_anywhere(node, monkeypatch):
    monkeypatch.setattr(pm2_app_utils, 'PM2_LOCATIONS', ())
    monkeypatch.setenv('PATH', node['app'])
    msg = fail_msg(base(node, pm2_binary=None))
    assert msg.startswith('pm2_binary: PM2 was not found on the managed node (looked on PATH and in ); install PM2')


def test_ecosystem_file_and_secret_registration(node, tmp_path):
    path = tmp_path / 'app' / 'ecosystem.json'
    path.write_text(json.dumps({'apps': [{'name': 'api', 'script': 'server.js', 'env': {'DB_PASSWORD': SECRET}}]}))
    failed, result = run_main(base(node, ecosystem=None, ecosystem_file=str(path)))
    assert not failed
    assert result['ecosystem']['env']['DB_PASSWORD'] == '********'
    assert result['ecosystem']['cwd'] == node['app']
    assert SECRET not in json.dumps(result)


def test_argument_spec_matches_documentation():
    import yaml
    doc = yaml.safe_load(pm2_app.DOCUMENTATION)
    spec = pm2_app.argument_spec()
    assert set(doc['options']) == set(spec)
    for name, opt in spec.items():
        assert doc['options'][name]['type'] == opt['type'], name
        assert doc['options'][name].get('default') == opt.get('default'), name
        assert doc['options'][name].get('choices') == opt.get('choices'), name
