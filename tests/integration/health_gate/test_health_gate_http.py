"""health_gate http probes and policy semantics against a real scripted HTTP server on 127.0.0.1."""

import base64
import time

import pytest

from health_gate_support import Reply  # pylint: disable=import-error

HEALTHY = {'status': 'ok', 'checks': {'redis': {'status': 'ok'}, 'mongodb': {'status': 'ok', 'latency_ms': 2}}, 'items': [1, 2]}


def http_probe(server, **extra):
    spec = {'kind': 'http', 'name': 'api', 'url': server.url('/health')}
    spec.update(extra)
    return spec


def test_healthy_json_endpoint_passes_with_expectations_and_fresh_connections(gate, http_server):
    http_server.set_script([Reply(body=HEALTHY)])
    res = gate([http_probe(http_server, body_regex='"status": "ok"', json=[
        {'path': 'checks.redis.status', 'equals': 'ok'},
        {'path': 'checks.mongodb.status', 'in': ['ok', 'degraded']},
        {'path': 'items[1]', 'equals': 2},
        {'path': 'checks.nginx', 'exists': False},
    ])], success_threshold=3)
    assert res['passed'] is True, res['msg']
    assert res['attempts'] == 3
    assert len(http_server.requests) == 3
    # one fresh connection per attempt: three different client ports
    assert len({r['client'][1] for r in http_server.requests}) == 3
    assert all(r['headers'].get('Connection') == 'close' for r in http_server.requests)
    probe = res['timeline'][0]['probes'][0]
    assert probe['status'] == 200 and probe['outcome'] == 'ok'
    assert set(probe['detail']) >= {'connect_ms', 'ttfb_ms', 'total_ms', 'bytes'}
    assert isinstance(probe['latency_ms'], float) and 0 < probe['latency_ms'] < 1000
    stats = res['stats']['api']
    assert stats['count'] == 3 and stats['ok'] == 3
    assert stats['latency_ms']['min'] <= stats['latency_ms']['p50'] <= stats['latency_ms']['max']


def test_5xx_fails_with_expectation_consecutive_count_and_last_body(gate, http_server):
    http_server.set_script([Reply(status=503, body={'status': 'down', 'checks': {'redis': {'status': 'down'}}})])
    res = gate([http_probe(http_server)], success_threshold=2, failure_threshold=3)
    assert res['passed'] is False
    assert res['reason'] == 'failure_threshold'
    assert res['attempts'] == 3
    expected = ("probe 'api' (http GET %s): expected status in [200], got 503 on 3 consecutive attempts; "
                'last response: {"status": "down", "checks": {"redis": {"status": "down"}}}' % http_server.url('/health'))
    assert expected in res['msg']


def test_last_response_excerpt_is_bounded(gate, http_server):
    http_server.set_script([Reply(status=500, body='x' * 5000)])
    res = gate([http_probe(http_server)], success_threshold=1, failure_threshold=1)
    excerpt = res['timeline'][-1]['probes'][0]['excerpt']
    assert excerpt == 'x' * 512 + '...[5000 bytes total]'
    assert 'x' * 513 not in res['msg']


def test_json_expectation_failure_is_explained(gate, http_server):
    http_server.set_script([Reply(body={'status': 'ok', 'checks': {'redis': {'status': 'down'}}})])
    res = gate([http_probe(http_server, json=[{'path': 'checks.redis.status', 'equals': 'ok'},
                                              {'path': 'checks.mongodb.status', 'exists': True}])],
               success_threshold=1, failure_threshold=2)
    assert res['passed'] is False
    assert ('''json path 'checks.redis.status': expected "ok", got "down"; json path 'checks.mongodb.status': '''
            "expected to exist, but checks has no key 'mongodb' on 2 consecutive attempts") in res['msg']


def test_bad_json_fails(gate, http_server):
    http_server.set_script([Reply(body='{"status": "ok", ', content_type='application/json')])
    res = gate([http_probe(http_server, json=[{'path': 'status', 'equals': 'ok'}])], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'expected a JSON body, got invalid JSON' in res['msg']


def test_body_regex_mismatch(gate, http_server):
    http_server.set_script([Reply(body='starting')])
    res = gate([http_probe(http_server, body_regex='^ready$')], success_threshold=1, failure_threshold=1)
    assert "expected body to match '^ready$' (body_regex), no match" in res['msg']
    assert 'last response: starting' in res['msg']


def test_dropped_connection_fails(gate, http_server):
    http_server.set_script([Reply(drop=True)])
    res = gate([http_probe(http_server)], success_threshold=1, failure_threshold=2)
    assert res['passed'] is False
    error = res['timeline'][0]['probes'][0]['error']
    assert error.startswith('error while waiting for the response:'), error
    assert 'RemoteDisconnected' in error or 'reset' in error


def test_slow_response_times_out_within_probe_timeout(gate, http_server):
    http_server.set_script([Reply(delay=1.5)])
    start = time.monotonic()
    res = gate([http_probe(http_server)], success_threshold=1, failure_threshold=1, timeout=0.3)
    assert time.monotonic() - start < 1.2
    assert res['timeline'][0]['probes'][0]['error'] == 'timed out after 0.3s while waiting for the response'
    assert 250 <= res['timeline'][0]['probes'][0]['latency_ms'] < 1000


def test_max_latency_ms_enforced(gate, http_server):
    http_server.set_script([Reply(delay=0.25)])
    res = gate([http_probe(http_server, max_latency_ms=100)], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    error = res['timeline'][0]['probes'][0]['error']
    assert error.startswith('expected latency <= 100 ms (max_latency_ms), got 2'), error


def test_streak_resets_on_failure(gate, http_server):
    ok, bad = Reply(body='ok'), Reply(status=503, body='down')
    http_server.set_script([ok, ok, bad, ok, ok, ok])
    res = gate([http_probe(http_server)], success_threshold=3, interval=0.03)
    assert res['passed'] is True
    assert [a['streak'] for a in res['timeline']] == [1, 2, 0, 1, 2, 3]


def test_flapping_target_never_passes(gate, http_server):
    http_server.set_script([Reply(body='ok'), Reply(status=500, body='boom')], cycle=True)
    res = gate([http_probe(http_server)], success_threshold=3, interval=0.03, deadline=1.0, failure_threshold=None)
    assert res['passed'] is False
    assert res['reason'] == 'deadline'
    assert res['best_streak'] == 1
    assert res['attempts'] >= 10


def test_deadline_honoured_within_one_interval(gate, http_server):
    http_server.set_script([Reply(status=503, delay=0.05)])
    start = time.monotonic()
    res = gate([http_probe(http_server)], success_threshold=1, interval=0.3, deadline=1.2, timeout=1, failure_threshold=None)
    took = time.monotonic() - start
    assert res['reason'] == 'deadline'
    assert took <= 1.2 + 0.1
    assert took >= 1.2 - 0.3 - 0.1
    assert res['attempts'] == 4  # 0, 0.3, 0.6, 0.9


def test_probe_timeout_capped_by_deadline(gate, http_server):
    http_server.set_script([Reply(delay=3)])
    start = time.monotonic()
    res = gate([http_probe(http_server)], success_threshold=1, interval=0.1, deadline=0.6, timeout=5, failure_threshold=None)
    assert time.monotonic() - start < 1.0
    assert res['attempts'] == 1
    assert 'timed out after 0.6s while waiting for the response' in res['msg']


def test_initial_delay_respected(gate, http_server):
    start = time.monotonic()
    res = gate([http_probe(http_server)], success_threshold=1, initial_delay=0.4)
    assert res['passed'] is True
    assert http_server.requests[0]['time'] - start >= 0.4
    assert res['timeline'][0]['offset_s'] >= 0.4


def test_latency_percentile_enforced(gate, http_server):
    fast, slow = Reply(), Reply(delay=0.2)
    http_server.set_script([fast, fast, fast, slow])
    res = gate([http_probe(http_server)], success_threshold=4, interval=0.02,
               latency_percentile={'percentile': 95, 'max_ms': 100})
    assert res['passed'] is False
    assert res['reason'] == 'latency_percentile'
    assert res['latency_percentile']['values']['api'] >= 200
    assert "expected p95 latency <= 100 ms (latency_percentile), got" in res['msg']
    http_server.set_script([fast, fast, fast, slow])
    res = gate([http_probe(http_server)], success_threshold=4, interval=0.02,
               latency_percentile={'percentile': 50, 'max_ms': 100})
    assert res['passed'] is True


def test_request_options_method_headers_body_host_and_basic_auth(gate, http_server):
    http_server.set_script([Reply(status=201, body='created')])
    res = gate([{'kind': 'http', 'name': 'post', 'url': http_server.url('/hook?x=1', userinfo='bob:hunter2'), 'method': 'POST',
                 'body': {'ping': True}, 'headers': {'X-Trace': 'abc'}, 'status_codes': [201, 202], 'server_name': 'api.test'}],
               success_threshold=1)
    assert res['passed'] is True, res['msg']
    req = http_server.requests[0]
    assert req['method'] == 'POST' and req['path'] == '/hook?x=1'
    assert req['body'] == b'{"ping": true}'
    assert req['headers']['Content-Type'] == 'application/json'
    assert req['headers']['X-Trace'] == 'abc'
    assert req['headers']['Host'] == 'api.test:%d' % http_server.port
    assert req['headers']['Authorization'] == 'Basic ' + base64.b64encode(b'bob:hunter2').decode()
    assert 'hunter2' not in repr(res)
    assert res['stats']['post']['target'] == 'http POST %s' % http_server.url('/hook?x=1', userinfo='bob:********')


def test_head_request(gate, http_server):
    res = gate([http_probe(http_server, method='HEAD')], success_threshold=1)
    assert res['passed'] is True, res['msg']
    assert http_server.requests[0]['method'] == 'HEAD'


def test_several_probes_must_all_pass(gate, http_server):
    res = gate([http_probe(http_server), {'kind': 'tcp', 'name': 'closed', 'host': '127.0.0.1', 'port': 1}],
               success_threshold=1, failure_threshold=2)
    assert res['passed'] is False
    assert [p['outcome'] for p in res['timeline'][0]['probes']] == ['ok', 'fail']
    assert "probe 'closed' (tcp 127.0.0.1:1): connect failed: connection refused on 2 consecutive attempts" in res['msg']
    assert "probe 'api'" not in res['msg']


@pytest.mark.parametrize('banner,regex,ok', [(b'SSH-2.0-OpenSSH_9.2\r\n', r'^SSH-2\.0', True), (b'HELLO\r\n', r'^SSH', False)])
def test_tcp_banner(gate, banner, regex, ok):
    import socket
    import threading
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _addr = srv.accept()
            except OSError:
                continue
            conn.sendall(banner)
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        res = gate([{'kind': 'tcp', 'name': 'ssh', 'host': '127.0.0.1', 'port': srv.getsockname()[1], 'banner_regex': regex}],
                   success_threshold=1, failure_threshold=1, timeout=0.5)
    finally:
        stop.set()
        thread.join(2)
        srv.close()
    assert res['passed'] is ok, res['msg']
    if not ok:
        assert "expected banner to match '^SSH' (banner_regex), got 'HELLO\\r\\n'" in res['msg']
