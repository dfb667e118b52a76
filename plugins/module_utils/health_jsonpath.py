# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dotted JSON paths (``checks.redis.status``, ``items[0].name``, ``[1].ok``) and expectations on them.

Grammar::

    path    := first ( '.' key index* )*
    first   := key index* | index+
    key     := one or more characters other than '.', '[', ']'
    index   := '[' '-'? digits ']'

Keys are matched literally (no wildcards); negative indices count from the end.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json

OPERATORS = ('equals', 'in', 'exists')
_MISSING = object()


class JsonPathError(ValueError):
    """Malformed path (message says where and why)."""


def parse_path(path):
    """Parse ``path`` into a list of str keys and int indices; raise JsonPathError when malformed."""
    if not isinstance(path, str) or not path.strip():
        raise JsonPathError('path must be a non-empty string such as "checks.redis.status"')
    tokens = []
    i, n = 0, len(path)
    expect_key = True  # at start or right after '.'
    while i < n:
        ch = path[i]
        if ch == '[':
            if expect_key and tokens:
                raise JsonPathError("empty key before '[' at position %d" % i)
            end = path.find(']', i)
            if end < 0:
                raise JsonPathError("unclosed '[' at position %d" % i)
            body = path[i + 1:end]
            digits = body[1:] if body.startswith('-') else body
            if not digits.isdigit():
                raise JsonPathError("list index must be an integer, got '[%s]' at position %d" % (body, i))
            tokens.append(int(body))
            i = end + 1
            expect_key = False
        elif ch == '.':
            if expect_key:
                raise JsonPathError("empty key at position %d (two dots in a row, or a leading dot)" % i)
            i += 1
            expect_key = True
            if i == n:
                raise JsonPathError('path ends with a dot')
        elif ch == ']':
            raise JsonPathError("unexpected ']' at position %d" % i)
        else:
            if not expect_key:
                raise JsonPathError("expected '.' or '[' at position %d, got %r" % (i, ch))
            start = i
            while i < n and path[i] not in '.[]':
                i += 1
            tokens.append(path[start:i])
            expect_key = False
    return tokens


def format_path(tokens):
    out = ''
    for tok in tokens:
        if isinstance(tok, int):
            out += '[%d]' % tok
        else:
            out += ('.' if out else '') + tok
    return out


def resolve(document, tokens):
    """Return (value, None) or (_MISSING, 'why it is missing')."""
    current = document
    for pos, tok in enumerate(tokens):
        where = format_path(tokens[:pos]) or '$'
        if isinstance(tok, int):
            if not isinstance(current, list):
                return _MISSING, '%s is %s, not a list' % (where, json_type(current))
            if not -len(current) <= tok < len(current):
                return _MISSING, '%s has %d element(s), no index %d' % (where, len(current), tok)
            current = current[tok]
        else:
            if not isinstance(current, dict):
                return _MISSING, '%s is %s, not an object' % (where, json_type(current))
            if tok not in current:
                return _MISSING, '%s has no key %r' % (where, tok)
            current = current[tok]
    return current, None


def json_type(value):
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, (int, float)):
        return 'a number'
    if isinstance(value, str):
        return 'a string'
    if isinstance(value, list):
        return 'a list'
    if isinstance(value, dict):
        return 'an object'
    return type(value).__name__


def json_equal(actual, expected):
    """Equality that does not confuse booleans with numbers (JSON ``true`` != ``1``)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(json_equal(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return set(actual) == set(expected) and all(json_equal(actual[k], expected[k]) for k in actual)
    return actual == expected


def short(value, limit=120):
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + '...'


class JsonExpectation:
    """One expectation: ``path`` plus exactly one of ``equals``, ``in``, ``exists``."""

    def __init__(self, path, operator, operand):
        self.path = path
        self.tokens = parse_path(path)
        self.operator = operator
        self.operand = operand

    @classmethod
    def from_spec(cls, spec):
        """Build from a dict; raise ValueError with a user-facing message (without the parameter prefix)."""
        if not isinstance(spec, dict):
            raise ValueError('each expectation must be a dict with "path" and one of equals/in/exists, got %s' % json_type(spec))
        unknown = sorted(set(spec) - set(OPERATORS) - {'path'})
        if unknown:
            raise ValueError('unknown key(s) %s; allowed: path, %s' % (', '.join(unknown), ', '.join(OPERATORS)))
        given = [op for op in OPERATORS if spec.get(op) is not None]
        if len(given) != 1:
            raise ValueError('needs exactly one of equals, in, exists; got %s' % (', '.join(given) if given else 'none'))
        op = given[0]
        operand = spec[op]
        if op == 'in' and not isinstance(operand, list):
            raise ValueError("'in' must be a list of allowed values, got %s" % json_type(operand))
        if op == 'exists' and not isinstance(operand, bool):
            raise ValueError("'exists' must be true or false, got %r" % (operand,))
        try:
            return cls(spec.get('path'), op, operand)
        except JsonPathError as exc:
            raise ValueError('path %r is malformed: %s' % (spec.get('path'), exc))

    def describe(self):
        if self.operator == 'equals':
            return '%s == %s' % (self.path, short(self.operand))
        if self.operator == 'in':
            return '%s in %s' % (self.path, short(self.operand))
        return '%s %s' % (self.path, 'exists' if self.operand else 'does not exist')

    def check(self, document):
        """Return None when satisfied, else a message 'json path X: expected ..., got ...'."""
        value, missing = resolve(document, self.tokens)
        prefix = 'json path %r: ' % self.path
        if self.operator == 'exists':
            if self.operand and value is _MISSING:
                return prefix + 'expected to exist, but %s' % missing
            if not self.operand and value is not _MISSING:
                return prefix + 'expected not to exist, got %s' % short(value)
            return None
        if value is _MISSING:
            return prefix + 'expected %s, but %s' % (self._expected_text(), missing)
        if self.operator == 'equals':
            ok = json_equal(value, self.operand)
        else:
            ok = any(json_equal(value, item) for item in self.operand)
        return None if ok else prefix + 'expected %s, got %s' % (self._expected_text(), short(value))

    def _expected_text(self):
        if self.operator == 'equals':
            return short(self.operand)
        return 'one of %s' % short(self.operand)
