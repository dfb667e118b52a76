"""JSON path expectations and secret redaction used by the health gate."""

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.health_jsonpath import (
    JsonExpectation, JsonPathError, json_equal, parse_path,
)
from ansible_collections.nodeops.stack.plugins.module_utils.health_redact import (
    MASK, header_secrets, redact_text, redact_url, url_secrets,
)

DOC = {
    'status': 'ok',
    'checks': {'redis': {'status': 'ok', 'latency_ms': 1.5}, 'mongodb': {'status': 'down'}},
    'items': [{'name': 'a', 'ok': True}, {'name': 'b', 'ok': False}],
    'count': 1,
    'flag': True,
    'nothing': None,
    'dotted.key': 'no',
}


@pytest.mark.parametrize('path,tokens', [
    ('status', ['status']),
    ('checks.redis.status', ['checks', 'redis', 'status']),
    ('items[1].name', ['items', 1, 'name']),
    ('items[-1]', ['items', -1]),
    ('[0].ok', [0, 'ok']),
    ('a[0][2].b', ['a', 0, 2, 'b']),
    ('with-dash.x_y', ['with-dash', 'x_y']),
])
def test_parse_path(path, tokens):
    assert parse_path(path) == tokens


@pytest.mark.parametrize('path,fragment', [
    ('a..b', 'empty key at position 2'),
    ('.a', 'empty key at position 0'),
    ('a.', 'path ends with a dot'),
    ('a[x]', "list index must be an integer, got '[x]'"),
    ('a[', "unclosed '['"),
    ('a]', "unexpected ']'"),
    ('a.[0]', "empty key before '['"),
    ('a[0]b', "expected '.' or '['"),
    ('', 'non-empty string'),
    ('a[]', "got '[]'"),
])
def test_malformed_paths(path, fragment):
    with pytest.raises(JsonPathError) as err:
        parse_path(path)
    assert fragment in str(err.value)


@pytest.mark.parametrize('spec', [
    {'path': 'status', 'equals': 'ok'},
    {'path': 'checks.redis.status', 'in': ['ok', 'degraded']},
    {'path': 'checks.redis.latency_ms', 'exists': True},
    {'path': 'checks.nope', 'exists': False},
    {'path': 'items[0].ok', 'equals': True},
    {'path': 'items[-1].name', 'equals': 'b'},
    {'path': 'count', 'equals': 1},
    {'path': 'nothing', 'exists': True},
    {'path': 'checks.redis', 'equals': {'status': 'ok', 'latency_ms': 1.5}},
])
def test_expectations_that_hold(spec):
    assert JsonExpectation.from_spec(spec).check(DOC) is None


@pytest.mark.parametrize('spec,message', [
    ({'path': 'checks.mongodb.status', 'equals': 'ok'}, 'json path \'checks.mongodb.status\': expected "ok", got "down"'),
    ({'path': 'checks.mongodb.status', 'in': ['ok', 'degraded']}, 'expected one of ["ok", "degraded"], got "down"'),
    ({'path': 'checks.redis.nope', 'exists': True}, "expected to exist, but checks.redis has no key 'nope'"),
    ({'path': 'status', 'exists': False}, 'expected not to exist, got "ok"'),
    ({'path': 'items[5].name', 'equals': 'x'}, 'items has 2 element(s), no index 5'),
    ({'path': 'status.x', 'equals': 1}, 'status is a string, not an object'),
    ({'path': 'checks[0]', 'equals': 1}, 'checks is an object, not a list'),
    ({'path': 'flag', 'equals': 1}, 'expected 1, got true'),
    ({'path': 'count', 'equals': True}, 'expected true, got 1'),
    ({'path': 'count', 'equals': '1'}, 'expected "1", got 1'),
])
def test_expectations_that_fail(spec, message):
    result = JsonExpectation.from_spec(spec).check(DOC)
    assert result is not None and message in result


@pytest.mark.parametrize('spec,fragment', [
    ({'path': 'a', 'equals': 1, 'in': [1]}, 'needs exactly one of equals, in, exists; got equals, in'),
    ({'path': 'a'}, 'needs exactly one of equals, in, exists; got none'),
    ({'path': 'a', 'equals': None, 'in': None, 'exists': None}, 'got none'),
    ({'path': 'a', 'in': 'ok'}, "'in' must be a list"),
    ({'path': 'a..b', 'exists': True}, "path 'a..b' is malformed: empty key at position 2"),
    ({'path': 'a', 'exists': True, 'bogus': 1}, 'unknown key(s) bogus'),
    ('status', 'must be a dict'),
])
def test_bad_expectation_specs(spec, fragment):
    with pytest.raises(ValueError) as err:
        JsonExpectation.from_spec(spec)
    assert fragment in str(err.value)


def test_json_equal_does_not_mix_bool_and_number():
    assert json_equal(True, True)
    assert not json_equal(True, 1)
    assert not json_equal(0, False)
    assert json_equal(1, 1.0)
    assert not json_equal([1, True], [1, 1])


@pytest.mark.parametrize('url,expected', [
    ('https://user:s3cr3t@127.0.0.1:8443/health', 'https://user:%s@127.0.0.1:8443/health' % MASK),
    ('http://127.0.0.1/x?token=abc&a=1', 'http://127.0.0.1/x?token=%s&a=1' % MASK),
    ('http://127.0.0.1/x?api_key=abc', 'http://127.0.0.1/x?api_key=%s' % MASK),
    ('mongodb://admin:p%40ss@h1:27017,h2:27018/admin?replicaSet=rs0',
     'mongodb://admin:%s@h1:27017,h2:27018/admin?replicaSet=rs0' % MASK),
    ('redis://:pw@127.0.0.1:6379/0', 'redis://:%s@127.0.0.1:6379/0' % MASK),
    ('http://user@127.0.0.1/', 'http://user@127.0.0.1/'),
    ('http://127.0.0.1:8080/health', 'http://127.0.0.1:8080/health'),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_url_secrets_include_raw_and_decoded_password():
    assert url_secrets('mongodb://admin:p%40ss@h1/') == {'p%40ss', 'p@ss'}
    assert url_secrets('http://127.0.0.1/?token=abc&x=1') == {'abc'}
    assert url_secrets('http://127.0.0.1/') == set()
    assert url_secrets(None) == set()


def test_headers():
    headers = {'Authorization': 'Bearer tok-123', 'X-Api-Key': 'k1', 'X-Custom-Token': 't2', 'Accept': 'application/json',
               'X-Tenant': 'acme'}
    assert header_secrets(headers) == {'Bearer tok-123', 'tok-123', 'k1', 't2'}
    assert header_secrets(headers, ['x-tenant']) >= {'acme'}


def test_redact_text():
    text = 'failed for http://bob:hunter2@10.0.0.1/ with token tok-123'
    assert redact_text(text, {'tok-123'}) == 'failed for http://bob:%s@10.0.0.1/ with token %s' % (MASK, MASK)
    assert redact_text(None) is None
