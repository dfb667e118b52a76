"""Selection filters, namespace renaming, connection options and redaction."""

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    MongoBackupError, client_kwargs, connection_secrets, describe_target, redact_uri, scrub, uri_secrets, validate_connection_params,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_select import NamespaceMapper, Selection, check_target_ns


def wanted(selection, namespaces):
    return sorted(ns for ns in namespaces if selection.wanted(*ns.split('.', 1)))


ALL = ['shop.orders', 'shop.orders_2024', 'shop.sessions', 'shop.system.views', 'shop.system.js', 'shop.system.profile',
       'crm.users', 'crm.sessions', 'admin.users', 'config.settings', 'local.startup_log', 'local.oplog.rs', 'app.a.b']


@pytest.mark.parametrize('kwargs,expected', [
    ({}, ['app.a.b', 'crm.sessions', 'crm.users', 'shop.orders', 'shop.orders_2024', 'shop.sessions', 'shop.system.js']),
    ({'databases': ['shop']}, ['shop.orders', 'shop.orders_2024', 'shop.sessions', 'shop.system.js']),
    ({'databases': ['s*', 'c?m']}, ['crm.sessions', 'crm.users', 'shop.orders', 'shop.orders_2024', 'shop.sessions', 'shop.system.js']),
    ({'exclude_databases': ['shop', 'app']}, ['crm.sessions', 'crm.users']),
    ({'namespaces': ['shop.orders*']}, ['shop.orders', 'shop.orders_2024']),
    ({'namespaces': ['*.sessions']}, ['crm.sessions', 'shop.sessions']),
    ({'exclude_namespaces': ['*.sessions', 'shop.orders_*']}, ['app.a.b', 'crm.users', 'shop.orders', 'shop.system.js']),
    ({'databases': ['shop'], 'namespaces': ['*.sessions']}, ['shop.sessions']),
    ({'include_internal': True}, ['admin.users', 'app.a.b', 'config.settings', 'crm.sessions', 'crm.users', 'shop.orders',
                                  'shop.orders_2024', 'shop.sessions', 'shop.system.js']),
    ({'databases': ['admin']}, ['admin.users']),
    ({'databases': ['local']}, ['local.startup_log']),
    ({'namespaces': ['app.a.*']}, ['app.a.b']),
    ({'namespaces': ['a*.b']}, ['app.a.b']),
])
def test_selection(kwargs, expected):
    assert wanted(Selection(**kwargs), ALL) == expected


@pytest.mark.parametrize('kwargs,message', [
    ({'namespaces': ['shop']}, "namespaces[0]: 'shop' is not a namespace pattern"),
    ({'namespaces': ['shop.']}, "namespaces[0]: 'shop.' is not a namespace pattern"),
    ({'namespaces': [' shop.x']}, "namespaces[0]: ' shop.x' is not a valid pattern"),
    ({'namespaces': ['sh$p.x']}, "contains a character MongoDB does not allow"),
    ({'exclude_namespaces': ['a.[b']}, "exclude_namespaces[0]: 'a.[b' has an unbalanced [ ] wildcard"),
    ({'databases': ['a/b']}, "databases[0]: 'a/b' is not a database name pattern"),
    ({'exclude_databases': ['']}, "exclude_databases[0]: '' is not a valid pattern"),
])
def test_bad_patterns(kwargs, message):
    with pytest.raises(MongoBackupError) as info:
        Selection(**kwargs)
    assert message in info.value.msg


def test_namespace_mapper():
    mapper = NamespaceMapper(['shop.*', 'crm.users', 'a*.b*'], ['shop_restoretest.*', 'crm2.people', 'x*.y*'])
    assert mapper.map('shop.orders') == 'shop_restoretest.orders'
    assert mapper.map('shop.a.b') == 'shop_restoretest.a.b'
    assert mapper.map('crm.users') == 'crm2.people'
    assert mapper.map('crm.other') == 'crm.other'
    assert mapper.map('app.bar') == 'xpp.yar'
    assert mapper.describe()[0] == {'from': 'shop.*', 'to': 'shop_restoretest.*'}
    with pytest.raises(MongoBackupError) as info:
        NamespaceMapper(['shop.*'], ['x.y'])
    assert "'shop.*' has 1 '*' but 'x.y' has 0" in info.value.msg
    with pytest.raises(MongoBackupError) as info:
        NamespaceMapper(['shop.?'], ['x.?'])
    assert "only '*' wildcards" in info.value.msg
    with pytest.raises(MongoBackupError) as info:
        check_target_ns('bad db.x', 'shop.x')
    assert "ns_to: shop.x maps to 'bad db.x', which is not a valid namespace" in info.value.msg


@pytest.mark.parametrize('uri,redacted,secrets', [
    ('mongodb://u:p%40ss@h:1/db?authSource=admin', 'mongodb://u:********@h:1/db?authSource=admin', {'p%40ss', 'p@ss'}),
    ('mongodb://u:pw@h1:1,h2:2/?replicaSet=rs', 'mongodb://u:********@h1:1,h2:2/?replicaSet=rs', {'pw'}),
    ('mongodb+srv://u:pw@cluster.example/', 'mongodb+srv://u:********@cluster.example/', {'pw'}),
    ('mongodb://onlyuser@h/', 'mongodb://onlyuser@h/', set()),
    ('mongodb://h:27017/', 'mongodb://h:27017/', set()),
])
def test_uri_redaction(uri, redacted, secrets):
    assert redact_uri(uri) == redacted
    assert uri_secrets(uri) == secrets
    assert 'pw' not in scrub('failed for %s' % uri, uri_secrets(uri)).replace('pw@', '') or not secrets


def test_scrub_masks_secrets_and_any_userinfo_password():
    assert scrub('auth failed: bad pw S3cret for mongodb://x:other@h', {'S3cret'}) == 'auth failed: bad pw ******** for mongodb://x:********@h'


def test_client_kwargs_from_options():
    uri, kwargs = client_kwargs({'host': '::1', 'port': 27018, 'username': 'u', 'password': 'p', 'auth_source': 'admin', 'tls': True,
                                 'tls_ca_file': '/ca.pem', 'connect_timeout': 2.5, 'read_preference': 'secondaryPreferred'})
    assert uri == 'mongodb://[::1]:27018/'
    assert kwargs['serverSelectionTimeoutMS'] == kwargs['connectTimeoutMS'] == 2500
    assert (kwargs['username'], kwargs['password'], kwargs['authSource'], kwargs['tls'], kwargs['tlsCAFile'], kwargs['readPreference']) == (
        'u', 'p', 'admin', True, '/ca.pem', 'secondaryPreferred')
    uri, kwargs = client_kwargs({'uri': 'mongodb://a/', 'connect_timeout': 10})
    assert uri == 'mongodb://a/' and 'username' not in kwargs
    assert describe_target({'uri': 'mongodb://u:p@a/'}) == 'mongodb://u:********@a/'
    assert describe_target({}) == 'localhost:27017'
    assert connection_secrets({'uri': 'mongodb://u:p1@a/', 'password': 'p2'}) == {'p1', 'p2'}


@pytest.mark.parametrize('params,message', [
    ({'uri': 'postgres://a', 'connect_timeout': 1}, 'uri: expected a connection string starting with mongodb://'),
    ({'port': 0, 'connect_timeout': 1}, 'port: expected 1-65535, got 0'),
    ({'connect_timeout': -1}, 'connect_timeout: expected a number of seconds greater than 0'),
    ({'password': 'x', 'connect_timeout': 1}, 'password is set but username is not'),
])
def test_connection_validation(params, message):
    with pytest.raises(MongoBackupError) as info:
        validate_connection_params(params)
    assert message in info.value.msg


def test_error_text_says_when_the_connection_was_lost():
    from pymongo.errors import AutoReconnect, OperationFailure, _OperationCancelled  # pylint: disable=import-outside-toplevel
    from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import error_text  # pylint: disable=import-outside-toplevel
    assert error_text(_OperationCancelled('operation cancelled')) == (
        'lost the connection to the server, which closed it or stopped answering (_OperationCancelled: operation cancelled)')
    assert error_text(AutoReconnect('h:1: [Errno 104] Connection reset by peer mongodb://u:pw@h')) == (
        'lost the connection to the server, which closed it or stopped answering '
        '(AutoReconnect: h:1: [Errno 104] Connection reset by peer mongodb://u:********@h)')
    assert error_text(OperationFailure('not authorized', 13)) == 'OperationFailure: not authorized'
