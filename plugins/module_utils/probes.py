# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe definitions and runners for the health_gate module.

``build_probes(specs)`` validates the ``probes`` option (one dict per probe, the
union of all kinds' options, unset ones ``None``) and returns ``Probe``
objects; every validation problem raises ``ProbeConfigError`` with a message
naming the parameter (``probes[1].port``), what was expected and what was given.

``Probe.run(timeout)`` performs one attempt and returns a ``ProbeResult``; it
never raises for target-side problems (refused, timeout, bad status, ...):
those become a failed result whose ``error`` says which expectation failed.

Third-party libraries (redis, pymongo, cryptography) are imported lazily, only
when a probe of that kind exists, so a gate of http probes does not pay for
importing pymongo; ``missing_libraries(probes)`` reports what is absent.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import base64
import http.client
import importlib
import json
import os
import re
import socket
import ssl
import tempfile
import time
import traceback
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

from ansible_collections.nodeops.stack.plugins.module_utils.health_jsonpath import JsonExpectation
from ansible_collections.nodeops.stack.plugins.module_utils.health_redact import (
    DEFAULT_SENSITIVE_HEADERS, header_secrets, redact_text, redact_url, url_secrets,
)
from ansible_collections.nodeops.stack.plugins.module_utils.pm2 import Pm2Cli, Pm2Error

KINDS = ('http', 'https', 'tcp', 'tls', 'redis', 'mongodb', 'pm2')
HTTP_METHODS = ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')
TLS_VERSIONS = ('TLSv1.2', 'TLSv1.3')
REDIS_ROLES = ('master', 'slave', 'replica')
MONGODB_STATES = ('PRIMARY', 'SECONDARY', 'ARBITER', 'STANDALONE', 'OTHER')

COMMON_OPTIONS = ('kind', 'name', 'timeout', 'max_latency_ms')
_HTTP_OPTIONS = ('url', 'method', 'headers', 'body', 'status_codes', 'body_regex', 'json', 'validate_certs',
                 'ca_path', 'server_name', 'client_cert', 'client_key')
KIND_OPTIONS = {
    'http': _HTTP_OPTIONS,
    'https': _HTTP_OPTIONS,
    'tcp': ('host', 'port', 'banner_regex', 'banner_bytes'),
    'tls': ('host', 'port', 'server_name', 'min_days_left', 'min_protocol', 'validate_certs', 'ca_path'),
    'redis': ('host', 'port', 'url', 'username', 'password', 'db', 'tls', 'role', 'validate_certs', 'ca_path'),
    'mongodb': ('uri', 'username', 'password', 'state'),
    'pm2': ('app', 'pm2_home', 'pm2_binary', 'instances'),
}

EXCERPT_BYTES = 512          # bytes of the last response kept for messages
MAX_BODY_BYTES = 1024 * 1024  # bytes read for body_regex / json evaluation
USER_AGENT = 'nodeops.stack.health_gate'


class ProbeConfigError(ValueError):
    """A probe definition is invalid; the message is meant for the user."""


class ProbeFailure(Exception):
    """Raised inside a runner: the probe ran and an expectation failed (or the target did not answer)."""

    def __init__(self, error, status=None, excerpt=None, detail=None):
        super(ProbeFailure, self).__init__(error)
        self.error = error
        self.status = status
        self.excerpt = excerpt
        self.detail = detail or {}


class ProbeResult:
    """Outcome of one probe in one attempt."""

    __slots__ = ('ok', 'latency_ms', 'status', 'detail', 'error', 'excerpt')

    def __init__(self, ok, latency_ms=None, status=None, detail=None, error=None, excerpt=None):
        self.ok = bool(ok)
        self.latency_ms = latency_ms
        self.status = status
        self.detail = detail or {}
        self.error = error
        self.excerpt = excerpt

    def __repr__(self):
        return 'ProbeResult(ok=%r, latency_ms=%r, status=%r, error=%r)' % (self.ok, self.latency_ms, self.status, self.error)


# --------------------------------------------------------------------------- lazy third-party imports

_LIBS = {}


def import_lib(name):
    """Import ``redis``/``pymongo`` lazily; return (module or None, traceback text or None)."""
    if name not in _LIBS:
        try:
            _LIBS[name] = (importlib.import_module(name), None)
        except ImportError:
            _LIBS[name] = (None, traceback.format_exc())
    return _LIBS[name]


def missing_libraries(probes):
    """[(pip name, traceback)] for libraries the given probes need but cannot import."""
    needed = []
    for probe in probes:
        lib = {'redis': 'redis', 'mongodb': 'pymongo'}.get(probe.kind)
        if lib and lib not in [n for n, _tb in needed]:
            mod, tb = import_lib(lib)
            if mod is None:
                needed.append((lib, tb))
    return needed


# --------------------------------------------------------------------------- helpers


def _ms(seconds):
    return round(seconds * 1000.0, 3)


def excerpt_of(data, limit=EXCERPT_BYTES):
    if data is None:
        return None
    if isinstance(data, str):
        data = data.encode('utf-8', 'replace')
    text = data[:limit].decode('utf-8', 'replace')
    if len(data) > limit:
        text += '...[%d bytes total]' % len(data)
    return text


def _remaining(t_end):
    left = t_end - time.perf_counter()
    if left <= 0:
        raise socket.timeout('timed out')
    return left


def _set_timeout(sock, seconds):
    try:
        sock.settimeout(seconds)
    except OSError:  # http.client already closed it after reading the whole body
        pass


def _describe_error(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return 'timed out'
    if isinstance(exc, ssl.SSLCertVerificationError):
        return 'certificate verification failed: %s' % (exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLError):
        return 'TLS error: %s' % (exc.reason or exc)
    if isinstance(exc, ConnectionRefusedError):
        return 'connection refused'
    if isinstance(exc, ConnectionResetError):
        return 'connection reset by peer'
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return '%s: %s' % (type(exc).__name__, exc)


def _tls_version(name):
    return {'TLSv1.2': ssl.TLSVersion.TLSv1_2, 'TLSv1.3': ssl.TLSVersion.TLSv1_3}[name]


def make_ssl_context(validate_certs=True, ca_path=None, client_cert=None, client_key=None, min_protocol=None):
    """Client SSLContext; raises ssl.SSLError/OSError for unreadable CA or client cert files."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    # Python >= 3.13 adds VERIFY_X509_STRICT; drop it so that a node verifies the same way with any
    # Python 3 version (and like curl/OpenSSL defaults).
    ctx.verify_flags &= ~getattr(ssl, 'VERIFY_X509_STRICT', 0)
    if ca_path:
        if os.path.isdir(ca_path):
            ctx.load_verify_locations(capath=ca_path)
        else:
            ctx.load_verify_locations(cafile=ca_path)
    if not validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    if min_protocol:
        ctx.minimum_version = _tls_version(min_protocol)
    return ctx


def der_not_after(der, run_command=None):
    """notAfter of a DER certificate as a POSIX timestamp.

    Used when validate_certs is false (``getpeercert()`` then returns an empty
    dict).  Order: the ``cryptography`` library when importable (pure parse, no
    temp files); else CPython's ``ssl._ssl._test_decode_cert`` on a temporary PEM
    file (same OpenSSL as the handshake, present in every CPython 3 build, but a
    private API); else the ``openssl x509`` command through ``run_command``
    (``AnsibleModule.run_command``) when given.  Raises ValueError when all fail.
    """
    errors = []
    try:
        from cryptography import x509  # pylint: disable=import-outside-toplevel
        cert = x509.load_der_x509_certificate(der)
        try:
            return cert.not_valid_after_utc.timestamp()
        except AttributeError:  # cryptography < 42
            return cert.not_valid_after.replace(tzinfo=timezone.utc).timestamp()
    except Exception as exc:  # pylint: disable=broad-except
        errors.append('cryptography: %s' % exc)
    decode = getattr(getattr(ssl, '_ssl', None), '_test_decode_cert', None)
    if decode is not None:
        fd, path = tempfile.mkstemp(suffix='.pem')
        try:
            with os.fdopen(fd, 'w') as handle:
                handle.write(ssl.DER_cert_to_PEM_cert(der))
            return float(ssl.cert_time_to_seconds(decode(path)['notAfter']))
        except Exception as exc:  # pylint: disable=broad-except
            errors.append('ssl._test_decode_cert: %s' % exc)
        finally:
            os.unlink(path)
    if run_command is not None:
        try:
            rc, out, err = run_command(['openssl', 'x509', '-inform', 'DER', '-noout', '-enddate'], data=der, binary_data=True)
            if rc != 0:
                raise ValueError('rc=%s %s' % (rc, err.strip()))
            return float(ssl.cert_time_to_seconds(out.strip().partition('=')[2]))
        except Exception as exc:  # pylint: disable=broad-except
            errors.append('openssl x509: %s' % exc)
    raise ValueError('cannot read the certificate expiry date (%s)' % '; '.join(errors))


# --------------------------------------------------------------------------- probe base


class Probe:
    """Base class: identity, shared options and the run() wrapper (latency, latency limit, redaction)."""

    kind = None

    def __init__(self, spec, index):
        self.index = index
        self.name = spec.get('name') or '%s[%d]' % (spec['kind'], index)
        self.kind = spec['kind']
        self.timeout = spec.get('timeout')
        self.max_latency_ms = spec.get('max_latency_ms')
        self.secrets = set()

    def describe(self):
        """Short, redacted description: 'http GET https://127.0.0.1/health'."""
        return self.kind

    def label(self):
        return "probe '%s' (%s)" % (self.name, self.describe())

    def reset(self):
        """Forget state from an earlier gate run (pm2 baseline)."""

    def _run(self, timeout):
        raise NotImplementedError  # pragma: no cover

    def run(self, timeout):
        start = time.perf_counter()
        try:
            result = self._run(timeout)
        except ProbeFailure as exc:
            result = ProbeResult(False, status=exc.status, error=exc.error, excerpt=exc.excerpt, detail=exc.detail)
        except Exception as exc:  # pylint: disable=broad-except
            # any other problem while probing is a failed probe, never a crash of the gate
            result = ProbeResult(False, error=_describe_error(exc))
        if result.latency_ms is None:
            result.latency_ms = _ms(time.perf_counter() - start)
        if result.ok and self.max_latency_ms is not None and result.latency_ms > self.max_latency_ms:
            result.ok = False
            result.error = 'expected latency <= %s ms (max_latency_ms), got %.1f ms' % (_fmt_num(self.max_latency_ms), result.latency_ms)
        if result.error:
            result.error = redact_text(result.error, self.secrets)
        if result.excerpt:
            result.excerpt = redact_text(result.excerpt, self.secrets)
        return result


def _fmt_num(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- http / https


class HttpProbe(Probe):

    def __init__(self, spec, index, sensitive_headers):
        super(HttpProbe, self).__init__(spec, index)
        self.url = spec['url']
        parts = urlsplit(self.url)
        self.scheme = parts.scheme.lower()
        self.host = parts.hostname
        self.port = parts.port or (443 if self.scheme == 'https' else 80)
        self.target = (parts.path or '/') + ('?' + parts.query if parts.query else '')
        self.method = spec.get('method') or 'GET'
        self.headers = dict(spec.get('headers') or {})
        if parts.username is not None and not any(k.lower() == 'authorization' for k in self.headers):
            creds = '%s:%s' % (unquote(parts.username), unquote(parts.password or ''))
            self.headers['Authorization'] = 'Basic ' + base64.b64encode(creds.encode('utf-8')).decode('ascii')
        self.body = spec.get('body')
        if isinstance(self.body, (dict, list)):
            self.body = json.dumps(self.body)
            if not any(k.lower() == 'content-type' for k in self.headers):
                self.headers['Content-Type'] = 'application/json'
        if isinstance(self.body, str):
            self.body = self.body.encode('utf-8')
        self.status_codes = list(spec.get('status_codes') or [200])
        self.body_regex = re.compile(spec['body_regex']) if spec.get('body_regex') else None
        self.json = [JsonExpectation.from_spec(e) for e in (spec.get('json') or [])]
        self.server_name = spec.get('server_name')
        self.ssl_context = None
        if self.scheme == 'https':
            self.ssl_context = make_ssl_context(
                validate_certs=spec.get('validate_certs') is not False, ca_path=spec.get('ca_path'),
                client_cert=spec.get('client_cert'), client_key=spec.get('client_key'))
        self.secrets = url_secrets(self.url) | header_secrets(self.headers, sensitive_headers)
        self._display_url = redact_url(self.url)

    def describe(self):
        return '%s %s %s' % (self.kind, self.method, self._display_url)

    def _host_header(self):
        host = self.server_name or self.host
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        default = 443 if self.scheme == 'https' else 80
        return host if self.port == default else '%s:%d' % (host, self.port)

    def _run(self, timeout):
        t_start = time.perf_counter()
        t_end = t_start + timeout
        phases = {}
        phase = 'connect'
        sock = None
        conn = None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            phases['connect_ms'] = _ms(time.perf_counter() - t_start)
            if self.ssl_context is not None:
                phase = 'TLS handshake'
                sock.settimeout(_remaining(t_end))
                t_tls = time.perf_counter()
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server_name or self.host)
                phases['tls_ms'] = _ms(time.perf_counter() - t_tls)
            phase = 'sending the request'
            conn = http.client.HTTPConnection(self.host, self.port, timeout=_remaining(t_end))
            conn.sock = sock  # one fresh connection per attempt, never a pooled one
            conn.putrequest(self.method, self.target, skip_host=True, skip_accept_encoding=True)
            conn.putheader('Host', self._host_header())
            conn.putheader('User-Agent', USER_AGENT)
            conn.putheader('Accept-Encoding', 'identity')
            conn.putheader('Connection', 'close')
            for key, value in self.headers.items():
                conn.putheader(key, str(value))
            if self.body is not None:
                conn.putheader('Content-Length', str(len(self.body)))
            conn.endheaders(self.body)
            phase = 'waiting for the response'
            _set_timeout(sock, _remaining(t_end))
            response = conn.getresponse()
            phases['ttfb_ms'] = _ms(time.perf_counter() - t_start)
            phase = 'reading the body'
            chunks = []
            size = 0
            truncated = False
            if self.method != 'HEAD':
                while not response.isclosed():
                    _set_timeout(sock, _remaining(t_end))
                    chunk = response.read(min(65536, MAX_BODY_BYTES - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= MAX_BODY_BYTES:
                        truncated = True
                        break
            body = b''.join(chunks)
            latency = time.perf_counter() - t_start
            phases['total_ms'] = _ms(latency)
        except Exception as exc:  # pylint: disable=broad-except
            if isinstance(exc, (socket.timeout, TimeoutError)):
                error = 'timed out after %.3gs while %s' % (timeout, phase)
            else:
                error = '%s failed: %s' % (phase, _describe_error(exc)) if phase in ('connect', 'TLS handshake') \
                    else 'error while %s: %s' % (phase, _describe_error(exc))
            raise ProbeFailure(error, detail=phases)
        finally:
            if conn is not None:
                conn.close()
            elif sock is not None:
                sock.close()
        excerpt = excerpt_of(body)
        detail = dict(phases, bytes=size)
        if truncated:
            detail['truncated'] = True
        result = ProbeResult(True, latency_ms=_ms(latency), status=response.status, detail=detail, excerpt=excerpt)
        errors = self.evaluate(response.status, body, truncated)
        if errors:
            result.ok = False
            result.error = '; '.join(errors)
        return result

    def evaluate(self, status, body, truncated=False):
        """List of failed expectations for one response (empty when all hold)."""
        if status not in self.status_codes:
            return ['expected status in %s, got %s' % (json.dumps(self.status_codes), status)]
        errors = []
        text = body.decode('utf-8', 'replace')
        if self.body_regex is not None and not self.body_regex.search(text):
            errors.append('expected body to match %r (body_regex), no match' % self.body_regex.pattern)
        if self.json:
            try:
                document = json.loads(text)
            except ValueError as exc:
                why = 'body was truncated at %d bytes' % MAX_BODY_BYTES if truncated else str(exc)
                errors.append('expected a JSON body, got invalid JSON (%s)' % why)
            else:
                errors.extend(msg for msg in (e.check(document) for e in self.json) if msg)
        return errors


# --------------------------------------------------------------------------- tcp


class TcpProbe(Probe):

    def __init__(self, spec, index):
        super(TcpProbe, self).__init__(spec, index)
        self.host = spec['host']
        self.port = spec['port']
        self.banner_regex = re.compile(spec['banner_regex'].encode('utf-8')) if spec.get('banner_regex') else None
        self.banner_bytes = spec.get('banner_bytes') or 1024

    def describe(self):
        return 'tcp %s:%s' % (self.host, self.port)

    def _run(self, timeout):
        t_start = time.perf_counter()
        t_end = t_start + timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except Exception as exc:  # pylint: disable=broad-except
            raise ProbeFailure('connect failed: %s' % _describe_error(exc))
        detail = {'connect_ms': _ms(time.perf_counter() - t_start)}
        try:
            if self.banner_regex is None:
                return ProbeResult(True, latency_ms=detail['connect_ms'], status='connected', detail=detail)
            data = b''
            error = None
            while len(data) < self.banner_bytes and not self.banner_regex.search(data):
                try:
                    sock.settimeout(_remaining(t_end))
                    chunk = sock.recv(self.banner_bytes - len(data))
                except Exception as exc:  # pylint: disable=broad-except
                    error = _describe_error(exc)
                    break
                if not chunk:
                    error = 'connection closed by peer'
                    break
                data += chunk
            latency = _ms(time.perf_counter() - t_start)
            detail['bytes'] = len(data)
            excerpt = excerpt_of(data)
            if self.banner_regex.search(data):
                return ProbeResult(True, latency_ms=latency, status='banner matched', detail=detail, excerpt=excerpt)
            why = error or 'read %d bytes (banner_bytes)' % len(data)
            return ProbeResult(False, latency_ms=latency, status='banner mismatch', detail=detail, excerpt=excerpt,
                               error='expected banner to match %r (banner_regex), got %r (%s)'
                               % (self.banner_regex.pattern.decode('utf-8'), excerpt_of(data, 80), why))
        finally:
            sock.close()


# --------------------------------------------------------------------------- tls


class TlsProbe(Probe):

    def __init__(self, spec, index, run_command=None):
        super(TlsProbe, self).__init__(spec, index)
        self.run_command = run_command
        self.host = spec['host']
        self.port = spec.get('port') or 443
        self.server_name = spec.get('server_name')
        self.min_days_left = spec.get('min_days_left')
        self.min_protocol = spec.get('min_protocol')
        self.validate_certs = spec.get('validate_certs') is not False
        self.ssl_context = make_ssl_context(validate_certs=self.validate_certs, ca_path=spec.get('ca_path'),
                                            min_protocol=self.min_protocol)

    def describe(self):
        text = 'tls %s:%s' % (self.host, self.port)
        return text + (' (SNI %s)' % self.server_name if self.server_name else '')

    def _run(self, timeout):
        t_start = time.perf_counter()
        t_end = t_start + timeout
        phase = 'connect'
        detail = {}
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
            detail['connect_ms'] = _ms(time.perf_counter() - t_start)
            phase = 'TLS handshake'
            raw.settimeout(_remaining(t_end))
            t_tls = time.perf_counter()
            try:
                sock = self.ssl_context.wrap_socket(raw, server_hostname=self.server_name or self.host)
            except BaseException:
                raw.close()
                raise
            detail['tls_ms'] = _ms(time.perf_counter() - t_tls)
        except Exception as exc:  # pylint: disable=broad-except
            error = '%s failed: %s' % (phase, _describe_error(exc))
            if phase == 'TLS handshake' and self.min_protocol and isinstance(exc, ssl.SSLError) \
                    and 'VERSION' in str(exc.reason or exc).upper():
                error = 'expected protocol %s or newer (min_protocol), handshake failed: %s' % (self.min_protocol, _describe_error(exc))
            raise ProbeFailure(error, detail=detail)
        try:
            latency = _ms(time.perf_counter() - t_start)
            protocol = sock.version()
            cert = sock.getpeercert()
            if cert and cert.get('notAfter'):
                not_after = float(ssl.cert_time_to_seconds(cert['notAfter']))
            else:
                not_after = der_not_after(sock.getpeercert(binary_form=True), self.run_command)
        finally:
            sock.close()
        days_left = round((not_after - time.time()) / 86400.0, 3)
        detail.update(protocol=protocol, days_left=days_left,
                      not_after=datetime.fromtimestamp(not_after, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        result = ProbeResult(True, latency_ms=latency, status=protocol, detail=detail)
        errors = []
        if self.min_protocol and TLS_VERSIONS.index(self.min_protocol) > _protocol_rank(protocol):
            errors.append('expected protocol %s or newer (min_protocol), got %s' % (self.min_protocol, protocol))
        if self.min_days_left is not None and days_left < self.min_days_left:
            errors.append('expected certificate valid for at least %s more days (min_days_left), got %.2f days (notAfter %s)'
                          % (_fmt_num(self.min_days_left), days_left, detail['not_after']))
        if errors:
            result.ok = False
            result.error = '; '.join(errors)
        return result


def _protocol_rank(protocol):
    return TLS_VERSIONS.index(protocol) if protocol in TLS_VERSIONS else -1


# --------------------------------------------------------------------------- redis


class RedisProbe(Probe):

    def __init__(self, spec, index):
        super(RedisProbe, self).__init__(spec, index)
        self.url = spec.get('url')
        self.host = spec.get('host') or '127.0.0.1'
        self.port = spec.get('port') or 6379
        self.username = spec.get('username')
        self.password = spec.get('password')
        self.db = spec.get('db')
        self.tls = bool(spec.get('tls'))
        self.validate_certs = spec.get('validate_certs') is not False
        self.ca_path = spec.get('ca_path')
        self.role = spec.get('role')
        self.secrets = url_secrets(self.url) | ({self.password} if self.password else set())

    def describe(self):
        if self.url:
            return 'redis %s' % redact_url(self.url)
        return 'redis %s%s:%s/%s' % ('tls ' if self.tls else '', self.host, self.port, self.db or 0)

    def _client(self, redis_lib, timeout):
        kwargs = dict(socket_timeout=timeout, socket_connect_timeout=timeout, username=self.username,
                      password=self.password, client_name='nodeops-health-gate')
        if self.db is not None:
            kwargs['db'] = self.db
        try:
            from redis.backoff import NoBackoff  # pylint: disable=import-outside-toplevel
            from redis.retry import Retry  # pylint: disable=import-outside-toplevel
            kwargs['retry'] = Retry(NoBackoff(), 0)  # one attempt is one try; the gate does the retrying
        except ImportError:
            pass
        if self.url:
            return redis_lib.Redis.from_url(self.url, **kwargs)
        if self.tls:
            kwargs.update(ssl=True, ssl_cert_reqs='required' if self.validate_certs else 'none',
                          ssl_check_hostname=self.validate_certs)
            if self.ca_path:
                kwargs['ssl_ca_path' if os.path.isdir(self.ca_path) else 'ssl_ca_certs'] = self.ca_path
        return redis_lib.Redis(host=self.host, port=self.port, **kwargs)

    def _run(self, timeout):
        redis_lib, _tb = import_lib('redis')
        t_start = time.perf_counter()
        client = self._client(redis_lib, timeout)
        try:
            try:
                client.ping()
                detail = {'ping_ms': _ms(time.perf_counter() - t_start)}
                role = None
                if self.role:
                    reply = client.execute_command('ROLE')
                    role = reply[0].decode('utf-8') if isinstance(reply[0], bytes) else str(reply[0])
            except Exception as exc:  # pylint: disable=broad-except
                raise ProbeFailure('%s: %s' % (type(exc).__name__, str(exc)[:300]))
        finally:
            client.close()
        latency = _ms(time.perf_counter() - t_start)
        status = 'PONG' + (' role=%s' % role if role else '')
        result = ProbeResult(True, latency_ms=latency, status=status, detail=detail)
        if self.role:
            detail['role'] = role
            wanted = {'slave', 'replica'} if self.role in ('slave', 'replica') else {self.role}
            if role not in wanted:
                result.ok = False
                result.error = 'expected role %s, got %s' % (self.role, role)
        return result


# --------------------------------------------------------------------------- mongodb


def mongodb_state(hello):
    """Member state derived from a ``hello`` reply (works without replSetGetStatus privileges)."""
    primary = hello.get('isWritablePrimary', hello.get('ismaster'))
    if not hello.get('setName'):
        return 'STANDALONE' if primary else 'OTHER'
    if primary:
        return 'PRIMARY'
    if hello.get('secondary'):
        return 'SECONDARY'
    if hello.get('arbiterOnly'):
        return 'ARBITER'
    return 'OTHER'


class MongoProbe(Probe):

    def __init__(self, spec, index):
        super(MongoProbe, self).__init__(spec, index)
        self.uri = spec['uri']
        self.username = spec.get('username')
        self.password = spec.get('password')
        self.state = spec.get('state')
        self.secrets = url_secrets(self.uri) | ({self.password} if self.password else set())

    def describe(self):
        return 'mongodb %s' % redact_url(self.uri)

    def _run(self, timeout):
        pymongo, _tb = import_lib('pymongo')
        ms = max(1, int(timeout * 1000))
        kwargs = dict(serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms,
                      appname='nodeops.stack.health_gate', retryReads=False, retryWrites=False, maxPoolSize=1)
        if self.username is not None:
            kwargs['username'] = self.username
        if self.password is not None:
            kwargs['password'] = self.password
        t_start = time.perf_counter()
        detail = {}
        try:
            client = pymongo.MongoClient(self.uri, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            raise ProbeFailure('invalid MongoDB connection settings: %s' % str(exc)[:300])
        try:
            try:
                client.admin.command('ping')
                detail['ping_ms'] = _ms(time.perf_counter() - t_start)
                state = None
                if self.state:
                    hello = client.admin.command('hello')
                    state = mongodb_state(hello)
                    detail.update(state=state, set_name=hello.get('setName'))
            except Exception as exc:  # pylint: disable=broad-except
                raise ProbeFailure('%s: %s' % (type(exc).__name__, str(exc)[:300]))
        finally:
            client.close()
        latency = _ms(time.perf_counter() - t_start)
        result = ProbeResult(True, latency_ms=latency, status='ok' + (' state=%s' % state if state else ''), detail=detail)
        if self.state and state != self.state:
            result.ok = False
            result.error = 'expected member state %s, got %s' % (self.state, state)
        return result


# --------------------------------------------------------------------------- pm2


class Pm2Probe(Probe):
    """All instances of one PM2 app online, the expected count, no restart since the first observation."""

    def __init__(self, spec, index, run_command=None, cli_factory=Pm2Cli):
        super(Pm2Probe, self).__init__(spec, index)
        self.run_command = run_command
        self.app = spec['app']
        self.pm2_home = spec.get('pm2_home')
        self.pm2_binary = spec.get('pm2_binary')
        self.instances = spec.get('instances')
        self._cli_factory = cli_factory
        self.baseline = {}

    def describe(self):
        return "pm2 app '%s'%s" % (self.app, ' (PM2_HOME %s)' % self.pm2_home if self.pm2_home else '')

    def reset(self):
        self.baseline = {}

    def _run(self, timeout):
        if self.run_command is None:
            raise ProbeFailure('no run_command to run pm2 with (pass AnsibleModule.run_command to build_probes)')
        cli = self._cli_factory(binary=self.pm2_binary, pm2_home=self.pm2_home, run_command=self.run_command, timeout=timeout)
        t_start = time.perf_counter()
        if cli.daemon_pid() is None:
            raise ProbeFailure('PM2 daemon is not running for PM2_HOME %s (not started, to keep the probe read-only)' % cli.pm2_home)
        try:
            everything = cli.jlist()
        except Pm2Error as exc:
            raise ProbeFailure(str(exc))
        latency = _ms(time.perf_counter() - t_start)
        procs = sorted((p for p in everything if p['name'] == self.app), key=lambda p: p['pm_id'] if p['pm_id'] is not None else -1)
        if not procs:
            known = sorted({str(p['name']) for p in everything})
            raise ProbeFailure("expected PM2 app '%s', not found (apps: %s)" % (self.app, ', '.join(known) or 'none'), status='absent')
        online = [p for p in procs if p['status'] == 'online']
        status = 'online %d/%d' % (len(online), len(procs))
        detail = {'processes': [dict((k, p[k]) for k in ('pm_id', 'pid', 'status', 'restarts', 'uptime_s', 'memory', 'cpu'))
                                for p in procs]}
        errors = []
        if self.instances is not None and len(procs) != self.instances:
            errors.append('expected %d instance(s), found %d' % (self.instances, len(procs)))
        for proc in procs:
            if proc['status'] != 'online':
                errors.append('expected pm_id %s online, got %s (restarts %s)' % (proc['pm_id'], proc['status'], proc['restarts']))
        for proc in procs:
            first = self.baseline.setdefault(proc['pm_id'], {'restarts': proc['restarts'], 'pid': proc['pid']})
            if proc['restarts'] > first['restarts']:
                errors.append('expected no restart during the gate, pm_id %s restarts rose from %d to %d'
                              % (proc['pm_id'], first['restarts'], proc['restarts']))
            elif first['pid'] and proc['pid'] and proc['pid'] != first['pid']:
                errors.append('expected no restart during the gate, pm_id %s pid changed from %s to %s'
                              % (proc['pm_id'], first['pid'], proc['pid']))
        result = ProbeResult(not errors, latency_ms=latency, status=status, detail=detail)
        if errors:
            result.error = '; '.join(errors)
        return result


# --------------------------------------------------------------------------- validation / construction


class _Checker:
    """Collects the parameter-naming context for one probe's validation messages."""

    def __init__(self, index, spec):
        self.index = index
        self.spec = spec
        name = spec.get('name')
        self.suffix = " (probe '%s', kind %s)" % (name, spec.get('kind')) if name else ' (kind %s)' % spec.get('kind')

    def fail(self, option, expected, got):
        where = 'probes[%d]%s' % (self.index, '.' + option if option else '')
        raise ProbeConfigError('%s%s: expected %s, got %s' % (where, self.suffix, expected, got))

    def require(self, option, what):
        if self.spec.get(option) in (None, ''):
            self.fail(option, what + ' (required for kind %s)' % self.spec.get('kind'), 'nothing')

    def positive(self, option, allow_zero=False):
        value = self.spec.get(option)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            self.fail(option, 'a number %s 0' % ('>=' if allow_zero else '>'), _fmt_num(value))

    def port(self, option='port'):
        value = self.spec.get(option)
        if value is not None and not 1 <= value <= 65535:
            self.fail(option, 'a TCP port 1-65535', value)

    def regex(self, option):
        value = self.spec.get(option)
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                self.fail(option, 'a valid Python regular expression', '%r (%s)' % (value, exc))

    def path_exists(self, option, what):
        value = self.spec.get(option)
        if value is not None and not os.path.exists(value):
            self.fail(option, 'an existing %s' % what, '%r (no such file or directory)' % value)


def _check_url(chk, option, schemes, kind):
    url = chk.spec.get(option)
    try:
        parts = urlsplit(url)
        parts.port  # pylint: disable=pointless-statement
    except ValueError as exc:
        chk.fail(option, 'a URL such as %s://127.0.0.1:8080/health' % schemes[0], '%r (%s)' % (redact_url(url), exc))
    if parts.scheme.lower() not in schemes:
        chk.fail(option, 'a URL with scheme %s for kind %s' % (' or '.join(s + '://' for s in schemes), kind),
                 '%r (scheme %r)' % (redact_url(url), parts.scheme or ''))
    if not parts.hostname:
        chk.fail(option, 'a URL with a host', repr(redact_url(url)))


def _validate(index, spec):
    chk = _Checker(index, spec)
    kind = spec.get('kind')
    if kind not in KINDS:
        chk.fail('kind', 'one of %s' % ', '.join(KINDS), repr(kind))
    allowed = set(COMMON_OPTIONS) | set(KIND_OPTIONS[kind])
    for option in sorted(spec):
        if spec[option] is not None and option not in allowed:
            owners = [k for k in KINDS if option in KIND_OPTIONS[k]]
            chk.fail(option, 'only options of kind %s (%s)' % (kind, ', '.join(sorted(KIND_OPTIONS[kind]))),
                     "'%s', which applies to kind %s" % (option, '/'.join(owners)))
    chk.positive('timeout')
    chk.positive('max_latency_ms')
    for option in ('ca_path', 'client_cert', 'client_key'):
        chk.path_exists(option, 'file' if option != 'ca_path' else 'CA file or directory')

    if kind in ('http', 'https'):
        chk.require('url', 'a URL')
        _check_url(chk, 'url', ('https',) if kind == 'https' else ('http', 'https'), kind)
        for code in spec.get('status_codes') or []:
            if not 100 <= code <= 599:
                chk.fail('status_codes', 'HTTP status codes 100-599', code)
        if spec.get('status_codes') == []:
            chk.fail('status_codes', 'at least one status code', '[]')
        chk.regex('body_regex')
        if spec.get('client_key') and not spec.get('client_cert'):
            chk.fail('client_key', 'client_cert to be set as well', 'client_key alone')
        for pos, expectation in enumerate(spec.get('json') or []):
            try:
                JsonExpectation.from_spec(expectation)
            except ValueError as exc:
                raise ProbeConfigError('probes[%d].json[%d]%s: %s' % (index, pos, chk.suffix, exc))
        if kind == 'http' and spec.get('url', '').lower().startswith('http://'):
            for option in ('validate_certs', 'ca_path', 'server_name', 'client_cert', 'client_key'):
                if option != 'server_name' and spec.get(option) is not None:
                    chk.fail(option, 'TLS options only with an https:// url', '%s for %r' % (option, redact_url(spec['url'])))
    elif kind == 'tcp':
        chk.require('host', 'a host name or address')
        chk.require('port', 'a TCP port')
        chk.port()
        chk.regex('banner_regex')
        value = spec.get('banner_bytes')
        if value is not None and not 1 <= value <= 65536:
            chk.fail('banner_bytes', 'a byte count 1-65536', value)
        if value is not None and spec.get('banner_regex') is None:
            chk.fail('banner_bytes', 'banner_regex to be set as well (banner_bytes bounds the banner read)', 'banner_bytes alone')
    elif kind == 'tls':
        chk.require('host', 'a host name or address')
        chk.port()
        if spec.get('min_protocol') is not None and spec['min_protocol'] not in TLS_VERSIONS:
            chk.fail('min_protocol', 'one of %s' % ', '.join(TLS_VERSIONS), repr(spec['min_protocol']))
        chk.positive('min_days_left', allow_zero=True)
    elif kind == 'redis':
        if spec.get('url') and spec.get('host'):
            chk.fail('url', 'either url or host/port', 'both url and host')
        if spec.get('url'):
            _check_url(chk, 'url', ('redis', 'rediss', 'unix'), kind)
        chk.port()
        if spec.get('db') is not None and spec['db'] < 0:
            chk.fail('db', 'a database number >= 0', spec['db'])
        if spec.get('role') is not None and spec['role'] not in REDIS_ROLES:
            chk.fail('role', 'one of %s' % ', '.join(REDIS_ROLES), repr(spec['role']))
    elif kind == 'mongodb':
        chk.require('uri', 'a MongoDB connection string')
        _check_url(chk, 'uri', ('mongodb', 'mongodb+srv'), kind)
        if spec.get('state') is not None and spec['state'] not in MONGODB_STATES:
            chk.fail('state', 'one of %s' % ', '.join(MONGODB_STATES), repr(spec['state']))
    elif kind == 'pm2':
        chk.require('app', 'a PM2 app name')
        if spec.get('instances') is not None and spec['instances'] < 1:
            chk.fail('instances', 'an instance count >= 1', spec['instances'])
        if spec.get('pm2_binary') is not None and os.path.sep in spec['pm2_binary']:
            chk.path_exists('pm2_binary', 'pm2 executable')
    return chk


_BUILDERS = {
    'http': HttpProbe, 'https': HttpProbe, 'tcp': TcpProbe, 'tls': TlsProbe,
    'redis': RedisProbe, 'mongodb': MongoProbe, 'pm2': Pm2Probe,
}


def build_probes(specs, sensitive_headers=DEFAULT_SENSITIVE_HEADERS, run_command=None):
    """Validate the ``probes`` option and return Probe objects (raises ProbeConfigError).

    ``run_command`` (``AnsibleModule.run_command`` or compatible) runs ``pm2`` for pm2
    probes and ``openssl`` as the last fallback of tls probes.
    """
    if not isinstance(specs, list) or not specs:
        raise ProbeConfigError('probes: expected a non-empty list of probe definitions, got %r' % (specs,))
    probes = []
    names = {}
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise ProbeConfigError('probes[%d]: expected a dict with at least "kind", got %r' % (index, spec))
        chk = _validate(index, spec)
        builder = _BUILDERS[spec['kind']]
        try:
            if builder is HttpProbe:
                probe = builder(spec, index, sensitive_headers)
            elif builder in (TlsProbe, Pm2Probe):
                probe = builder(spec, index, run_command=run_command)
            else:
                probe = builder(spec, index)
        except (ssl.SSLError, OSError) as exc:
            option = 'client_cert' if spec.get('client_cert') else 'ca_path'
            chk.fail(option, 'readable PEM certificate file(s)', '%r (%s)' % (spec.get(option), _describe_error(exc)))
        if probe.name in names:
            raise ProbeConfigError('probes[%d].name: expected unique probe names, got %r which probes[%d] already uses'
                                   % (index, probe.name, names[probe.name]))
        names[probe.name] = index
        probes.append(probe)
    return probes


def probe_secrets(specs, sensitive_headers=DEFAULT_SENSITIVE_HEADERS):
    """Every secret embedded in the probe definitions (for AnsibleModule.no_log_values)."""
    secrets = set()
    for spec in specs or []:
        if not isinstance(spec, dict):
            continue
        for option in ('url', 'uri'):
            secrets |= url_secrets(spec.get(option))
        headers = spec.get('headers')
        if isinstance(headers, dict):
            secrets |= header_secrets(headers, sensitive_headers)
        if spec.get('password'):
            secrets.add(str(spec['password']))
    return {s for s in secrets if s}
