"""``user``: the module runs as root and drives a PM2 daemon owned by an unprivileged user through runuser.

Uses the existing ``nobody`` account (no user is created on the test machine); its PM2_HOME is a
private directory the module creates and chowns.
"""

import os
import pwd
import stat

import pytest

from pm2_app_support import PM2_BIN, SECRET, api_ecosystem, free_port, http_get, run_module  # pylint: disable=import-error


def uid_of(pid):
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('Uid:'):
                return int(line.split()[1])
    return None


@pytest.fixture
def nobody_home(pm2):
    if os.geteuid() != 0:
        pytest.skip('needs root (runuser)')
    home = os.path.join(os.path.dirname(pm2.home), 'nobody-pm2')
    yield home
    # the daemon belongs to nobody; root can still talk to it to kill it
    runner = type(pm2)(home)
    runner.kill()


def test_root_with_user_runs_pm2_as_that_user(nobody_home):
    nobody = pwd.getpwnam('nobody')
    port = free_port()
    args = {'name': 'asuser', 'user': 'nobody', 'pm2_home': nobody_home, 'pm2_binary': PM2_BIN,
            'ecosystem': api_ecosystem(port, instances=1), 'min_uptime': 1, 'stability_window': 1}
    failed, res = run_module(args)
    assert not failed, res['msg']
    assert res['user'] == 'nobody' and res['changed'] is True
    pid = res['processes'][0]['pid']
    assert uid_of(pid) == nobody.pw_uid, 'the app runs as nobody'
    with open(os.path.join(nobody_home, 'pm2.pid')) as handle:
        assert uid_of(int(handle.read())) == nobody.pw_uid, 'the PM2 daemon runs as nobody'
    for path, mode in ((nobody_home, 0o700), (os.path.join(nobody_home, 'nodeops'), 0o700), (res['ecosystem_path'], 0o600)):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, mode), path
    with open(res['ecosystem_path']) as handle:
        assert SECRET in handle.read()
    assert http_get(port)[0] == 200

    failed, res = run_module(args)
    assert not failed and res['changed'] is False
    failed, res = run_module(dict(args, state='absent'))
    assert not failed and res['changed'] is True and res['processes'] == []
