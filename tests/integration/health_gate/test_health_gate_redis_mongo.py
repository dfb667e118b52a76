"""redis probes against a real redis-server, mongodb probes against the MongoDB wire-protocol test server."""

import time

from conftest import REDIS_PASSWORD  # pylint: disable=import-error
from health_gate_support import free_port  # pylint: disable=import-error


def redis_spec(port, **extra):
    spec = {'kind': 'redis', 'name': 'cache', 'host': '127.0.0.1', 'port': port, 'password': REDIS_PASSWORD}
    spec.update(extra)
    return spec


def test_redis_ping_and_role(gate, redis_server):
    res = gate([redis_spec(redis_server, role='master', db=1)], success_threshold=2)
    assert res['passed'] is True, res['msg']
    probe = res['timeline'][0]['probes'][0]
    assert probe['status'] == 'PONG role=master'
    assert probe['detail']['role'] == 'master'


def test_redis_wrong_role_fails(gate, redis_server):
    res = gate([redis_spec(redis_server, role='replica')], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert "probe 'cache' (redis 127.0.0.1:%d/0): expected role replica, got master" % redis_server in res['msg']


def test_redis_url_form_and_redaction(gate, redis_server):
    url = 'redis://:%s@127.0.0.1:%d/0' % (REDIS_PASSWORD, redis_server)
    res = gate([{'kind': 'redis', 'name': 'cache', 'url': url}], success_threshold=1)
    assert res['passed'] is True, res['msg']
    assert res['stats']['cache']['target'] == 'redis redis://:********@127.0.0.1:%d/0' % redis_server
    assert REDIS_PASSWORD not in repr(res)


def test_redis_wrong_password_fails_without_leaking_it(gate, redis_server):
    res = gate([redis_spec(redis_server, password='not-the-password')], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'AuthenticationError: invalid username-password pair' in res['msg']
    assert 'not-the-password' not in repr(res)
    res = gate([redis_spec(redis_server, password=None)], success_threshold=1, failure_threshold=1)
    assert 'AuthenticationError' in res['msg'] or 'NOAUTH' in res['msg']


def test_redis_down_fails_fast(gate):
    port = free_port()
    start = time.monotonic()
    res = gate([redis_spec(port)], success_threshold=1, failure_threshold=2, timeout=1)
    assert time.monotonic() - start < 1.5
    assert res['passed'] is False
    assert 'ConnectionError' in res['msg']
    assert 'Connection refused' in res['msg'] or 'connecting to 127.0.0.1:%d' % port in res['msg']


def test_mongodb_ping_standalone(gate, mongo_server):
    host, port = mongo_server
    uri = 'mongodb://%s:%d/?directConnection=true' % (host, port)
    res = gate([{'kind': 'mongodb', 'name': 'db', 'uri': uri, 'state': 'STANDALONE'}], success_threshold=2)
    assert res['passed'] is True, res['msg']
    assert res['timeline'][0]['probes'][0]['status'] == 'ok state=STANDALONE'
    res = gate([{'kind': 'mongodb', 'name': 'db', 'uri': uri, 'state': 'PRIMARY'}], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'expected member state PRIMARY, got STANDALONE' in res['msg']


def test_mongodb_replica_set_primary(gate, mongo_replset_server):
    host, port = mongo_replset_server
    uri = 'mongodb://%s:%d/?directConnection=true' % (host, port)
    res = gate([{'kind': 'mongodb', 'name': 'db', 'uri': uri, 'state': 'PRIMARY'}], success_threshold=1)
    assert res['passed'] is True, res['msg']
    assert res['timeline'][0]['probes'][0]['detail'] == dict(res['timeline'][0]['probes'][0]['detail'], state='PRIMARY', set_name='rs0')
    res = gate([{'kind': 'mongodb', 'name': 'db', 'uri': uri, 'state': 'SECONDARY'}], success_threshold=1, failure_threshold=1)
    assert 'expected member state SECONDARY, got PRIMARY' in res['msg']


def test_mongodb_unreachable_honours_timeout_and_hides_credentials(gate):
    port = free_port()
    uri = 'mongodb://admin:m0ngo-pw@127.0.0.1:%d/admin?directConnection=true' % port
    start = time.monotonic()
    res = gate([{'kind': 'mongodb', 'name': 'db', 'uri': uri}], success_threshold=1, failure_threshold=1, timeout=0.5)
    assert time.monotonic() - start < 2.0
    assert res['passed'] is False
    assert 'ServerSelectionTimeoutError' in res['msg']
    assert "probe 'db' (mongodb mongodb://admin:********@127.0.0.1:%d/admin?directConnection=true)" % port in res['msg']
    assert 'm0ngo-pw' not in repr(res)
