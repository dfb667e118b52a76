"""Helpers for the pm2_app integration tests: a private PM2 daemon, the module run as a subprocess or through
ansible-playbook, HTTP probes of the sample app. Everything listens on and talks to 127.0.0.1 only."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
NODE_BIN = os.path.join(REPO, '.cache', 'node', 'bin')
PM2_BIN = os.path.join(NODE_BIN, 'pm2')
COLLECTIONS = os.path.join(REPO, '.cache', 'collections')
SAMPLE_APP = os.path.join(REPO, 'tests', 'support', 'sample_app')
VENV_BIN = os.path.dirname(sys.executable)
MODULE = 'ansible_collections.nodeops.stack.plugins.modules.pm2_app'
SECRET = 'integration-S3cret-value-0xC0FFEE'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=15.0, step=0.1, what='condition'):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except Exception as exc:  # pylint: disable=broad-except
            last = exc
        time.sleep(step)
    raise AssertionError('timed out waiting for %s (last error: %s)' % (what, last))


def http_get(port, path='/', timeout=3.0):
    """(status, headers dict (lower-case names), parsed JSON body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('GET', path, headers={'Connection': 'close'})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), json.loads(body or b'null')
    finally:
        conn.close()


class Pm2:
    """Direct PM2 CLI access for assertions and teardown (private PM2_HOME)."""

    def __init__(self, home):
        self.home = str(home)
        self.env = {'PATH': NODE_BIN + os.pathsep + os.environ.get('PATH', os.defpath), 'HOME': os.environ.get('HOME', '/root'),
                    'PM2_HOME': self.home, 'LANG': 'C.UTF-8'}

    def __call__(self, *args, check=True, timeout=60):
        proc = subprocess.run([PM2_BIN] + list(args), env=self.env, cwd='/', stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError('pm2 %s failed (%s): %s' % (' '.join(args), proc.returncode, proc.stdout.decode()[-2000:]))
        return proc.stdout.decode()

    def jlist(self):
        if not os.path.exists(os.path.join(self.home, 'pm2.pid')):
            return []
        out = self('jlist')
        return json.loads(out[out.index('['):])

    def pids(self, name):
        return sorted(p['pid'] for p in self.jlist() if p['name'] == name)

    def table(self, name):
        return [(p['pm_id'], p['pid'], p['pm2_env']['status'], p['pm2_env']['restart_time'])
                for p in self.jlist() if p['name'] == name]

    def delete(self, name):
        if any(p['name'] == name for p in self.jlist()):
            self('delete', name, check=False)

    def kill(self):
        pid_file = os.path.join(self.home, 'pm2.pid')
        if not os.path.exists(pid_file):
            return
        self('kill', check=False)
        try:  # the CLI could not reach the daemon: stop it by pid (it stops its apps on SIGTERM), if it is ours
            with open(pid_file) as handle:
                pid = int(handle.read().strip())
            with open('/proc/%d/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read().decode('utf-8', 'replace')
            if 'God Daemon (%s)' % self.home in cmdline:
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass


def api_ecosystem(port, instances=2, **env):
    """The sample API in cluster mode with graceful-reload settings (wait_ready, kill_timeout > SHUTDOWN_TIMEOUT_MS)."""
    app_env = {'PORT': port, 'APP_ENV': 'lab', 'HOST': '127.0.0.1', 'SESSION_SECRET': SECRET, 'SHUTDOWN_TIMEOUT_MS': 8000,
               'HEALTH_REQUIRE_MONGODB': 'false', 'HEALTH_REQUIRE_REDIS': 'false'}
    app_env.update(env)
    return {'script': 'server.js', 'cwd': SAMPLE_APP, 'instances': instances, 'exec_mode': 'cluster', 'wait_ready': True,
            'listen_timeout': 8000, 'kill_timeout': 10000, 'max_memory_restart': '300M', 'stop_exit_codes': [78],
            'env': app_env}


def run_module(args, check=False, diff=False, timeout=180):
    """Run the module's main() as a subprocess, as Ansible would on the node; return (failed, result)."""
    payload = {'ANSIBLE_MODULE_ARGS': dict(args, _ansible_check_mode=check, _ansible_diff=diff)}
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump(payload, handle)
    try:
        env = dict(os.environ, PYTHONPATH=COLLECTIONS, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
        proc = subprocess.run([sys.executable, '-m', MODULE, handle.name], env=env, cwd='/', stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    finally:
        os.unlink(handle.name)
    out = proc.stdout.decode()
    try:
        result = json.loads(out[out.index('{'):])
    except ValueError:
        raise AssertionError('module printed no JSON (rc=%s): %s %s' % (proc.returncode, out[-2000:], proc.stderr.decode()[-2000:]))
    assert 'Traceback' not in proc.stderr.decode(), proc.stderr.decode()
    return bool(result.get('failed')), result


def run_playbook(tasks, workdir, extra_args=(), timeout=300):
    """Run one play on localhost (connection local) with ``tasks``; each task dict may carry ``_name``.

    Every module task registers its result, and the results are written to a JSON file read back here.
    Returns (results list, ansible-playbook stdout, returncode).
    """
    results_file = os.path.join(str(workdir), 'results.json')
    play_tasks = []
    for index, task in enumerate(tasks):
        task = dict(task)
        name = task.pop('_name', 'task %d' % index)
        play_tasks.append(dict(task, name=name, register='r%d' % index, ignore_errors=True))
    play_tasks.append({'name': 'write results', 'ansible.builtin.copy': {
        'content': '{{ [%s] | to_json }}' % ', '.join('r%d' % i for i in range(len(tasks))), 'dest': results_file, 'mode': '0600'},
        'changed_when': False})
    play = [{'name': 'pm2_app integration', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
             'vars': {'ansible_python_interpreter': sys.executable}, 'tasks': play_tasks}]
    path = os.path.join(str(workdir), 'play.yml')
    with open(path, 'w') as handle:
        yaml.safe_dump(play, handle, sort_keys=False)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'),
               ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_LOCALHOST_WARNING='0',
               PATH=VENV_BIN + os.pathsep + NODE_BIN + os.pathsep + os.environ.get('PATH', os.defpath))
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', path] + list(extra_args),
                          env=env, cwd=str(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    out = proc.stdout.decode()
    if not os.path.exists(results_file):
        raise AssertionError('ansible-playbook wrote no results (rc=%s):\n%s' % (proc.returncode, out[-4000:]))
    with open(results_file) as handle:
        results = json.load(handle)
    return results, out, proc.returncode
