"""The rolling_update role's controller-side helper (roles/rolling_update/files/rolling_update_helper.py).

It identifies the ansible-playbook process recorded in the deploy lock, tells whether a
recorded controller process is gone (so that a killed run's lock is taken over), and
identifies release tarballs (sha256, version, git sha, top-level directory).
"""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HELPER = os.path.join(ROOT, 'roles', 'rolling_update', 'files', 'rolling_update_helper.py')


def helper(*args):
    cmd = [sys.executable, HELPER] + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def make_tar(path, members, gz=True):
    with tarfile.open(path, 'w:gz' if gz else 'w') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_self_names_this_host_and_a_live_process():
    me = helper('self')
    assert me['host'] == socket.gethostname()
    assert me['controller'] == '%s:%d:%s' % (me['host'], me['pid'], me['start'])
    assert os.path.exists('/proc/%d' % me['pid'])
    assert me['user']


def test_self_finds_the_topmost_ansible_playbook_process(tmp_path):
    # A fake "ansible-playbook" that forks a child (like Ansible's workers), which runs the helper.
    script = tmp_path / 'ansible-playbook'
    script.write_text(
        'import os, subprocess, sys\n'
        'pid = os.fork()\n'
        'if pid == 0:\n'
        '    out = subprocess.run([sys.executable, %r, "self"], capture_output=True, text=True).stdout\n'
        '    sys.stdout.write(out); sys.stdout.flush(); os._exit(0)\n'
        'os.waitpid(pid, 0)\n'
        'print("PARENT %%d" %% os.getpid())\n' % HELPER)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.splitlines()
    found = json.loads(out[0])
    parent = int(out[1].split()[1])
    assert found['pid'] == parent


def test_alive_for_a_live_a_dead_and_a_reused_pid():
    me = helper('self')
    live = helper('alive', me['controller'])
    assert live['same_host'] and live['alive'] is True
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    dead = helper('alive', '%s:%d:%s' % (me['host'], proc.pid, '123'))
    assert dead['alive'] is False and 'no longer exists' in dead['reason']
    reused = helper('alive', '%s:%d:%s' % (me['host'], os.getpid(), '1'))
    assert reused['alive'] is False and 'reused' in reused['reason']


@pytest.mark.parametrize('controller', ['other-host:123:456', 'garbage', ''])
def test_alive_cannot_tell_for_another_controller_or_garbage(controller):
    result = helper('alive', controller)
    assert result['alive'] is None


def test_artifact_flat_tarball(tmp_path):
    path = str(tmp_path / 'app.tgz')
    sha = make_tar(path, {'package.json': b'{"name": "shop", "version": "2.0.0"}',
                          'release.json': b'{"version": "2.0.0", "git_sha": "abc1234def"}', 'server.js': b''})
    info = helper('artifact', path)
    assert info['sha256'] == sha
    assert (info['version'], info['git_sha'], info['strip_components'], info['name']) == ('2.0.0', 'abc1234def', 0, 'shop')


def test_artifact_npm_pack_layout_is_stripped(tmp_path):
    path = str(tmp_path / 'app.tgz')
    make_tar(path, {'package/package.json': b'{"name": "shop", "version": "3.1.0", "gitHead": "feed"}',
                    'package/server.js': b''})
    info = helper('artifact', path)
    assert (info['version'], info['git_sha'], info['strip_components']) == ('3.1.0', 'feed', 1)


def test_artifact_unknown_git_sha_and_bad_file(tmp_path):
    path = str(tmp_path / 'app.tgz')
    make_tar(path, {'release.json': b'{"version": "1.0.0", "git_sha": "unknown"}'})
    assert helper('artifact', path)['git_sha'] is None
    bad = tmp_path / 'bad.tgz'
    bad.write_bytes(b'not a tarball')
    assert 'cannot read the artifact' in helper('artifact', str(bad))['error']
