"""pm2_app logic: the state machine table, verification with an injected clock, and whole runs against a fake PM2.

The fake PM2 (FakePm2) answers ``jlist`` with entries shaped like the real captured fixtures and
applies start/stop/reload/... to them, so that every test sees exactly which pm2 commands a run
issues and how many ``jlist`` calls it needed.
"""

import copy
import json
import os
import stat

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils import pm2_app
from ansible_collections.nodeops.stack.plugins.module_utils.pm2_app import Pm2App, Pm2AppError, Verifier, plan

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'pm2')
SECRET = 'super-secret-session-key-42'


def fixture(name, app=None):
    with open(os.path.join(FIXTURES, name + '.json')) as handle:
        return [p for p in json.load(handle) if app is None or p['name'] == app]


# ====================================================================== plan (state x situation x drift)

def drift(*kinds):
    return [{'key': 'k%d' % i, 'before': 1, 'after': 2, 'apply': kind} for i, kind in enumerate(kinds)]


S = ('start',)
DEL = ('delete',)
PLAN_TABLE = [
    # state,      status,   drift,                       count, want, only_if, strategy,  expected steps
    ('absent', 'absent', [], 0, None, False, 'graceful', []),
    ('absent', 'online', [], 2, None, False, 'graceful', [DEL]),
    ('absent', 'stopped', drift('reload'), 2, 2, False, 'graceful', [DEL]),
    ('stopped', 'absent', [], 0, 2, False, 'graceful', []),
    ('stopped', 'stopped', [], 2, 2, False, 'graceful', []),
    ('stopped', 'stopped', drift('recreate'), 2, 2, False, 'graceful', []),  # drift is not applied to a stopped app
    ('stopped', 'online', drift('reload'), 2, 2, False, 'graceful', [('stop',)]),
    ('stopped', 'mixed', [], 2, 2, False, 'graceful', [('stop',)]),
    ('started', 'absent', [], 0, 2, False, 'graceful', [S]),
    ('started', 'online', [], 2, 2, False, 'graceful', []),
    ('started', 'online', drift('reload'), 2, 2, False, 'graceful', [('reload_eco',)]),
    ('started', 'online', drift('scale'), 2, 3, False, 'graceful', [('scale', 3)]),
    ('started', 'online', drift('scale', 'reload'), 3, 2, False, 'graceful', [('scale', 2), ('reload_eco',)]),
    ('started', 'online', drift('reload', 'scale'), 2, 4, False, 'graceful', [('reload_eco',), ('scale', 4)]),
    ('started', 'online', drift('reload', 'recreate'), 2, 2, False, 'graceful', [DEL, S]),
    ('started', 'online', drift('reload'), 2, 2, False, 'recreate', [DEL, S]),
    ('started', 'stopped', [], 2, 2, False, 'graceful', [('restart',)]),
    ('started', 'stopped', drift('reload'), 2, 2, False, 'graceful', [DEL, S]),
    ('started', 'mixed', [], 2, 2, False, 'graceful', [('reload',)]),
    ('started', 'mixed', drift('scale'), 2, 3, False, 'graceful', [DEL, S]),
    ('restarted', 'absent', [], 0, 2, False, 'graceful', [S]),
    ('restarted', 'online', [], 2, 2, False, 'graceful', [('restart',)]),
    ('restarted', 'online', [], 2, 2, True, 'graceful', []),
    ('restarted', 'stopped', [], 2, 2, True, 'graceful', [('restart',)]),
    ('restarted', 'online', drift('reload'), 2, 2, True, 'graceful', [DEL, S]),
    ('reloaded', 'absent', [], 0, 2, True, 'graceful', [S]),
    ('reloaded', 'online', [], 2, 2, False, 'graceful', [('reload',)]),
    ('reloaded', 'online', [], 2, 2, True, 'graceful', []),
    ('reloaded', 'online', drift('reload'), 2, 2, True, 'graceful', [('reload_eco',)]),
    ('reloaded', 'online', drift('reload'), 2, 2, False, 'graceful', [('reload_eco',)]),
    ('reloaded', 'online', drift('scale'), 2, 3, False, 'graceful', [('reload',), ('scale', 3)]),
    ('reloaded', 'online', drift('scale'), 2, 3, True, 'graceful', [('scale', 3)]),
    ('reloaded', 'online', drift('recreate'), 2, 2, True, 'graceful', [DEL, S]),
    ('reloaded', 'online', drift('reload'), 2, 2, True, 'recreate', [DEL, S]),
    ('reloaded', 'stopped', [], 2, 2, True, 'graceful', [('reload',)]),
    ('reloaded', 'stopped', drift('reload'), 2, 2, False, 'graceful', [DEL, S]),
]


@pytest.mark.parametrize('state, status, items, count, want, only_if, strategy, steps', PLAN_TABLE)
def test_plan_table(state, status, items, count, want, only_if, strategy, steps):
    decision = plan(state, status, items, True, count=count, desired_count=want, only_if_changed=only_if, strategy=strategy)
    assert decision.steps == steps, decision.reason
    acts = bool(steps) and state not in ('stopped', 'absent')
    assert decision.verify == acts
    assert decision.reason


def test_plan_new_pids_only_when_every_process_is_replaced():
    assert plan('started', 'online', drift('scale'), True, 2, 3).new_pids is False
    assert plan('started', 'online', drift('reload'), True, 2, 2).new_pids is True
    assert plan('reloaded', 'online', [], True, 2, 2).new_pids is True
    assert plan('started', 'absent', [], True, 0, 2).new_pids is False


@pytest.mark.parametrize('state', ['started', 'restarted', 'reloaded'])
def test_plan_needs_an_ecosystem_to_create_the_app(state):
    with pytest.raises(Pm2AppError) as info:
        plan(state, 'absent', [], False)
    assert info.value.msg.startswith('ecosystem: the app is not known to PM2, so an ecosystem or ecosystem_file is needed')


def test_plan_without_config_acts_on_the_known_app():
    assert plan('started', 'stopped', [], False, 2).steps == [('restart',)]
    assert plan('reloaded', 'online', [], False, 2).steps == [('reload',)]
    assert plan('stopped', 'online', [], False, 2).steps == [('stop',)]


# ====================================================================== verification with a fake clock

class Clock:
    def __init__(self, wall=1800000000.0):
        self.now = 0.0
        self.wall0 = wall
        self.sleeps = []

    def monotonic(self):
        return self.now

    def wall(self):
        return self.wall0 + self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def raw(pm_id, pid, status='online', restarts=0, started_at=-10.0, clock=None, name='api'):
    """A jlist entry (only the keys the verifier reads) for a process started at monotonic time ``started_at``."""
    wall0 = clock.wall0 if clock else 1800000000.0
    return {'name': name, 'pm_id': pm_id, 'pid': pid if status == 'online' else 0, 'monit': {'memory': 1, 'cpu': 0},
            'pm2_env': {'name': name, 'status': status, 'restart_time': restarts, 'unstable_restarts': 0,
                        'pm_uptime': int((wall0 + started_at) * 1000), 'exec_mode': 'cluster_mode', 'instances': 2,
                        'pm_err_log_path': '/tmp/x-error.log'}}


def scripted(clock, frames):
    """read() returning frames[i] for the i-th call (the last one repeats)."""
    calls = []

    def read():
        calls.append(clock.now)
        return copy.deepcopy(frames[min(len(calls), len(frames)) - 1])
    read.calls = calls
    return read


def verifier(read, clock, **kwargs):
    kwargs.setdefault('min_uptime', 2.0)
    kwargs.setdefault('stability_window', 3.0)
    kwargs.setdefault('timeout', 30.0)
    kwargs.setdefault('expected', 2)
    return Verifier(read, clock=clock.monotonic, sleep=clock.sleep, wallclock=clock.wall, poll=0.25, **kwargs)


def test_passes_after_stability_window():
    clock = Clock()
    read = scripted(clock, [[raw(0, 101, clock=clock), raw(1, 102, clock=clock)]])
    out = verifier(read, clock).run()
    assert out['passed'] and out['reason'] == 'ok'
    assert out['elapsed'] == pytest.approx(3.0)
    assert out['polls'] == 13
    assert out['message'] == '2 instance(s) online, up >= 2.0s, no restart for 3.0s'


def test_waits_for_min_uptime_of_fresh_processes():
    clock = Clock()
    read = scripted(clock, [[raw(0, 101, started_at=0.0, clock=clock), raw(1, 102, started_at=0.0, clock=clock)]])
    out = verifier(read, clock, min_uptime=5.0, stability_window=1.0).run()
    assert out['passed'] and out['elapsed'] == pytest.approx(5.0)


def test_old_pids_must_be_gone():
    clock = Clock()
    old = [raw(0, 101, restarts=1, clock=clock), raw(1, 102, restarts=1, clock=clock)]
    new = [raw(0, 201, restarts=1, started_at=0, clock=clock), raw(1, 202, restarts=1, started_at=0, clock=clock)]
    read = scripted(clock, [old] * 4 + [new])
    out = verifier(read, clock, old_pids=[101, 102], stability_window=1.0).run()
    assert out['passed']
    assert out['elapsed'] >= 2.0  # min uptime of the new processes
    out = verifier(scripted(clock, [old]), clock, old_pids=[101, 102], timeout=2.0).run()
    assert out['reason'] == 'timeout'
    assert 'expected new pids, pm_id 0 still has pid 101, pm_id 1 still has pid 102' in out['message']


def test_crash_loop_fails_fast_when_restart_count_rises():
    clock = Clock()
    frames = [[raw(0, 101, started_at=0, clock=clock), raw(1, 102, started_at=0, clock=clock)],
              [raw(0, 101, started_at=0, clock=clock), raw(1, 0, status='launching', restarts=1, clock=clock)]]
    out = verifier(scripted(clock, frames), clock).run()
    assert not out['passed'] and out['reason'] == 'crash'
    assert out['elapsed'] == pytest.approx(0.25)
    assert out['message'] == ('pm_id 1 was restarted by PM2 1 time(s) after the action (restarts 0 -> 1): '
                              'the app is crash-looping')


def test_crash_loop_from_real_jlist():
    clock = Clock()
    first = fixture('crash_loop')
    second = copy.deepcopy(first)
    second[0]['pm2_env']['restart_time'] += 1
    second[0]['pid'] += 100
    out = verifier(scripted(clock, [first, second]), clock).run()
    assert out['reason'] == 'crash' and 'pm_id 0 was restarted by PM2 1 time(s)' in out['message']


def test_errored_fails_at_once():
    clock = Clock()
    out = verifier(scripted(clock, [fixture('worker_errored')]), clock, expected=1).run()
    assert out['reason'] == 'errored'
    assert out['message'] == 'pm_id 0 is errored (PM2 gave up restarting it after 2 restart(s))'
    assert out['polls'] == 1


def stopped(pm_id, clock, **pm2_env):
    entry = raw(pm_id, 0, status='stopped', clock=clock)
    entry['pm2_env'].update(pm2_env)
    return entry


@pytest.mark.parametrize('pm2_env', [{'autorestart': False, 'exit_code': 1}, {'stop_exit_codes': ['0'], 'exit_code': 0},
                                     {'stop_exit_codes': 3, 'exit_code': 3}])
def test_exited_and_not_restarted_fails_at_once(pm2_env):
    clock = Clock()
    frames = [[raw(0, 101, started_at=0, clock=clock)], [stopped(0, clock, **pm2_env)]]
    out = verifier(scripted(clock, frames), clock, expected=1).run()
    assert out['reason'] == 'exited' and out['polls'] == 2
    assert out['message'].startswith('pm_id 0 exited and PM2 does not restart it')


def test_stopped_with_its_restart_pending_is_a_crash_not_an_exit():
    # PM2 shows a crashed process 'stopped' until its restart runs (and bumps restart_time); a busy host shows that moment.
    clock = Clock()
    frames = [[raw(0, 101, started_at=0, clock=clock)], [stopped(0, clock, exit_code=1, stop_exit_codes=[0])]]
    out = verifier(scripted(clock, frames), clock, expected=1).run()
    assert out['reason'] == 'crash' and out['polls'] == 2
    assert out['message'] == 'pm_id 0 exited (exit code 1) after the action and PM2 is starting it again: the app is crash-looping'


def test_timeout_names_what_was_missing():
    clock = Clock()
    frames = [[raw(0, 101, clock=clock), raw(1, 0, status='launching', clock=clock)]]
    out = verifier(scripted(clock, frames), clock, timeout=5.0).run()
    assert out['reason'] == 'timeout' and out['elapsed'] == pytest.approx(5.0)
    assert out['message'] == 'not verified within wait_timeout 5.0s: expected every instance online, pm_id 1 is launching'
    out = verifier(scripted(clock, [[raw(0, 101, clock=clock)]]), clock, timeout=1.0).run()
    assert 'expected 2 instance(s), found 1' in out['message']


def test_stability_window_restarts_when_a_pid_changes_without_count_change():
    clock = Clock()
    a = [raw(0, 101, clock=clock), raw(1, 102, clock=clock)]
    b = [raw(0, 101, clock=clock), raw(1, 103, clock=clock)]  # pid changed, restart count not (not seen in PM2, but safe)
    read = scripted(clock, [a] * 4 + [b])
    out = verifier(read, clock, stability_window=2.0).run()
    assert out['passed'] and out['elapsed'] == pytest.approx(3.0)


def test_real_reload_fixture_passes_with_old_pids_from_before():
    clock = Clock(wall=1795361334.115 + 30)  # 30 s after the captured reload
    old_pids = [p['pid'] for p in fixture('cluster_and_worker_online', 'api')]
    out = verifier(scripted(clock, [fixture('after_reload', 'api')]), clock, old_pids=old_pids).run()
    assert out['passed'], out['message']


# ====================================================================== whole runs against a fake PM2

class FakePm2:
    """A tiny PM2: keeps raw jlist entries and applies commands to them like PM2 does (see pm2_ecosystem's notes)."""

    def __init__(self, home, clock):
        self.home = home
        self.clock = clock
        self.procs = []
        self.calls = []
        self.next_pid = 1000
        self.next_id = 0
        self.crash = False          # after the next action, every jlist shows one more restart
        self.ignore_env_reload = False
        self.saved = None

    # -- helpers
    def _pid(self):
        self.next_pid += 1
        return self.next_pid

    def daemon(self):
        with open(os.path.join(self.home, 'pm2.pid'), 'w') as handle:
            handle.write(str(os.getpid()))

    def _env_from_entry(self, entry, pm_id):
        env = {
            'name': entry['name'], 'pm_id': pm_id, 'status': 'online', 'restart_time': 0, 'unstable_restarts': 0,
            'pm_uptime': int((self.clock.wall() - 60) * 1000), 'pm_exec_path': entry['script'], 'pm_cwd': entry['cwd'],
            'exec_mode': entry['exec_mode'] + '_mode', 'instances': entry['instances'], 'env': dict(entry['env']),
            'exec_interpreter': 'node', 'pm_out_log_path': entry['out_file'], 'pm_err_log_path': entry['error_file'],
        }
        for key in ('args', 'node_args', 'wait_ready', 'listen_timeout', 'kill_timeout', 'merge_logs', 'max_memory_restart',
                    'autorestart', 'max_restarts', 'min_uptime', 'restart_delay', 'exp_backoff_restart_delay', 'time',
                    'log_date_format', 'shutdown_with_message', 'instance_var', 'treekill'):
            if key in entry:
                env[key] = copy.deepcopy(entry[key])
        env.update(entry['env'])
        return env

    def _mine(self, name):
        return [p for p in self.procs if p['name'] == name]

    def _respawn(self, proc):
        proc['pid'] = self._pid()
        proc['pm2_env']['status'] = 'online'
        proc['pm2_env']['restart_time'] += 1
        proc['pm2_env']['pm_uptime'] = int((self.clock.wall() - 60) * 1000)

    # -- run_command interface
    def __call__(self, args, environ_update=None, **_kwargs):
        assert environ_update['PM2_HOME'] == self.home
        cmd = args[1:]
        self.calls.append(cmd)
        if cmd[0] == 'jlist':
            if self.crash:
                for proc in self.procs:
                    proc['pm2_env']['restart_time'] += 1
                    proc['pid'] = self._pid()
            return 0, json.dumps(self.procs), ''
        self.daemon()
        if cmd[0] == 'start':
            with open(cmd[1]) as handle:
                entry = json.load(handle)['apps'][0]
            for _i in range(entry['instances']):
                self.procs.append({'name': entry['name'], 'pm_id': self.next_id, 'pid': self._pid(),
                                   'monit': {'memory': 50000000, 'cpu': 0.5}, 'pm2_env': self._env_from_entry(entry, self.next_id)})
                self.next_id += 1
        elif cmd[0] == 'reload' and cmd[1].endswith('.json'):
            with open(cmd[1]) as handle:
                entry = json.load(handle)['apps'][0]
            for proc in self._mine(entry['name']):
                if not self.ignore_env_reload:
                    fresh = self._env_from_entry(entry, proc['pm_id'])
                    for key in ('pm_exec_path', 'pm_cwd', 'exec_mode', 'pm_out_log_path', 'pm_err_log_path', 'restart_time',
                                'pm_uptime'):
                        fresh[key] = proc['pm2_env'][key]
                    proc['pm2_env'] = fresh
                self._respawn(proc)
        elif cmd[0] in ('reload', 'restart'):
            for proc in self._mine(cmd[1]):
                self._respawn(proc)
        elif cmd[0] == 'stop':
            for proc in self._mine(cmd[1]):
                proc['pid'] = 0
                proc['pm2_env']['status'] = 'stopped'
        elif cmd[0] == 'delete':
            self.procs = [p for p in self.procs if p['name'] != cmd[1]]
        elif cmd[0] == 'scale':
            mine, want = self._mine(cmd[1]), int(cmd[2])
            if want < len(mine):
                drop = set(p['pm_id'] for p in mine[:len(mine) - want])
                self.procs = [p for p in self.procs if p['pm_id'] not in drop]
            for _i in range(want - len(mine)):
                clone = copy.deepcopy(mine[0])
                clone['pm_id'] = clone['pm2_env']['pm_id'] = self.next_id
                clone['pid'] = self._pid()
                clone['pm2_env']['restart_time'] = 0
                self.next_id += 1
                self.procs.append(clone)
        elif cmd[0] == 'save':
            self.saved = copy.deepcopy(self.procs)
        else:
            return 1, '', 'unknown command %s' % cmd
        return 0, '[PM2] done', ''

    def actions(self):
        return [c for c in self.calls if c[0] != 'jlist']

    def jlists(self):
        return sum(1 for c in self.calls if c[0] == 'jlist')


@pytest.fixture
def env(tmp_path):
    """tmp PM2_HOME, app dir with server.js, fake pm2 binary, fake clock, FakePm2."""
    home = tmp_path / 'pm2home'
    home.mkdir()
    app_dir = tmp_path / 'app'
    app_dir.mkdir()
    (app_dir / 'server.js').write_text('// app\n')
    binary = tmp_path / 'pm2'
    binary.write_text('#!/bin/sh\nexit 99\n')
    binary.chmod(0o755)
    clock = Clock()
    fake = FakePm2(str(home), clock)

    class Env:
        pass
    e = Env()
    e.home, e.app_dir, e.binary, e.clock, e.fake = str(home), str(app_dir), str(binary), clock, fake
    return e


def params(env, **over):
    p = dict(name='api', state='started', ecosystem={
        'script': 'server.js', 'cwd': env.app_dir, 'instances': 2, 'wait_ready': True, 'kill_timeout': 12000,
        'env': {'PORT': 3000, 'APP_ENV': 'lab', 'SESSION_SECRET': SECRET}},
        ecosystem_file=None, revision=None, only_if_changed=False, update_strategy='graceful', user=None,
        pm2_home=env.home, pm2_binary=env.binary, env_public_keys=['PORT', 'APP_ENV'], verify=True, wait_timeout=20.0,
        min_uptime=1.0, stability_window=1.0, log_lines=5, command_timeout=30.0, save=False)
    p.update(over)
    return p


def run(env, check_mode=False, diff=True, **over):
    secrets = set()
    app = Pm2App(params(env, **over), check_mode=check_mode, diff=diff, runner=env.fake, clock=env.clock.monotonic,
                 sleep=env.clock.sleep, wallclock=env.clock.wall, cpu_count=4, add_secrets=secrets.update)
    result = app.run()
    text = json.dumps(result)
    assert SECRET not in text
    assert secrets and not any(value in text for value in secrets)  # registered as no_log values, and absent anyway
    assert any(value.startswith(SECRET) for value in secrets)
    return result


def test_lifecycle_commands_changed_and_one_jlist_per_decision(env):
    fake = env.fake
    res = run(env)  # absent -> started: no daemon yet, so not even a jlist before the start
    eco_path = os.path.join(env.home, 'nodeops', 'api.ecosystem.json')
    assert res['changed'] and res['actions'] == ['pm2 start %s' % eco_path] and res['ecosystem_path'] == eco_path
    assert fake.calls[0] == ['start', eco_path]
    assert res['verification']['passed'] and res['status'] == 'online' and len(res['processes']) == 2
    assert res['processes'][0]['instances'] == 2 and res['processes'][0]['exec_mode'] == 'cluster'

    fake.calls[:] = []
    res = run(env)  # started again: ok, exactly one jlist
    assert not res['changed'] and res['actions'] == [] and fake.calls == [['jlist']]

    pids = [p['pid'] for p in fake.procs]
    fake.calls[:] = []
    res = run(env, state='reloaded')
    assert res['changed'] and res['actions'] == ['pm2 reload api']
    assert not set(pids) & set(p['pid'] for p in res['processes'])

    res = run(env, state='reloaded', only_if_changed=True)
    assert not res['changed']

    res = run(env, state='restarted')
    assert res['changed'] and res['actions'] == ['pm2 restart api']

    res = run(env, state='stopped')
    assert res['changed'] and res['actions'] == ['pm2 stop api'] and res['status'] == 'stopped'
    assert res['verification'] is None
    res = run(env, state='stopped')
    assert not res['changed']
    res = run(env, state='started')
    assert res['changed'] and res['actions'] == ['pm2 restart api'] and res['status'] == 'online'
    res = run(env, state='absent')
    assert res['changed'] and res['actions'] == ['pm2 delete api'] and res['processes'] == []
    fake.calls[:] = []
    res = run(env, state='absent')
    assert not res['changed'] and fake.calls == [['jlist']]


def test_absent_and_stopped_without_daemon_spawn_nothing(env):
    for state in ('absent', 'stopped'):
        res = run(env, state=state)
        assert not res['changed'] and res['status'] == 'absent'
    assert env.fake.calls == []
    assert not os.path.exists(os.path.join(env.home, 'pm2.pid'))


def test_drift_env_and_instances_applied_gracefully(env):
    run(env)
    ecosystem = params(env)['ecosystem']
    ecosystem = dict(ecosystem, instances=3, env=dict(ecosystem['env'], SESSION_SECRET=SECRET + '-v2'))
    res = run(env, ecosystem=ecosystem, check_mode=True)
    assert res['changed'] and res['plan']['steps'] == [['reload_eco'], ['scale', 3]] and res['actions'] == []
    assert [(d['key'], d['apply']) for d in res['drift']] == [('instances', 'scale'), ('env.SESSION_SECRET', 'reload')]
    assert res['diff']['after']['env']['SESSION_SECRET'] == '******** (changed)'
    assert res['diff']['before']['instances'] == 2 and res['diff']['after']['instances'] == 3

    res = run(env, ecosystem=ecosystem)
    assert res['changed'] and [a.split()[1] for a in res['actions']] == ['reload', 'scale']
    assert len(res['processes']) == 3
    assert all(p['pm2_env']['env']['SESSION_SECRET'] == SECRET + '-v2' for p in env.fake.procs)
    assert not run(env, ecosystem=ecosystem)['changed']


def test_revision_is_drift_and_only_if_changed_reloads_once(env):
    run(env, revision='r1')
    res = run(env, state='reloaded', only_if_changed=True, revision='r2')
    assert res['changed'] and res['drift'] == [{'key': 'revision', 'before': 'r1', 'after': 'r2', 'apply': 'reload'}]
    assert res['actions'][0].startswith('pm2 reload ') and res['actions'][0].endswith('--update-env')
    assert not run(env, state='reloaded', only_if_changed=True, revision='r2')['changed']


def test_recreate_for_exec_mode_change(env):
    run(env)
    ecosystem = dict(params(env)['ecosystem'], exec_mode='fork', instances=1)
    res = run(env, ecosystem=ecosystem)
    assert [a.split()[1] for a in res['actions']] == ['delete', 'start']
    assert env.fake.procs[0]['pm2_env']['exec_mode'] == 'fork_mode'


def test_check_mode_changes_nothing_and_writes_nothing(env):
    res = run(env, check_mode=True)
    assert res['changed'] and res['plan']['steps'] == [['start']] and env.fake.calls == []
    assert not os.path.exists(os.path.join(env.home, 'nodeops'))
    run(env)
    before = copy.deepcopy(env.fake.procs)
    env.fake.calls[:] = []
    for state in ('restarted', 'reloaded', 'stopped', 'absent'):
        res = run(env, state=state, check_mode=True)
        assert res['changed'], state
    assert env.fake.calls == [['jlist']] * 4 and env.fake.procs == before


def test_generated_file_is_private_and_holds_the_env(env):
    res = run(env, revision='r7')
    st = os.stat(res['ecosystem_path'])
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(res['ecosystem_path'])).st_mode) == 0o700
    with open(res['ecosystem_path']) as handle:
        entry = json.load(handle)['apps'][0]
    assert entry['env'] == {'PORT': '3000', 'APP_ENV': 'lab', 'SESSION_SECRET': SECRET, 'NODEOPS_REVISION': 'r7',
                            'NODEOPS_ENV_KEYS': 'APP_ENV,PORT,SESSION_SECRET'}
    assert res['ecosystem']['env'] == {'PORT': '3000', 'APP_ENV': 'lab', 'SESSION_SECRET': '********', 'NODEOPS_REVISION': 'r7',
                                       'NODEOPS_ENV_KEYS': 'APP_ENV,PORT,SESSION_SECRET'}


def test_crash_after_start_fails_with_table_and_error_log(env, tmp_path):
    log = tmp_path / 'api-error.log'
    log.write_text(''.join('line %d\n' % i for i in range(1, 11)) + 'Error: boom %s\n' % SECRET)
    ecosystem = dict(params(env)['ecosystem'], error_file=str(log))
    app = Pm2App(params(env, ecosystem=ecosystem), runner=env.fake, clock=env.clock.monotonic, sleep=env.clock.sleep,
                 wallclock=env.clock.wall, cpu_count=4)
    env.fake.crash = True
    with pytest.raises(Pm2AppError) as info:
        app.run()
    msg = info.value.msg
    assert msg.startswith("app 'api' failed verification after pm2 start ")
    assert 'was restarted by PM2 1 time(s) after the action' in msg and 'crash-looping' in msg
    assert 'pm_id  pid      status' in msg
    assert 'last 5 line(s) of %s:\nline 7\nline 8\nline 9\nline 10\nError: boom' % log in msg
    assert info.value.extra['log_lines'][-1].startswith('Error: boom')
    assert info.value.extra['error_log'] == [str(log)]
    assert env.clock.now < 1.0  # fails fast, far before wait_timeout


def test_pm2_not_applying_the_config_is_reported(env):
    run(env)
    env.fake.ignore_env_reload = True
    ecosystem = params(env)['ecosystem']
    ecosystem = dict(ecosystem, env=dict(ecosystem['env'], APP_ENV='staging'))
    with pytest.raises(Pm2AppError) as info:
        run(env, ecosystem=ecosystem)
    assert "PM2 did not apply env.APP_ENV after pm2 reload" in info.value.msg


def test_save_after_change_only(env):
    run(env, save=True)
    assert env.fake.actions()[-1] == ['save', '--force']
    env.fake.calls[:] = []
    run(env, save=True)
    assert env.fake.actions() == []


def test_pm2_command_failure_is_reported_with_output(env):
    def broken(args, environ_update=None, **_kwargs):
        if args[1] == 'jlist':
            return 0, '[]', ''
        return 1, '', '\x1b[31m[PM2][ERROR] Script not found\x1b[39m'
    env.fake.daemon()
    app = Pm2App(params(env), runner=broken, clock=env.clock.monotonic, sleep=env.clock.sleep, wallclock=env.clock.wall)
    with pytest.raises(Pm2AppError) as info:
        app.run()
    assert info.value.msg.startswith('pm2 start ') and info.value.msg.endswith('failed (rc=1): [PM2][ERROR] Script not found')


def test_restart_of_unknown_app_without_ecosystem(env):
    with pytest.raises(Pm2AppError, match='ecosystem: the app is not known to PM2'):
        run(env, ecosystem=None, state='restarted')


def test_ecosystem_file_yaml_relative_paths(env, tmp_path):
    path = tmp_path / 'app' / 'ecosystem.yml'
    path.write_text('apps:\n  - name: api\n    script: server.js\n    instances: 1\n    env:\n      SESSION_SECRET: %s\n' % SECRET)
    res = run(env, ecosystem=None, ecosystem_file=str(path))
    assert res['changed'] and res['ecosystem']['script'] == os.path.join(env.app_dir, 'server.js')


# ====================================================================== users, binaries, the command runner

class Pw:
    def __init__(self, name, uid, home):
        self.pw_name, self.pw_uid, self.pw_gid, self.pw_dir = name, uid, uid, home


USERS = {'root': Pw('root', 0, '/root'), 'app': Pw('app', 1001, '/home/app'), 'bob': Pw('bob', 1002, '/home/bob')}


def getpwnam(name):
    return USERS[name]


def getpwuid(uid):
    return [u for u in USERS.values() if u.pw_uid == uid][0]


def resolve(user, euid):
    return pm2_app.UserContext.resolve(user, euid=euid, getpwnam=getpwnam, getpwuid=getpwuid)


def test_user_context():
    ctx = resolve(None, 1001)
    assert (ctx.name, ctx.home, ctx.switch) == ('app', '/home/app', False)
    ctx = resolve('app', 1001)
    assert ctx.switch is False
    ctx = resolve('app', 0)
    assert (ctx.name, ctx.uid, ctx.switch) == ('app', 1001, True)
    with pytest.raises(Pm2AppError) as info:
        resolve('app', 1002)
    assert info.value.msg == ("user: switching to 'app' needs root, but the module runs as 'bob'; use become: true (root) "
                              "with user, or become_user: app without user")
    with pytest.raises(Pm2AppError, match="user: expected an existing OS user on the managed node, 'ghost' was not found"):
        resolve('ghost', 0)


def test_runner_wraps_with_runuser_timeout_and_clean_env(monkeypatch):
    seen = []

    def run_command(cmd, **kwargs):
        seen.append((cmd, kwargs))
        return 0, '[]', ''
    monkeypatch.setenv('SOME_CONTROLLER_VAR', 'leak')
    ctx = pm2_app.UserContext('app', 1001, 1001, '/home/app', True)
    runner = pm2_app.command_runner(ctx, 12.0, run_command, runuser='/usr/sbin/runuser', timeout_bin='/usr/bin/timeout')
    assert runner(['/usr/bin/pm2', 'jlist'], environ_update={'PM2_HOME': '/home/app/.pm2', 'PATH': '/usr/bin:/bin'}) == (0, '[]', '')
    cmd, kwargs = seen[-1]
    assert cmd[:10] == ['/usr/sbin/runuser', '-u', 'app', '--', '/usr/bin/timeout', '-k', '10', '12', 'env', '-i']
    assert cmd[-2:] == ['/usr/bin/pm2', 'jlist']
    assert 'HOME=/home/app' in cmd and 'PM2_HOME=/home/app/.pm2' in cmd and 'USER=app' in cmd and 'PATH=/usr/bin:/bin' in cmd
    assert not any('SOME_CONTROLLER_VAR' in c for c in cmd)  # env -i: nothing else is inherited
    assert kwargs == {'cwd': '/', 'expand_user_and_vars': False}
    # as the user itself, no runuser; without coreutils timeout, no timeout wrapper
    runner = pm2_app.command_runner(pm2_app.UserContext('app', 1001, 1001, '/home/app', False), 5, run_command)
    runner(['/usr/bin/pm2', 'jlist'], environ_update={'PM2_HOME': '/x'})
    assert seen[-1][0][:2] == ['env', '-i'] and seen[-1][0][-2:] == ['/usr/bin/pm2', 'jlist']


def test_runner_reports_timeout():
    ctx = pm2_app.UserContext('app', 1001, 1001, '/home/app', False)
    runner = pm2_app.command_runner(ctx, 3, lambda cmd, **kw: (124, '', ''), timeout_bin='/usr/bin/timeout')
    with pytest.raises(pm2_app.Pm2Error, match=r'pm2 reload api did not finish within 3s \(command_timeout\)'):
        runner(['/usr/bin/pm2', 'reload', 'api'], environ_update={'PM2_HOME': '/x'})


def test_find_pm2(tmp_path, monkeypatch):
    exe = tmp_path / 'pm2'
    exe.write_text('#!/bin/sh\n')
    exe.chmod(0o755)
    assert pm2_app.find_pm2(str(exe)) == str(exe)
    assert pm2_app.find_pm2(None, path=str(tmp_path)) == str(exe)
    with pytest.raises(Pm2AppError, match=r"pm2_binary: expected an executable PM2 CLI on the managed node, '/nope/pm2' does not exist"):
        pm2_app.find_pm2('/nope/pm2')
    exe.chmod(0o644)
    with pytest.raises(Pm2AppError, match=r"is not executable"):
        pm2_app.find_pm2(str(exe))
    monkeypatch.setattr(pm2_app, 'PM2_LOCATIONS', ())
    with pytest.raises(Pm2AppError, match=r'pm2_binary: PM2 was not found on the managed node \(looked on PATH and in \)'):
        pm2_app.find_pm2(None, path=str(tmp_path / 'empty'))


def test_tail_lines(tmp_path):
    path = tmp_path / 'log'
    path.write_text(''.join('\x1b[31mline %d\x1b[39m\n' % i for i in range(1000)))
    assert pm2_app.tail_lines(str(path), 3) == ['line 997', 'line 998', 'line 999']
    assert pm2_app.tail_lines(str(path), 2, max_bytes=40) == ['line 998', 'line 999']
    assert pm2_app.tail_lines(str(tmp_path / 'missing'), 3) == []
    assert pm2_app.tail_lines(str(path), 0) == []


def test_redacted_params_and_inline_secrets():
    p = {'name': 'api', 'env_public_keys': ['PORT'],
         'ecosystem': {'apps': [{'name': 'api', 'env': {'PORT': 3000, 'TOKEN': SECRET}}]}}
    red = pm2_app._redacted_params(p)
    assert red['ecosystem']['apps'][0]['env'] == {'PORT': 3000, 'TOKEN': '********'}
    assert p['ecosystem']['apps'][0]['env']['TOKEN'] == SECRET
    assert pm2_app._inline_secrets(p) == {SECRET}


@pytest.mark.parametrize('name', ['all', '3', 'my app', '/api/', '', 'a,b', 'Infinity'])
def test_ambiguous_names_are_refused(env, name):
    with pytest.raises(Pm2AppError) as info:
        run(env, name=name)
    assert info.value.msg.startswith('name: expected a PM2 app name')
