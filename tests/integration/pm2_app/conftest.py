"""Fixtures for the pm2_app integration tests: one private PM2 daemon per test module, always killed in teardown."""

import os
import shutil
import tempfile

import pytest

from pm2_app_support import PM2_BIN, Pm2  # pylint: disable=import-error


@pytest.fixture(scope='module')
def pm2():
    """A PM2_HOME of this test module (the daemon is spawned by the first module run and `pm2 kill`ed at the end)."""
    if not os.path.exists(PM2_BIN):
        pytest.fail('PM2 is not installed in .cache/node (run scripts/install-node-tools.sh)')
    # Not under pytest's tmp dir (0700, root-only): the `user` test runs PM2 as another OS user.
    base = tempfile.mkdtemp(prefix='pm2app-')
    os.chmod(base, 0o755)
    runner = Pm2(os.path.join(base, 'home'))
    try:
        yield runner
    finally:
        runner.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def module_args(pm2):
    """Common module arguments (fast verification windows; the load test sets its own)."""
    def make(**over):
        args = {'name': 'api', 'pm2_home': pm2.home, 'pm2_binary': PM2_BIN, 'env_public_keys': ['PORT', 'APP_ENV', 'APP_VERSION'],
                'min_uptime': 1, 'stability_window': 1.5, 'wait_timeout': 30}
        args.update(over)
        return args
    return make
