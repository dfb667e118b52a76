"""Fixtures for the health_gate integration tests: every server or process is stopped in a finalizer."""

import os
import shutil

import pytest

from health_gate_support import (  # pylint: disable=import-error
    NODE_BIN, Pki, Pm2, ScriptedHTTPServer, run_command, server_tls_context, start_mongo_test_server, start_redis,
)

from ansible_collections.nodeops.stack.plugins.module_utils.health_policy import HealthGate, Policy
from ansible_collections.nodeops.stack.plugins.module_utils.probes import build_probes


@pytest.fixture
def gate():
    """gate(probe_specs, **policy) -> result dict, through the real probe runners and policy loop."""

    def run(specs, **policy):
        policy.setdefault('interval', 0.05)
        policy.setdefault('deadline', 10)
        policy.setdefault('timeout', 2)
        policy.setdefault('failure_threshold', 5)  # a broken test fails fast; deadline tests pass None
        return HealthGate(build_probes(specs, run_command=run_command), Policy(**policy)).run()
    return run


@pytest.fixture
def http_server():
    server = ScriptedHTTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp('pki'))


@pytest.fixture
def https_server(pki):
    """https_server(cert_name='valid', **issue_kwargs, max_version=None, client_ca=None) -> started server."""
    servers = []

    def start(name='valid', max_version=None, client_ca=None, **issue):
        certfile, keyfile = pki.issue(name, **issue)
        server = ScriptedHTTPServer(tls=server_tls_context(certfile, keyfile, max_version=max_version, client_ca=client_ca))
        servers.append(server.start())
        return server
    yield start
    for server in servers:
        server.stop()


REDIS_PASSWORD = 'r3dis-S3cret-pw'


@pytest.fixture(scope='module')
def redis_server(tmp_path_factory):
    if not shutil.which('redis-server'):
        pytest.fail('redis-server is not installed (apt-get install redis-server)')
    proc, port = start_redis(tmp_path_factory.mktemp('redis'), REDIS_PASSWORD)
    yield port
    proc.stop()


@pytest.fixture(scope='module')
def mongo_server():
    proc, host, port = start_mongo_test_server()
    yield host, port
    proc.stop()


@pytest.fixture(scope='module')
def mongo_replset_server():
    proc, host, port = start_mongo_test_server(replset='rs0')
    yield host, port
    proc.stop()


@pytest.fixture
def pm2(tmp_path):
    if not os.path.exists(os.path.join(NODE_BIN, 'pm2')):
        pytest.fail('PM2 is not installed in .cache/node (run scripts/install-node-tools.sh)')
    home = tmp_path / 'pm2home'
    home.mkdir()
    runner = Pm2(home)
    yield runner
    runner.kill()
