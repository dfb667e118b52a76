# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared MongoDB connection options, client construction and helpers.

The ``community.postgresql`` pattern: this file holds the common argument spec
(matched by the ``nodeops.stack.mongodb`` doc fragment), the import guards for
the third-party libraries, the client factory and the redaction helpers; each
MongoDB module only adds its own options.

Nothing here touches an ``AnsibleModule``: errors are raised as
:class:`MongoBackupError` and turned into ``fail_json`` by the module glue, so
everything can be unit-tested without Ansible.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import re
import threading
import traceback

from concurrent.futures import ThreadPoolExecutor

from urllib.parse import unquote

PYMONGO_IMP_ERR = None
try:
    import pymongo
    from bson.codec_options import CodecOptions
    from pymongo.errors import ConfigurationError, ConnectionFailure, OperationFailure, PyMongoError, ServerSelectionTimeoutError
    HAS_PYMONGO = True
except ImportError:  # pragma: no cover - exercised through missing_required_lib tests with a patched flag
    pymongo = None
    CodecOptions = None
    HAS_PYMONGO = False
    PYMONGO_IMP_ERR = traceback.format_exc()

    class PyMongoError(Exception):
        """Stand-in so that ``except`` clauses work without pymongo (the module fails before using them)."""

    class ConfigurationError(PyMongoError):
        pass

    class ConnectionFailure(PyMongoError):
        pass

    class OperationFailure(PyMongoError):
        pass

    class ServerSelectionTimeoutError(ConnectionFailure):
        pass

ZSTD_IMP_ERR = None
try:
    import zstandard  # pylint: disable=unused-import  # used by mongo_format through this guard
    HAS_ZSTD = True
except ImportError:
    zstandard = None
    HAS_ZSTD = False
    ZSTD_IMP_ERR = traceback.format_exc()

MASK = '********'
READ_PREFERENCES = ('primary', 'primaryPreferred', 'secondary', 'secondaryPreferred', 'nearest')
DEFAULT_PORT = 27017
TOOL_NAME = 'nodeops.stack.mongo_backup'
TOOL_VERSION = '0.1.0'


class MongoBackupError(Exception):
    """An error with an actionable message; ``details`` are returned next to ``msg``."""

    def __init__(self, msg, **details):
        super(MongoBackupError, self).__init__(msg)
        self.msg = msg
        self.details = details


def mongodb_common_argument_spec():
    """Connection options shared by the MongoDB modules (see the ``nodeops.stack.mongodb`` doc fragment)."""
    return dict(
        uri=dict(type='str'),
        host=dict(type='str'),
        port=dict(type='int'),
        username=dict(type='str', aliases=['login_user']),
        password=dict(type='str', no_log=True, aliases=['login_password']),
        auth_source=dict(type='str'),
        tls=dict(type='bool'),
        tls_ca_file=dict(type='path'),
        tls_certificate_key_file=dict(type='path'),
        connect_timeout=dict(type='float', default=10.0),
        read_preference=dict(type='str', choices=list(READ_PREFERENCES)),
    )


MUTUALLY_EXCLUSIVE = [('uri', 'host'), ('uri', 'port')]


# --------------------------------------------------------------------------- redaction

_USERINFO_RE = re.compile(r'^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@', re.S)


def uri_secrets(uri):
    """The password of a ``scheme://user:password@hosts/...`` URI, raw and percent-decoded."""
    secrets = set()
    if not isinstance(uri, str):
        return secrets
    match = _USERINFO_RE.match(uri)
    if match:
        userinfo = match.group('userinfo')
        # multi-host URIs: the userinfo ends at the last '@' before the path
        if ':' in userinfo:
            password = userinfo.split(':', 1)[1]
            if password:
                secrets.update({password, unquote(password)})
    return secrets


def redact_uri(uri):
    """``mongodb://user:secret@h1,h2/db`` -> ``mongodb://user:********@h1,h2/db``."""
    if not isinstance(uri, str):
        return uri
    match = _USERINFO_RE.match(uri)
    if not match:
        return uri
    userinfo = match.group('userinfo')
    if ':' in userinfo:
        userinfo = userinfo.split(':', 1)[0] + ':' + MASK
    return match.group('scheme') + userinfo + '@' + uri[match.end():]


def scrub(text, secrets):
    """``text`` with every secret (longest first) replaced by the mask, and URI userinfo passwords masked."""
    if text is None:
        return text
    text = str(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return re.sub(r'([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@', r'\1:' + MASK + '@', text)


def connection_secrets(params):
    """Every secret the connection options carry (for no_log_values and message scrubbing)."""
    secrets = set(uri_secrets(params.get('uri')))
    if params.get('password'):
        secrets.add(params['password'])
    return secrets


# --------------------------------------------------------------------------- client

def require_pymongo():
    """Raise MongoBackupError(missing_lib='pymongo') when pymongo cannot be imported."""
    if not HAS_PYMONGO:
        raise MongoBackupError('pymongo is required', missing_lib='pymongo', exception=PYMONGO_IMP_ERR)


def require_zstd():
    """Raise MongoBackupError(missing_lib='zstandard') when zstandard cannot be imported."""
    if not HAS_ZSTD:
        raise MongoBackupError('zstandard is required for compression=zstd', missing_lib='zstandard', exception=ZSTD_IMP_ERR)


def describe_target(params):
    """Human readable, password-free description of the server the options point at."""
    if params.get('uri'):
        return redact_uri(params['uri'])
    host = params.get('host') or 'localhost'
    if ':' in host and not host.startswith('['):
        host = '[%s]' % host
    return '%s:%d' % (host, params.get('port') or DEFAULT_PORT)


def validate_connection_params(params):
    """Checks that need no server; raises MongoBackupError naming the parameter."""
    uri = params.get('uri')
    if uri is not None:
        if not re.match(r'^mongodb(\+srv)?://', uri):
            raise MongoBackupError("uri: expected a connection string starting with mongodb:// or mongodb+srv://, got '%s'"
                                   % redact_uri(uri)[:200])
    port = params.get('port')
    if port is not None and not 0 < port < 65536:
        raise MongoBackupError('port: expected 1-65535, got %d' % port)
    timeout = params.get('connect_timeout')
    if timeout is None or not 0 < timeout <= 3600:
        raise MongoBackupError('connect_timeout: expected a number of seconds greater than 0 (at most 3600), got %s' % timeout)
    if params.get('username') is None and params.get('password') is not None:
        raise MongoBackupError('password is set but username is not: give both (or put both in uri)')


def client_kwargs(params, appname=TOOL_NAME):
    """``(uri, kwargs)`` for pymongo.MongoClient from the connection options."""
    timeout_ms = max(1, int(params['connect_timeout'] * 1000))
    # DATETIME_AUTO: dates outside Python's datetime range (allowed by BSON) decode instead of raising
    kwargs = dict(serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, appname=appname, datetime_conversion='DATETIME_AUTO')
    uri = params.get('uri')
    if not uri:
        host = params.get('host') or 'localhost'
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        uri = 'mongodb://%s:%d/' % (host, params.get('port') or DEFAULT_PORT)
    for option, key in (('username', 'username'), ('password', 'password'), ('auth_source', 'authSource'),
                        ('tls', 'tls'), ('tls_ca_file', 'tlsCAFile'), ('tls_certificate_key_file', 'tlsCertificateKeyFile'),
                        ('read_preference', 'readPreference')):
        if params.get(option) is not None:
            kwargs[key] = params[option]
    return uri, kwargs


def connect(params, appname=TOOL_NAME, **extra):
    """A connected MongoClient (``ping`` answered), or MongoBackupError within ``connect_timeout``.

    Error messages never carry the password: the URI is redacted and every known
    secret is scrubbed from driver messages.
    """
    require_pymongo()
    validate_connection_params(params)
    uri, kwargs = client_kwargs(params, appname)
    kwargs.update(extra)
    secrets = connection_secrets(params)
    target = describe_target(params)
    try:
        client = pymongo.MongoClient(uri, **kwargs)
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise MongoBackupError('invalid MongoDB connection settings for %s: %s' % (target, scrub(exc, secrets)))
    try:
        client.admin.command('ping')
    except ServerSelectionTimeoutError as exc:
        client.close()
        raise MongoBackupError('cannot reach MongoDB at %s within %gs (connect_timeout): %s'
                               % (target, params['connect_timeout'], scrub(_short(exc), secrets)))
    except OperationFailure as exc:
        client.close()
        if exc.code == 18 or 'auth' in str(exc).lower():
            raise MongoBackupError('authentication to MongoDB at %s failed for user %s: %s'
                                   % (target, _username(params) or '(none)', scrub(_short(exc), secrets)))
        raise MongoBackupError('MongoDB at %s refused ping: %s' % (target, scrub(_short(exc), secrets)))
    except PyMongoError as exc:
        client.close()
        raise MongoBackupError('cannot talk to MongoDB at %s: %s' % (target, scrub(_short(exc), secrets)))
    return client


def _username(params):
    if params.get('username'):
        return params['username']
    match = _USERINFO_RE.match(params.get('uri') or '')
    if match:
        return unquote(match.group('userinfo').split(':', 1)[0])
    return None


def _short(exc, limit=400):
    text = str(exc)
    # ServerSelectionTimeoutError appends a long topology description; keep the first part
    text = text.split(', Timeout:', 1)[0].split(' (configured timeouts:', 1)[0]
    return text[:limit]


def raw_codec_options():
    """CodecOptions returning RawBSONDocument: documents stay the exact bytes the server sent."""
    from bson.codec_options import DatetimeConversion  # pylint: disable=import-outside-toplevel
    from bson.raw_bson import RawBSONDocument  # pylint: disable=import-outside-toplevel
    return CodecOptions(document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_AUTO)


def server_info(client):
    """Version, topology and set name of the connected server."""
    info = {}
    try:
        build = client.admin.command('buildInfo')
        info['version'] = build.get('version')
    except PyMongoError:
        info['version'] = None
    hello = client.admin.command('hello')
    if hello.get('msg') == 'isdbgrid':
        info['topology'] = 'sharded'
    elif hello.get('setName'):
        info['topology'] = 'replicaset'
        info['set_name'] = hello.get('setName')
    else:
        info['topology'] = 'standalone'
    info['primary'] = bool(hello.get('isWritablePrimary') or hello.get('ismaster'))
    return info


def error_text(exc, secrets=()):
    """A short, secret-free description of a driver exception (saying so plainly when the connection was lost)."""
    text = '%s: %s' % (type(exc).__name__, _short(exc))
    if isinstance(exc, ConnectionFailure):
        # AutoReconnect (server gone), NetworkTimeout, and _OperationCancelled ("operation cancelled": pymongo aborts a
        # read in flight when the server stops answering its heartbeat) say little to an operator on their own.
        text = 'lost the connection to the server, which closed it or stopped answering (%s)' % text
    return scrub(text, secrets)


class Cancelled(Exception):
    """A parallel task stopped because another one failed first."""


def run_cancellable(items, work, parallel, on_error, handled):
    """Run ``work(item, stop)`` for every item, at most ``parallel`` at a time.

    The first failure sets ``stop``: items not started yet are skipped, running
    ones check ``stop`` between batches and raise Cancelled. Exceptions of the
    ``handled`` types become ``on_error(item, exc)`` strings; others propagate.
    Returns (results by item index, errors).
    """
    stop = threading.Event()
    results, errors = {}, []

    def guarded(item):
        if stop.is_set():
            raise Cancelled()
        try:
            return work(item, stop)
        except Cancelled:
            raise
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [(index, pool.submit(guarded, item)) for index, item in enumerate(items)]
        for index, future in futures:
            try:
                results[index] = future.result()
            except Cancelled:
                continue
            except handled as exc:
                errors.append(on_error(items[index], exc))
    return results, errors
