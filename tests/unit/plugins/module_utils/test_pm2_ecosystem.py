"""pm2_ecosystem: validation, normalisation, drift against REAL captured ``pm2 jlist`` output, redaction."""

import copy
import json
import os

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils import pm2_ecosystem as eco
from ansible_collections.nodeops.stack.plugins.module_utils.pm2_ecosystem import EcosystemError

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'pm2')
HOME = '/home/app/.pm2'
APP = '/srv/app/current'
SECRET = 'fixture-secret-0123456789'


def fixture(name, app=None):
    with open(os.path.join(FIXTURES, name + '.json')) as handle:
        procs = json.load(handle)
    return [p for p in procs if app is None or p['name'] == app]


def api_def(**extra):
    """The definition capture.py started 'api' with (cluster_and_worker_online.json)."""
    app = {'script': 'server.js', 'cwd': APP, 'instances': 2, 'wait_ready': True, 'listen_timeout': 5000,
           'kill_timeout': 12000, 'max_memory_restart': '300M',
           'env': {'PORT': 18701, 'APP_ENV': 'lab', 'SESSION_SECRET': SECRET}}
    app.update(extra)
    return app


def desired(app=None, name='api', revision='r1', **kwargs):
    kwargs.setdefault('check_paths', False)
    kwargs.setdefault('cpu_count', 2)
    return eco.build_desired(api_def() if app is None else app, name, HOME, revision=revision, **kwargs)[0]


def drift_of(app=None, fixture_name='cluster_and_worker_online', name='api', revision='r1'):
    want = desired(app, name=name, revision=revision)
    return eco.compute_drift(want, eco.actual_config(fixture(fixture_name, name), want))


# ------------------------------------------------------------------ parsing

@pytest.mark.parametrize('value, cpus, count', [
    (1, 8, 1), (4, 8, 4), ('3', 8, 3), ('max', 8, 8), ('MAX', 4, 4), (0, 4, 4), (-1, 4, 3), (-1, 1, 1), (-9, 4, 1), (2.0, 4, 2),
])
def test_instances_resolve_like_pm2(value, cpus, count):
    assert eco.resolve_instances(eco.parse_instances(value), cpus) == count


@pytest.mark.parametrize('value', ['lots', '1.5', 1.5, True, None, [2], '', 'max2'])
def test_invalid_instances_message_names_field_expected_and_given(value):
    with pytest.raises(EcosystemError) as info:
        eco.parse_instances(value, 'ecosystem.instances')
    msg = str(info.value)
    assert msg.startswith('ecosystem.instances: expected an integer >= 1, 0 or \'max\'')
    assert 'got ' in msg


@pytest.mark.parametrize('value, expected', [
    (1048576, 1048576), ('300M', 300 * 1024 ** 2), ('1G', 1024 ** 3), ('512K', 512 * 1024), ('2g', 2 * 1024 ** 3), ('100', 100),
])
def test_memory_sizes_are_pm2_bytes(value, expected):
    assert eco.parse_bytes(value) == expected


@pytest.mark.parametrize('value', ['300MB!', '-1', 0, 'big', True, 1.5])
def test_invalid_memory_size(value):
    with pytest.raises(EcosystemError, match=r"max_memory_restart: expected bytes .* got"):
        eco.parse_bytes(value)


@pytest.mark.parametrize('value, expected', [
    (True, 'true'), (False, 'false'), (3000, '3000'), (1.0, '1'), (1.5, '1.5'), (None, ''), ({'a': 1}, '{"a":1}'), ('x', 'x'),
])
def test_env_values_are_stringified(value, expected):
    assert eco.env_string(value) == expected


def test_args_accept_lists_and_shell_strings():
    canonical = desired(api_def(args='--port 3000 "two words"', node_args=['--max-old-space-size=256']))
    assert canonical['args'] == ['--port', '3000', 'two words']
    assert canonical['node_args'] == ['--max-old-space-size=256']


# ------------------------------------------------------------------ selection and validation

def test_select_app_from_apps_list_single_dict_and_list():
    data = {'apps': [{'name': 'worker', 'script': 'w.js'}, {'name': 'api', 'script': 's.js'}]}
    assert eco.select_app(data, 'api')['script'] == 's.js'
    assert eco.select_app([{'name': 'api', 'script': 'x.js'}], 'api')['script'] == 'x.js'
    assert eco.select_app({'script': 's.js'}, 'api') == {'script': 's.js'}
    with pytest.raises(EcosystemError, match=r"ecosystem: expected an app named 'nope' in apps, found 'worker', 'api'"):
        eco.select_app(data, 'nope')
    with pytest.raises(EcosystemError, match=r"ecosystem.name: expected 'api' \(the module's name option\) or no name, got 'web'"):
        eco.select_app({'name': 'web', 'script': 's.js'}, 'api')
    with pytest.raises(EcosystemError, match=r'ecosystem.apps: expected a list of app definitions, got a dict'):
        eco.select_app({'apps': {'name': 'api'}}, 'api')


def test_ecosystem_files_json_yaml_js(tmp_path):
    (tmp_path / 'e.json').write_text(json.dumps({'apps': [{'name': 'api', 'script': 'server.js'}]}))
    assert eco.load_ecosystem_file(str(tmp_path / 'e.json'))['apps'][0]['name'] == 'api'
    (tmp_path / 'e.yml').write_text('apps:\n  - name: api\n    script: server.js\n    instances: max\n')
    assert eco.load_ecosystem_file(str(tmp_path / 'e.yml'))['apps'][0]['instances'] == 'max'
    (tmp_path / 'bad.json').write_text('{"apps": [')
    with pytest.raises(EcosystemError, match=r"ecosystem_file: '.*bad.json' is not valid JSON"):
        eco.load_ecosystem_file(str(tmp_path / 'bad.json'))
    with pytest.raises(EcosystemError, match=r'ecosystem_file: expected a JSON or YAML file, got the JavaScript file'):
        eco.load_ecosystem_file(str(tmp_path / 'ecosystem.config.js'))
    with pytest.raises(EcosystemError, match=r"ecosystem_file: expected a readable JSON or YAML file on the managed node, cannot read"):
        eco.load_ecosystem_file(str(tmp_path / 'missing.yml'))


def test_relative_paths_resolve_against_file_dir_and_script_must_exist(tmp_path):
    (tmp_path / 'app').mkdir()
    (tmp_path / 'app' / 'server.js').write_text('')
    canonical, entry = eco.build_desired({'script': 'app/server.js', 'out_file': 'logs/out.log'}, 'api', HOME,
                                         base_dir=str(tmp_path), cpu_count=2)
    assert canonical['script'] == str(tmp_path / 'app' / 'server.js')
    assert canonical['cwd'] == str(tmp_path)
    assert canonical['out_file'] == str(tmp_path / 'logs' / 'out.log')
    assert canonical['error_file'] == HOME + '/logs/api-error.log'
    assert entry['exec_mode'] == 'fork' and entry['instances'] == 1
    with pytest.raises(EcosystemError) as info:
        eco.build_desired({'script': 'missing.js', 'cwd': str(tmp_path)}, 'api', HOME, cpu_count=2)
    assert str(info.value) == ("ecosystem.script: expected an existing file on the managed node, '%s/missing.js' does not exist "
                               "(script 'missing.js' resolved against cwd '%s')" % (tmp_path, tmp_path))
    with pytest.raises(EcosystemError, match=r"ecosystem.cwd: expected an existing directory on the managed node, '/nonexistent/x'"):
        eco.build_desired({'script': 'a.js', 'cwd': '/nonexistent/x'}, 'api', HOME, cpu_count=2)
    with pytest.raises(EcosystemError, match=r"ecosystem.cwd: required when script 'server.js' is relative"):
        eco.build_desired({'script': 'server.js'}, 'api', HOME, cpu_count=2)


def test_script_found_on_path_like_pm2_does(tmp_path):
    canonical, _entry = eco.build_desired({'script': 'node', 'cwd': str(tmp_path), 'args': 'server.js'}, 'api', HOME,
                                          cpu_count=2, which=lambda name: '/usr/bin/' + name)
    assert canonical['script'] == '/usr/bin/node'


@pytest.mark.parametrize('change, message', [
    ({'exec_mode': 'thread'}, "ecosystem.exec_mode: expected 'cluster' or 'fork', got 'thread'"),
    ({'env': ['A=1']}, 'ecosystem.env: expected a dict of variable names to values, got a list'),
    ({'env': {'A=B': '1'}}, "ecosystem.env: expected variable names without '=' or NUL, got 'A=B'"),
    ({'env': {'NODEOPS_REVISION': 'x'}}, 'ecosystem.env.NODEOPS_REVISION: reserved for the module'),
    ({'wait_ready': 'sometimes'}, "ecosystem.wait_ready: expected a boolean (true or false), got 'sometimes'"),
    ({'kill_timeout': -5}, 'ecosystem.kill_timeout: expected an integer >= 1, got -5'),
    ({'listen_timeout': '10s'}, "ecosystem.listen_timeout: expected an integer >= 1, got '10s'"),
    ({'watch': True, 'env_production': {}}, "ecosystem: unsupported key(s) 'env_production', 'watch'; supported keys are: name"),
    ({'script': ''}, "ecosystem.script: expected the path of the app's entry file (absolute, or relative to cwd), got ''"),
    ({'args': {'a': 1}}, 'ecosystem.args: expected a list of strings'),
    ({'max_restarts': 'many'}, "ecosystem.max_restarts: expected an integer >= 0, got 'many'"),
    ({'min_uptime': 'soon'}, "ecosystem.min_uptime: expected milliseconds"),
])
def test_bad_fields_name_field_expected_and_given(change, message):
    app = api_def()
    app.update(change)
    with pytest.raises(EcosystemError) as info:
        desired(app)
    assert str(info.value).startswith(message), str(info.value)


def test_defaults_are_explicit_in_generated_entry():
    canonical, entry = eco.build_desired({'script': APP + '/worker.js'}, 'worker', HOME, check_paths=False, cpu_count=4)
    assert canonical['cwd'] == APP
    assert entry == {
        'name': 'worker', 'script': APP + '/worker.js', 'cwd': APP, 'args': [], 'node_args': [], 'exec_mode': 'fork',
        'instances': 1, 'env': {'NODEOPS_ENV_KEYS': ''}, 'wait_ready': False, 'listen_timeout': 3000, 'kill_timeout': 1600,
        'out_file': HOME + '/logs/worker-out.log', 'error_file': HOME + '/logs/worker-error.log', 'merge_logs': True,
        'autorestart': True, 'instance_var': 'NODE_APP_INSTANCE', 'max_restarts': 16, 'min_uptime': 1000,
        'shutdown_with_message': False, 'time': False, 'treekill': True,
    }
    # instances without exec_mode means cluster, like PM2
    assert eco.build_desired({'script': APP + '/s.js', 'instances': 'max'}, 'a', HOME, check_paths=False, cpu_count=4)[1][
        'exec_mode'] == 'cluster'


def test_pm2_log_file_name_of_app_names():
    assert eco.log_name('my_app v2') == 'my-app-v2'
    assert eco.log_name('api.v1-x') == 'api.v1-x'


# ------------------------------------------------------------------ actual config from real jlist output

def test_actual_config_of_cluster_app_from_real_jlist():
    want = desired()
    actual = eco.actual_config(fixture('cluster_and_worker_online', 'api'), want)
    assert actual['script'] == APP + '/server.js'
    assert actual['exec_mode'] == 'cluster' and actual['instances'] == 2
    assert actual['max_memory_restart'] == 300 * 1024 ** 2
    assert actual['env'] == {'PORT': '18701', 'APP_ENV': 'lab', 'SESSION_SECRET': SECRET}
    assert actual['revision'] == 'r1'
    assert (actual['wait_ready'], actual['listen_timeout'], actual['kill_timeout']) == (True, 5000, 12000)
    assert actual['out_file'] == HOME + '/logs/api-out.log'


def test_no_drift_when_pm2_runs_the_desired_config():
    assert drift_of() == []
    worker = {'script': 'worker.js', 'cwd': APP, 'exec_mode': 'fork', 'env': {'APP_ENV': 'lab', 'WORKER_INTERVAL_MS': 1000}}
    assert drift_of(worker, name='worker', revision=None) == []


def test_foreign_app_per_instance_logs_and_no_markers():
    procs = fixture('foreign_cluster')
    actual = eco.actual_config(procs)
    assert actual['merge_logs'] is False
    assert actual['out_file'] == HOME + '/logs/legacy-out.log'  # '-0' / '-1' instance suffix removed
    assert eco.managed_keys(procs[0]['pm2_env']) is None
    assert actual['env'] == {}  # inherited environment is not "the app's env"
    # started by hand from '/', so its cwd is '/'
    want = desired({'script': APP + '/server.js', 'cwd': '/', 'instances': 2, 'merge_logs': False,
                    'env': {'PORT': '18703', 'APP_ENV': 'lab'}}, name='legacy', revision=None)
    assert eco.compute_drift(want, eco.actual_config(procs, want)) == []
    want['cwd'] = APP
    assert [(d['key'], d['before'], d['apply']) for d in eco.compute_drift(want, eco.actual_config(procs, want))] == [
        ('cwd', '/', 'recreate')]


def test_env_change_and_revision_are_reload_drift():
    app = api_def()
    app['env']['SESSION_SECRET'] = 'another-secret-value'
    app['env']['NEW_KEY'] = 'x'
    items = drift_of(app, revision='r2')
    assert [(d['key'], d['apply']) for d in items] == [
        ('revision', 'reload'), ('env.NEW_KEY', 'reload'), ('env.SESSION_SECRET', 'reload')]
    assert items[0]['before'] == 'r1' and items[0]['after'] == 'r2'


def test_removed_env_key_needs_recreate():
    app = api_def()
    del app['env']['SESSION_SECRET']
    assert [(d['key'], d['apply'], d['after']) for d in drift_of(app)] == [('env.SESSION_SECRET', 'recreate', None)]


@pytest.mark.parametrize('change, key, apply', [
    ({'instances': 3}, 'instances', 'scale'),
    ({'instances': 'max'}, None, None),  # cpu_count=2 in these tests: 'max' is 2
    ({'exec_mode': 'fork'}, 'exec_mode', 'recreate'),
    ({'script': 'worker.js'}, 'script', 'recreate'),
    ({'cwd': '/srv/app/releases/r2', 'script': APP + '/server.js'}, 'cwd', 'recreate'),
    ({'out_file': '/var/log/api.log'}, 'out_file', 'recreate'),
    ({'merge_logs': False}, 'merge_logs', 'recreate'),
    ({'kill_timeout': 5000}, 'kill_timeout', 'reload'),
    ({'listen_timeout': None}, 'listen_timeout', 'reload'),  # back to PM2's default 3000
    ({'wait_ready': False}, 'wait_ready', 'reload'),
    ({'max_memory_restart': '1G'}, 'max_memory_restart', 'reload'),
    ({'max_memory_restart': None}, 'max_memory_restart', 'recreate'),  # cannot be unset by a reload
    ({'node_args': '--inspect'}, 'node_args', 'reload'),
    ({'args': ['--x']}, 'args', 'reload'),
    ({'max_restarts': 3}, 'max_restarts', 'reload'),
    ({'restart_delay': 500}, 'restart_delay', 'reload'),
    ({'interpreter': '/usr/bin/node'}, 'interpreter', 'recreate'),
    ({'stop_exit_codes': [78]}, 'stop_exit_codes', 'reload'),
    ({'stop_exit_codes': 78}, 'stop_exit_codes', 'reload'),
])
def test_drift_classification(change, key, apply):
    app = api_def()
    app.update(change)
    items = drift_of(app)
    assert [(d['key'], d['apply']) for d in items] == ([(key, apply)] if key else [])


def test_instances_read_from_process_count_not_pm2_env_after_reload():
    procs = fixture('after_reload', 'api')
    assert all(p['pm2_env']['instances'] == 3 for p in procs)  # what PM2 stores after a reload with instances: 3 ...
    assert len(procs) == 2                                       # ... while it still runs 2 processes
    app = api_def(instances=3)
    app['env']['SESSION_SECRET'] = 'fixture-secret-changed-987'
    want = desired(app, revision='r2')
    assert [(d['key'], d['before'], d['after']) for d in eco.compute_drift(want, eco.actual_config(procs, want))] == [
        ('instances', 2, 3)]


def test_stopped_app_config_is_still_compared():
    want = desired(revision='r2')
    app_procs = fixture('api_stopped', 'api')
    assert [d['key'] for d in eco.compute_drift(want, eco.actual_config(app_procs, want))] == ['env.SESSION_SECRET']


# ------------------------------------------------------------------ redaction

def test_redaction_masks_env_values_except_public_keys():
    app = api_def()
    app['env']['SESSION_SECRET'] = 'another-secret-value'
    want = desired(app, revision='r2')
    items = eco.redact_drift(eco.compute_drift(want, eco.actual_config(fixture('cluster_and_worker_online', 'api'), want)),
                             {'PORT'})
    text = json.dumps(items)
    assert SECRET not in text and 'another-secret-value' not in text
    assert {'key': 'env.SESSION_SECRET', 'before': eco.MASK, 'after': eco.MASK_CHANGED, 'apply': 'reload'} in items
    redacted = eco.redact_config(want, {'PORT'}, changed_env={'SESSION_SECRET'})
    assert redacted['env'] == {'PORT': '18701', 'APP_ENV': eco.MASK, 'SESSION_SECRET': eco.MASK_CHANGED}
    assert want['env']['SESSION_SECRET'] == 'another-secret-value'  # the original is untouched
    entry = eco.redact_config(eco.pm2_entry(want), ())
    assert entry['env']['NODEOPS_REVISION'] == 'r2' and entry['env']['NODEOPS_ENV_KEYS'] == 'APP_ENV,PORT,SESSION_SECRET'


def test_secret_values_skip_public_short_and_numeric_values():
    env = {'PORT': '3000', 'SESSION_SECRET': 's3cr3t-value', 'APP_ENV': 'production', 'FLAG': 'true', 'PIN': '123456',
           'SHORT': 'ab'}
    assert eco.secret_values(env, {'APP_ENV'}) == {'s3cr3t-value'}


def test_desired_does_not_mutate_input():
    app = api_def()
    before = copy.deepcopy(app)
    desired(app)
    assert app == before
