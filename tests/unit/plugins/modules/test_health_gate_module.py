"""health_gate main(): bad input gives a clear fail_json message (never a traceback); results go through exit/fail."""

import socket

import pytest

from ansible.module_utils import basic

from ansible_collections.nodeops.stack.plugins.modules import health_gate

from module_harness import AnsibleExitJson, patch_module_args, run_main as run_module_main


def run_main(args):
    return run_module_main(health_gate, args)


def fail_msg(args):
    failed, result = run_main(args)
    assert failed, result
    assert 'exception' not in result and 'Traceback' not in result['msg']
    return result['msg']


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


HTTP = {'kind': 'http', 'url': 'http://127.0.0.1:9/health'}

# (id, module args, fragments that must all be in the message)
BAD_INPUT = [
    ('unknown-kind', {'probes': [{'kind': 'ftp', 'host': 'x'}]},
     ['kind', 'must be one of', 'http, https, tcp, tls, redis, mongodb, pm2', 'got: ftp']),
    ('missing-probes', {}, ['missing required arguments: probes']),
    ('empty-probes', {'probes': []}, ['probes: expected a non-empty list of probe definitions, got []']),
    ('missing-url', {'probes': [{'kind': 'http', 'name': 'api'}]},
     ["probes[0].url (probe 'api', kind http): expected a URL (required for kind http), got nothing"]),
    ('bad-scheme', {'probes': [{'kind': 'http', 'url': 'ftp://127.0.0.1/x'}]},
     ['probes[0].url (kind http): expected a URL with scheme http:// or https:// for kind http', "got 'ftp://127.0.0.1/x' (scheme 'ftp')"]),
    ('https-kind-http-url', {'probes': [{'kind': 'https', 'url': 'http://127.0.0.1/x'}]},
     ['probes[0].url (kind https): expected a URL with scheme https:// for kind https', "(scheme 'http')"]),
    ('bad-url-port', {'probes': [{'kind': 'http', 'url': 'http://127.0.0.1:99999/x'}]},
     ['probes[0].url (kind http): expected a URL such as http://127.0.0.1:8080/health', 'out of range']),
    ('negative-interval', {'probes': [HTTP], 'interval': -1}, ['interval: expected a number of seconds > 0, got -1']),
    ('zero-interval', {'probes': [HTTP], 'interval': 0}, ['interval: expected a number of seconds > 0, got 0']),
    ('zero-success-threshold', {'probes': [HTTP], 'success_threshold': 0},
     ['success_threshold: expected an integer >= 1 (consecutive successful attempts required), got 0']),
    ('zero-failure-threshold', {'probes': [HTTP], 'failure_threshold': 0}, ['failure_threshold: expected an integer >= 1']),
    ('negative-timeout', {'probes': [HTTP], 'timeout': -2}, ['timeout: expected a number of seconds > 0, got -2']),
    ('negative-initial-delay', {'probes': [HTTP], 'initial_delay': -1}, ['initial_delay: expected a number of seconds >= 0, got -1']),
    ('impossible-deadline', {'probes': [HTTP], 'deadline': 3, 'interval': 1, 'success_threshold': 5},
     ['deadline: expected more than initial_delay + (success_threshold - 1) * interval = 0 + 4 * 1 = 4s', 'got 3s',
      'this policy can never pass']),
    ('json-path-double-dot', {'probes': [dict(HTTP, json=[{'path': 'a..b', 'equals': 1}])]},
     ["probes[0].json[0] (kind http): path 'a..b' is malformed: empty key at position 2"]),
    ('json-path-bad-index', {'probes': [dict(HTTP, json=[{'path': 'a[x]', 'exists': True}])]},
     ["probes[0].json[0] (kind http): path 'a[x]' is malformed: list index must be an integer, got '[x]'"]),
    ('json-two-operators', {'probes': [dict(HTTP, json=[{'path': 'status', 'equals': 'ok', 'in': ['ok']}])]},
     ['probes[0].json[0] (kind http): needs exactly one of equals, in, exists; got equals, in']),
    ('json-no-operator', {'probes': [dict(HTTP, json=[{'path': 'status'}])]},
     ['probes[0].json[0] (kind http): needs exactly one of equals, in, exists; got none']),
    ('json-missing-path', {'probes': [dict(HTTP, json=[{'equals': 1}])]}, ['missing required arguments: path', 'probes', 'json']),
    ('bad-regex', {'probes': [dict(HTTP, body_regex='(unclosed')]},
     ["probes[0].body_regex (kind http): expected a valid Python regular expression, got '(unclosed' (missing ), unterminated subpattern"]),
    ('bad-status-code', {'probes': [dict(HTTP, status_codes=[200, 700])]},
     ['probes[0].status_codes (kind http): expected HTTP status codes 100-599, got 700']),
    ('empty-status-codes', {'probes': [dict(HTTP, status_codes=[])]}, ['probes[0].status_codes (kind http): expected at least one status code, got []']),
    ('ca-path-missing', {'probes': [{'kind': 'https', 'url': 'https://127.0.0.1/', 'ca_path': '/nonexistent/ca.pem'}]},
     ["probes[0].ca_path (kind https): expected an existing CA file or directory, got '/nonexistent/ca.pem' (no such file or directory)"]),
    ('ca-path-not-pem', {'probes': [{'kind': 'tls', 'host': '127.0.0.1', 'ca_path': __file__}]},
     ['probes[0].ca_path (kind tls): expected readable PEM certificate file(s)']),
    ('tls-option-on-plain-http', {'probes': [dict(HTTP, validate_certs=False)]},
     ["probes[0].validate_certs (kind http): expected TLS options only with an https:// url"]),
    ('min-protocol-sslv3', {'probes': [{'kind': 'tls', 'host': '127.0.0.1', 'min_protocol': 'SSLv3'}]},
     ['min_protocol', 'must be one of: TLSv1.2, TLSv1.3', 'got: SSLv3']),
    ('tcp-port-range', {'probes': [{'kind': 'tcp', 'host': '127.0.0.1', 'port': 70000}]},
     ['probes[0].port (kind tcp): expected a TCP port 1-65535, got 70000']),
    ('tcp-port-zero', {'probes': [{'kind': 'tcp', 'host': '127.0.0.1', 'port': 0}]},
     ['probes[0].port (kind tcp): expected a TCP port 1-65535, got 0']),
    ('tcp-missing-host', {'probes': [{'kind': 'tcp', 'port': 22}]},
     ['probes[0].host (kind tcp): expected a host name or address (required for kind tcp), got nothing']),
    ('tcp-port-not-int', {'probes': [{'kind': 'tcp', 'host': '127.0.0.1', 'port': 'ssh'}]}, ['port', 'int']),
    ('banner-bytes-zero', {'probes': [{'kind': 'tcp', 'host': '127.0.0.1', 'port': 22, 'banner_regex': 'x', 'banner_bytes': 0}]},
     ['probes[0].banner_bytes (kind tcp): expected a byte count 1-65536, got 0']),
    ('redis-role-invalid', {'probes': [{'kind': 'redis', 'role': 'leader'}]},
     ['role', 'must be one of: master, slave, replica', 'got: leader']),
    ('redis-url-and-host', {'probes': [{'kind': 'redis', 'url': 'redis://127.0.0.1:6379', 'host': '127.0.0.1'}]},
     ['probes[0].url (kind redis): expected either url or host/port, got both url and host']),
    ('redis-negative-db', {'probes': [{'kind': 'redis', 'db': -1}]}, ['probes[0].db (kind redis): expected a database number >= 0, got -1']),
    ('mongodb-state-invalid', {'probes': [{'kind': 'mongodb', 'uri': 'mongodb://127.0.0.1/', 'state': 'LEADER'}]},
     ['state', 'must be one of: PRIMARY, SECONDARY, ARBITER, STANDALONE, OTHER', 'got: LEADER']),
    ('mongodb-bad-uri', {'probes': [{'kind': 'mongodb', 'uri': 'http://127.0.0.1:27017/'}]},
     ['probes[0].uri (kind mongodb): expected a URL with scheme mongodb:// or mongodb+srv:// for kind mongodb']),
    ('mongodb-missing-uri', {'probes': [{'kind': 'mongodb'}]},
     ['probes[0].uri (kind mongodb): expected a MongoDB connection string (required for kind mongodb), got nothing']),
    ('pm2-instances-zero', {'probes': [{'kind': 'pm2', 'app': 'api', 'instances': 0}]},
     ['probes[0].instances (kind pm2): expected an instance count >= 1, got 0']),
    ('pm2-missing-app', {'probes': [{'kind': 'pm2'}]}, ['probes[0].app (kind pm2): expected a PM2 app name (required for kind pm2), got nothing']),
    ('percentile-zero', {'probes': [HTTP], 'latency_percentile': {'percentile': 0, 'max_ms': 300}},
     ['latency_percentile.percentile: expected a percentile in (0, 100], such as 95, got 0']),
    ('percentile-101', {'probes': [HTTP], 'latency_percentile': {'percentile': 101, 'max_ms': 300}},
     ['latency_percentile.percentile: expected a percentile in (0, 100], such as 95, got 101']),
    ('percentile-missing-max', {'probes': [HTTP], 'latency_percentile': {'percentile': 95}},
     ['missing required arguments: max_ms', 'latency_percentile']),
    ('wrong-kind-option', {'probes': [{'kind': 'tcp', 'host': '127.0.0.1', 'port': 22, 'url': 'http://x/'}]},
     ['probes[0].url (kind tcp): expected only options of kind tcp (banner_bytes, banner_regex, host, port)',
      "got 'url', which applies to kind http/https/redis"]),
    ('wrong-kind-option-2', {'probes': [{'kind': 'redis', 'instances': 2}]},
     ["probes[0].instances (kind redis): expected only options of kind redis", "got 'instances', which applies to kind pm2"]),
    ('duplicate-names', {'probes': [dict(HTTP, name='api'), {'kind': 'tcp', 'host': '127.0.0.1', 'port': 1, 'name': 'api'}]},
     ["probes[1].name: expected unique probe names, got 'api' which probes[0] already uses"]),
    ('negative-max-latency', {'probes': [dict(HTTP, max_latency_ms=-5)]}, ['probes[0].max_latency_ms (kind http): expected a number > 0, got -5']),
    ('negative-min-days', {'probes': [{'kind': 'tls', 'host': '127.0.0.1', 'min_days_left': -1}]},
     ['probes[0].min_days_left (kind tls): expected a number >= 0, got -1']),
    ('client-key-alone', {'probes': [{'kind': 'https', 'url': 'https://127.0.0.1/', 'client_key': __file__}]},
     ['probes[0].client_key (kind https): expected client_cert to be set as well, got client_key alone']),
    ('unknown-probe-option', {'probes': [dict(HTTP, colour='red')]}, ['Unsupported parameters', 'colour']),
    ('method-invalid', {'probes': [dict(HTTP, method='FETCH')]}, ['method', 'must be one of', 'got: FETCH']),
]


@pytest.mark.parametrize('args,fragments', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input(args, fragments):
    msg = fail_msg(args)
    for fragment in fragments:
        assert fragment in msg, msg


def test_bad_input_messages_never_echo_url_password():
    msg = fail_msg({'probes': [{'kind': 'http', 'url': 'ftp://bob:hunter2@127.0.0.1/x'}]})
    assert 'hunter2' not in msg
    assert 'ftp://bob:********@127.0.0.1/x' in msg


def test_secrets_registered_as_no_log_values(monkeypatch):
    seen = {}

    def capture(self, **kwargs):
        seen['no_log_values'] = set(self.no_log_values)
        raise AnsibleExitJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', capture)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', lambda self, msg, **kw: capture(self, msg=msg, **kw))
    args = {'probes': [
        {'kind': 'http', 'url': 'http://bob:hunter2@127.0.0.1:%d/' % free_port(), 'headers': {'Authorization': 'Bearer tok-xyz', 'Accept': 'x'}},
        {'kind': 'redis', 'port': free_port(), 'password': 'redispw'},
        {'kind': 'mongodb', 'uri': 'mongodb://u:mongopw@127.0.0.1:%d/' % free_port()},
    ], 'success_threshold': 1, 'deadline': 0.5, 'timeout': 0.2}
    with patch_module_args(args):
        with pytest.raises(AnsibleExitJson):
            health_gate.main()
    assert {'hunter2', 'Bearer tok-xyz', 'tok-xyz', 'redispw', 'mongopw'} <= seen['no_log_values']
    assert 'x' not in seen['no_log_values']


def test_connection_refused_fails_with_explanation_and_result_fields():
    port = free_port()
    failed, result = run_main({'probes': [{'kind': 'http', 'name': 'api', 'url': 'http://127.0.0.1:%d/health' % port}],
                               'interval': 0.05, 'success_threshold': 1, 'failure_threshold': 2, 'deadline': 5})
    assert failed
    assert result['passed'] is False and result['changed'] is False
    assert result['reason'] == 'failure_threshold'
    assert result['attempts'] == 2
    assert ("probe 'api' (http GET http://127.0.0.1:%d/health): connect failed: connection refused on 2 consecutive attempts" % port) in result['msg']
    assert result['stats']['api']['fail'] == 2
    assert result['timeline'][0]['probes'][0]['error'] == 'connect failed: connection refused'


def test_success_exits_unchanged_even_in_check_mode():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(8)
        port = server.getsockname()[1]
        failed, result = run_main({'probes': [{'kind': 'tcp', 'host': '127.0.0.1', 'port': port}],
                                   'interval': 0.05, 'success_threshold': 2, 'deadline': 5, '_ansible_check_mode': True})
    assert not failed
    assert result['passed'] is True and result['changed'] is False
    assert result['attempts'] == 2
    assert 'health gate passed: 2 consecutive successful attempt(s)' in result['msg']


def test_syslog_invocation_entry_masks_embedded_secrets(monkeypatch):
    logged = []
    monkeypatch.setattr(basic.AnsibleModule, 'log', lambda self, msg, log_args=None: logged.append((msg, log_args)))
    args = {'probes': [{'kind': 'http', 'url': 'http://bob:hunter2@127.0.0.1:%d/' % free_port(),
                        'headers': {'X-Api-Key': 'key-abc-123', 'Authorization': 'Bearer tok-xyz'}}],
            'success_threshold': 1, 'failure_threshold': 1}
    run_main(args)
    assert logged and logged[0][0].startswith('Invoked with')
    text = repr(logged)
    assert 'probes' in text and '127.0.0.1' in text
    for secret in ('hunter2', 'key-abc-123', 'tok-xyz'):
        assert secret not in text


def test_missing_redis_library_uses_missing_required_lib(monkeypatch):
    from ansible_collections.nodeops.stack.plugins.module_utils import probes
    monkeypatch.setitem(probes._LIBS, 'redis', (None, 'Traceback (most recent call last): ImportError: No module named redis'))
    failed, result = run_main({'probes': [{'kind': 'redis', 'name': 'cache'}]})
    assert failed
    assert 'Failed to import the required Python library (redis)' in result['msg']
    assert "(needed by probe 'cache')" in result['msg']
    assert 'No module named redis' in result['exception']
