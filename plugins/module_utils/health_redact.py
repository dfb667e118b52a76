# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction of secrets embedded in probe definitions (URL userinfo, headers, query strings)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import re

from urllib.parse import urlsplit, urlunsplit, parse_qsl, unquote

MASK = '********'

DEFAULT_SENSITIVE_HEADERS = (
    'authorization', 'proxy-authorization', 'cookie', 'set-cookie',
    'x-api-key', 'x-auth-token', 'x-access-token', 'x-csrf-token',
)

# Header names and query parameters that look like credentials are redacted even
# when they are not listed in sensitive_headers.
_SENSITIVE_NAME_RE = re.compile(r'(auth|token|secret|passw|api[-_]?key|session|cookie|credential|signature)', re.I)


def is_sensitive_name(name, sensitive_headers=DEFAULT_SENSITIVE_HEADERS):
    """True when a header or query parameter name must have its value hidden."""
    lname = str(name).strip().lower()
    return lname in {h.lower() for h in sensitive_headers} or bool(_SENSITIVE_NAME_RE.search(lname))


def url_secrets(url):
    """Secrets carried by a URL: the userinfo password and sensitive query values (raw and decoded)."""
    secrets = set()
    if not isinstance(url, str) or not url:
        return secrets
    try:
        parts = urlsplit(url)
    except ValueError:
        return secrets
    netloc = parts.netloc
    if '@' in netloc:
        userinfo = netloc.rpartition('@')[0]
        if ':' in userinfo:
            password = userinfo.partition(':')[2]
            if password:
                secrets.update({password, unquote(password)})
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if value and is_sensitive_name(key):
            secrets.add(value)
    return secrets


def redact_url(url):
    """URL with the userinfo password and sensitive query values masked.

    ``https://u:p@h/x?token=t&a=1`` -> ``https://u:********@h/x?token=********&a=1``.
    Multi-host MongoDB URIs are handled (only the part before the last ``@`` is userinfo).
    """
    if not isinstance(url, str) or not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_free_text(url)
    netloc = parts.netloc
    if '@' in netloc:
        userinfo, _sep, hostpart = netloc.rpartition('@')
        if ':' in userinfo:
            userinfo = userinfo.partition(':')[0] + ':' + MASK
        netloc = userinfo + '@' + hostpart
    query = parts.query
    if query:
        pieces = []
        for piece in query.split('&'):
            key, eq, value = piece.partition('=')
            if eq and value and is_sensitive_name(unquote(key)):
                piece = key + '=' + MASK
            pieces.append(piece)
        query = '&'.join(pieces)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def header_secrets(headers, sensitive_headers=DEFAULT_SENSITIVE_HEADERS):
    """Values of the sensitive headers in ``headers`` (and the credential part of ``Bearer x``/``Basic x``)."""
    secrets = set()
    for name, value in (headers or {}).items():
        if value is None or not is_sensitive_name(name, sensitive_headers):
            continue
        value = str(value)
        if value:
            secrets.add(value)
        scheme, _sep, cred = value.partition(' ')
        if cred and scheme.isalpha():
            secrets.add(cred.strip())
    return {s for s in secrets if s}


_URL_IN_TEXT_RE = re.compile(r'([a-zA-Z][a-zA-Z0-9+.-]*://)([^/\s:@]*):([^@\s/]*)@')


def _redact_free_text(text):
    return _URL_IN_TEXT_RE.sub(lambda m: m.group(1) + m.group(2) + ':' + MASK + '@', text)


def redact_text(text, secrets=()):
    """Mask every known secret and every ``scheme://user:password@`` occurrence in free text."""
    if text is None:
        return text
    text = str(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _redact_free_text(text)
