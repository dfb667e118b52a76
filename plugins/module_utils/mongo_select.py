# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which namespaces a dump or restore covers, and namespace remapping (``ns_from`` -> ``ns_to``).

Patterns use shell-style wildcards (``fnmatch``, case-sensitive): ``*``, ``?``
and ``[...]``. Database patterns match database names; namespace patterns
match ``db.collection`` (the first dot separates the database).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import fnmatch
import re

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError

INTERNAL_DATABASES = ('admin', 'config', 'local')
_DB_FORBIDDEN = '/\\. "$\x00'


def _check_pattern(pattern, param, index, namespace):
    if not isinstance(pattern, str) or not pattern.strip() or pattern != pattern.strip() or '\x00' in pattern:
        raise MongoBackupError("%s[%d]: %r is not a valid pattern (empty, surrounding blanks or NUL)" % (param, index, pattern))
    if namespace:
        db, sep, coll = pattern.partition('.')
        if not sep or not db or not coll:
            raise MongoBackupError("%s[%d]: %r is not a namespace pattern: expected DB.COLLECTION with shell wildcards, "
                                   "e.g. 'shop.*' or 'shop.orders_*'" % (param, index, pattern))
        if any(c in db for c in '/\\ "$'):
            raise MongoBackupError("%s[%d]: %r: the database part %r contains a character MongoDB does not allow in database names"
                                   % (param, index, pattern, db))
    elif any(c in pattern for c in _DB_FORBIDDEN):
        raise MongoBackupError("%s[%d]: %r is not a database name pattern (database names cannot contain / \\ . space \" $)"
                               % (param, index, pattern))
    if pattern.count('[') != pattern.count(']'):
        raise MongoBackupError("%s[%d]: %r has an unbalanced [ ] wildcard" % (param, index, pattern))
    return pattern


class Selection(object):
    """Include/exclude filters over databases and namespaces.

    * internal databases (admin, config, local) are skipped unless
      ``include_internal`` is true or a database pattern names them literally;
      ``local`` is only ever included when named literally.
    * ``system.*`` collections are skipped, except ``system.js`` (stored
      JavaScript, which mongodump dumps too); so are ``local.oplog.*`` and
      ``local.replset.*`` (the oplog is captured with ``oplog: true``).
    """

    def __init__(self, databases=None, exclude_databases=None, namespaces=None, exclude_namespaces=None, include_internal=False):
        self.databases = [_check_pattern(p, 'databases', i, False) for i, p in enumerate(databases or [])]
        self.exclude_databases = [_check_pattern(p, 'exclude_databases', i, False) for i, p in enumerate(exclude_databases or [])]
        self.namespaces = [_check_pattern(p, 'namespaces', i, True) for i, p in enumerate(namespaces or [])]
        self.exclude_namespaces = [_check_pattern(p, 'exclude_namespaces', i, True) for i, p in enumerate(exclude_namespaces or [])]
        self.include_internal = include_internal

    def database_wanted(self, db):
        """Whether any collection of ``db`` can be selected (a cheap pre-filter; :meth:`wanted` decides)."""
        literal = db in self.databases or any(p.partition('.')[0] == db for p in self.namespaces)
        if db == 'local' and not literal:
            return False
        if db in INTERNAL_DATABASES and not (self.include_internal or literal):
            return False
        if any(fnmatch.fnmatchcase(db, p) for p in self.exclude_databases):
            return False
        if self.databases and not any(fnmatch.fnmatchcase(db, p) for p in self.databases):
            return False
        if self.namespaces:
            # a '*' in the database part may also span the dot, so such a pattern cannot rule a database out
            parts = [p.partition('.')[0] for p in self.namespaces]
            if not any(fnmatch.fnmatchcase(db, part) or '*' in part for part in parts):
                return False
        return True

    def wanted(self, db, collection):
        """Whether namespace ``db.collection`` is selected (databases and namespaces filters must both hold)."""
        if not self.database_wanted(db):
            return False
        if collection.startswith('system.') and collection != 'system.js':
            return False
        if '$' in collection:
            return False
        if db == 'local' and (collection.startswith('oplog.') or collection.startswith('replset.')):
            return False  # the oplog is captured with oplog: true, never dumped as a collection
        ns = '%s.%s' % (db, collection)
        if any(fnmatch.fnmatchcase(ns, p) for p in self.exclude_namespaces):
            return False
        if self.namespaces and not any(fnmatch.fnmatchcase(ns, p) for p in self.namespaces):
            return False
        return True

    def describe(self):
        return {'databases': self.databases, 'exclude_databases': self.exclude_databases, 'namespaces': self.namespaces,
                'exclude_namespaces': self.exclude_namespaces, 'include_internal_databases': self.include_internal}


class NamespaceMapper(object):
    """mongorestore-style ``--nsFrom``/``--nsTo`` renaming: each ``*`` in ``from`` captures, and fills the same ``*`` in ``to``."""

    def __init__(self, ns_from=None, ns_to=None):
        ns_from = list(ns_from or [])
        ns_to = list(ns_to or [])
        if len(ns_from) != len(ns_to):
            raise MongoBackupError('ns_from and ns_to: expected the same number of patterns, got %d and %d' % (len(ns_from), len(ns_to)))
        self.rules = []
        for index, (source, target) in enumerate(zip(ns_from, ns_to)):
            _check_pattern(source, 'ns_from', index, True)
            _check_pattern(target, 'ns_to', index, True)
            if '?' in source or '[' in source or '?' in target or '[' in target:
                raise MongoBackupError("ns_from[%d]/ns_to[%d]: only '*' wildcards are allowed in renaming patterns, got %r -> %r"
                                       % (index, index, source, target))
            if source.count('*') != target.count('*'):
                raise MongoBackupError("ns_from[%d]/ns_to[%d]: %r has %d '*' but %r has %d; each '*' of ns_from must have a '*' in ns_to"
                                       % (index, index, source, source.count('*'), target, target.count('*')))
            regex = re.compile('^' + '(.*?)'.join(re.escape(part) for part in source.split('*')) + '$', re.S)
            self.rules.append((source, target, regex))

    def map(self, ns):
        """Target namespace for ``ns`` (the first matching rule wins; unmatched namespaces keep their name)."""
        for _source, target, regex in self.rules:
            match = regex.match(ns)
            if match:
                out = target
                for group in match.groups():
                    out = out.replace('*', group, 1)
                return out
        return ns

    def describe(self):
        return [{'from': s, 'to': t} for s, t, _r in self.rules]


def split_ns(ns):
    db, _sep, coll = ns.partition('.')
    return db, coll


def check_target_ns(ns, source):
    """Raise when a remapped namespace is not a valid MongoDB namespace."""
    db, coll = split_ns(ns)
    if not db or not coll or any(c in db for c in _DB_FORBIDDEN) or len(db.encode('utf-8')) >= 64 or '$' in coll or coll.startswith('.'):
        raise MongoBackupError("ns_to: %s maps to %r, which is not a valid namespace (database %r, collection %r)" % (source, ns, db, coll))
    return db, coll
