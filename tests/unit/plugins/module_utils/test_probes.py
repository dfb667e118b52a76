"""probes.py: construction, defaults, expectation evaluation and helpers (network runs are in tests/integration)."""

import json

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils import probes as P


def build_one(spec):
    return P.build_probes([spec])[0]


def test_default_names_and_descriptions():
    built = P.build_probes([
        {'kind': 'http', 'url': 'http://127.0.0.1:8080/health'},
        {'kind': 'tcp', 'host': '127.0.0.1', 'port': 22},
        {'kind': 'tls', 'host': '127.0.0.1', 'server_name': 'api.test'},
        {'kind': 'redis'},
        {'kind': 'mongodb', 'uri': 'mongodb://u:p@127.0.0.1/'},
        {'kind': 'pm2', 'app': 'api'},
    ])
    assert [p.name for p in built] == ['http[0]', 'tcp[1]', 'tls[2]', 'redis[3]', 'mongodb[4]', 'pm2[5]']
    assert [p.describe() for p in built] == [
        'http GET http://127.0.0.1:8080/health', 'tcp 127.0.0.1:22', 'tls 127.0.0.1:443 (SNI api.test)',
        'redis 127.0.0.1:6379/0', 'mongodb mongodb://u:********@127.0.0.1/', "pm2 app 'api'"]


def test_http_defaults_and_basic_auth_from_userinfo():
    probe = build_one({'kind': 'https', 'url': 'https://bob:p%40ss@127.0.0.1/x?a=1', 'validate_certs': False})
    assert probe.method == 'GET' and probe.status_codes == [200]
    assert probe.port == 443 and probe.target == '/x?a=1'
    assert probe.headers['Authorization'] == 'Basic Ym9iOnBAc3M='  # bob:p@ss
    assert {'p%40ss', 'p@ss', 'Basic Ym9iOnBAc3M=', 'Ym9iOnBAc3M='} <= probe.secrets
    assert probe._host_header() == '127.0.0.1'


def test_explicit_authorization_header_wins_over_userinfo():
    probe = build_one({'kind': 'http', 'url': 'http://bob:pw@127.0.0.1:81/', 'headers': {'authorization': 'Bearer t'}})
    assert probe.headers == {'authorization': 'Bearer t'}
    assert probe._host_header() == '127.0.0.1:81'


@pytest.mark.parametrize('status,body,expected', [
    (200, b'{"status": "ok"}', []),
    (503, b'{"status": "ok"}', ['expected status in [200, 204], got 503']),
    (200, b'{"status": "down"}', ['json path \'status\': expected "ok", got "down"']),
    (200, b'not json', ['expected body to match \'"status"\' (body_regex), no match',
                        'expected a JSON body, got invalid JSON (Expecting value: line 1 column 1 (char 0))']),
])
def test_http_evaluate(status, body, expected):
    probe = build_one({'kind': 'http', 'url': 'http://127.0.0.1/', 'status_codes': [200, 204], 'body_regex': '"status"',
                       'json': [{'path': 'status', 'equals': 'ok'}]})
    assert probe.evaluate(status, body) == expected


def test_truncated_body_is_explained():
    probe = build_one({'kind': 'http', 'url': 'http://127.0.0.1/', 'json': [{'path': 'a', 'exists': True}]})
    assert probe.evaluate(200, b'{"a": "' + b'x' * 100, truncated=True) == [
        'expected a JSON body, got invalid JSON (body was truncated at %d bytes)' % P.MAX_BODY_BYTES]


def test_excerpt_bounded():
    assert P.excerpt_of(b'abc') == 'abc'
    assert P.excerpt_of(b'x' * 600) == 'x' * 512 + '...[600 bytes total]'
    assert P.excerpt_of(None) is None


@pytest.mark.parametrize('hello,state', [
    ({'isWritablePrimary': True}, 'STANDALONE'),
    ({'isWritablePrimary': True, 'setName': 'rs0'}, 'PRIMARY'),
    ({'ismaster': True, 'setName': 'rs0'}, 'PRIMARY'),
    ({'isWritablePrimary': False, 'secondary': True, 'setName': 'rs0'}, 'SECONDARY'),
    ({'isWritablePrimary': False, 'arbiterOnly': True, 'setName': 'rs0'}, 'ARBITER'),
    ({'isWritablePrimary': False, 'setName': 'rs0'}, 'OTHER'),
])
def test_mongodb_state(hello, state):
    assert P.mongodb_state(hello) == state


def test_probe_secrets_collects_everything_sensitive():
    specs = [
        {'kind': 'http', 'url': 'http://u:pw1@h/?token=t1', 'headers': {'Cookie': 'sid=1', 'Accept': 'text/plain'}},
        {'kind': 'redis', 'password': 'pw2', 'url': None},
        {'kind': 'mongodb', 'uri': 'mongodb://a:pw3@h/'},
        'not a dict',
    ]
    assert P.probe_secrets(specs) == {'pw1', 't1', 'sid=1', 'pw2', 'pw3'}


def test_run_wrapper_turns_exceptions_into_failed_results_and_redacts():
    class Boom(P.Probe):
        def _run(self, timeout):
            raise RuntimeError('cannot reach http://u:hunter2@h/ with tok-1')

    probe = Boom({'kind': 'http', 'name': 'b'}, 0)
    probe.secrets = {'tok-1'}
    result = probe.run(1)
    assert result.ok is False
    assert result.error == 'RuntimeError: cannot reach http://u:********@h/ with ********'
    assert result.latency_ms >= 0


def test_pm2_probe_with_fake_cli_compares_against_first_observation():
    observations = [
        [{'name': 'api', 'pm_id': 0, 'pid': 10, 'status': 'online', 'restarts': 4}],
        [{'name': 'api', 'pm_id': 0, 'pid': 10, 'status': 'online', 'restarts': 4}],
        [{'name': 'api', 'pm_id': 0, 'pid': 11, 'status': 'online', 'restarts': 4}],
        [{'name': 'api', 'pm_id': 0, 'pid': 12, 'status': 'online', 'restarts': 5}],
    ]

    class FakeCli:
        def __init__(self, binary=None, pm2_home=None, run_command=None, timeout=None):
            assert run_command is not None and timeout == 5
            self.pm2_home = pm2_home

        def daemon_pid(self):
            return 1

        def jlist(self):
            procs = observations.pop(0)
            for proc in procs:
                proc.update(uptime_s=1.0, memory=1, cpu=0)
            return procs

    probe = P.Pm2Probe({'kind': 'pm2', 'app': 'api', 'pm2_home': '/h', 'instances': 1}, 0,
                       run_command=lambda *a, **k: (0, '', ''), cli_factory=FakeCli)
    assert probe.run(5).ok  # restarts=4 before the gate started: fine, it is the baseline
    assert probe.run(5).ok
    third = probe.run(5)
    assert third.error == 'expected no restart during the gate, pm_id 0 pid changed from 10 to 11'
    fourth = probe.run(5)
    assert fourth.error == 'expected no restart during the gate, pm_id 0 restarts rose from 4 to 5'
    assert json.dumps(fourth.detail)  # serialisable


def test_missing_library_reported(monkeypatch):
    monkeypatch.setitem(P._LIBS, 'redis', (None, 'Traceback: No module named redis'))
    probes = P.build_probes([{'kind': 'redis', 'name': 'cache'}, {'kind': 'tcp', 'host': 'h', 'port': 1}])
    assert P.missing_libraries(probes) == [('redis', 'Traceback: No module named redis')]
