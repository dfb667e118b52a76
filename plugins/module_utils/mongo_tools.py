# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``method: mongodump``: delegate the data transfer to the MongoDB Database Tools.

``mongodump`` writes into the same partial directory a pymongo dump would use;
the manifest is then built by reading back what it wrote (document counts from
the BSON framing, sha256 and sizes of every file, metadata), and the dump goes
through the same verification, rename and ``latest`` update. ``mongorestore``
restores a backup only after it verified against its manifest.

Commands run through the module's ``run_command`` (no ``subprocess`` here).
The connection string, which may hold a password, is passed in a ``--config``
YAML file (mode 0600, in a private temporary directory, deleted afterwards),
never on the command line.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import re
import shutil
import tempfile

from urllib.parse import quote, unquote, urlencode

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    HAS_PYMONGO, DEFAULT_PORT, TOOL_NAME, MongoBackupError, raw_codec_options, scrub, server_info,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_dump import base_manifest, oplog_available, oplog_edge, totals_of, ts_doc
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import (
    iter_raw_documents, open_decompressed, parse_metadata, read_small_file, scan_data_file,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import PARTIAL_MARKER, sha256_file
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_select import INTERNAL_DATABASES

if HAS_PYMONGO:
    from bson.raw_bson import RawBSONDocument
else:  # pragma: no cover
    RawBSONDocument = None

_RESTORED_RE = re.compile(r'(\d+) document\(s\) restored successfully\. (\d+) document\(s\) failed to restore')


def tools_uri(params):
    """A connection string carrying every connection option (including the password) for the tools' --config file."""
    uri = params.get('uri')
    query = {}
    if not uri:
        host = params.get('host') or 'localhost'
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        userinfo = ''
        if params.get('username'):
            userinfo = quote(params['username'], safe='')
            if params.get('password'):
                userinfo += ':' + quote(params['password'], safe='')
            userinfo += '@'
        uri = 'mongodb://%s%s:%d/' % (userinfo, host, params.get('port') or DEFAULT_PORT)
    elif params.get('username') and '@' not in uri.split('/')[2]:
        userinfo = quote(params['username'], safe='') + (':' + quote(params['password'], safe='') if params.get('password') else '') + '@'
        scheme, rest = uri.split('://', 1)
        uri = '%s://%s%s' % (scheme, userinfo, rest)
    for option, key in (('auth_source', 'authSource'), ('tls_ca_file', 'tlsCAFile'), ('tls_certificate_key_file', 'tlsCertificateKeyFile')):
        if params.get(option):
            query[key] = params[option]
    if params.get('tls') is not None:
        query['tls'] = 'true' if params['tls'] else 'false'
    timeout_ms = int(params['connect_timeout'] * 1000)
    query['serverSelectionTimeoutMS'] = str(timeout_ms)
    query['connectTimeoutMS'] = str(timeout_ms)
    if query:
        if '?' not in uri:
            if uri.count('/') < 3:
                uri += '/'
            uri += '?'
        elif not uri.endswith(('?', '&')):
            uri += '&'
        uri += urlencode(query)
    return uri


def _yaml_quote(text):
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


class MongoTools(object):
    """Runs mongodump/mongorestore through ``run_command(argv) -> (rc, stdout, stderr)``."""

    def __init__(self, run_command, find_binary, params, connect):
        self.run_command = run_command
        self.find_binary = find_binary
        self.params = params
        self.connect = connect
        self.secrets = set()

    def binary(self, name):
        path = self.find_binary(name)
        if not path:
            where = ' or in tools_path %s' % self.params['tools_path'] if self.params.get('tools_path') else ''
            raise MongoBackupError('method: mongodump needs the MongoDB Database Tools on the managed node, but %s was not found in PATH%s. '
                                   'Install the mongodb-database-tools package, set tools_path, or use method: pymongo' % (name, where))
        return path

    def _run(self, argv, what):
        tmpdir = tempfile.mkdtemp(prefix='mongo_backup-')
        try:
            config = os.path.join(tmpdir, 'tools.yml')
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'w') as fh:
                fh.write('uri: %s\n' % _yaml_quote(tools_uri(self.params)))
            rc, out, err = self.run_command([argv[0], '--config=%s' % config] + argv[1:])
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if rc != 0:
            tail = '\n'.join((err or out or '').strip().splitlines()[-15:])
            raise MongoBackupError('%s failed (exit status %d): %s' % (what, rc, scrub(tail, self.secrets)))
        return out or '', err or ''

    # ------------------------------------------------------------------ dump

    def dump_argv(self, cfg, partial):
        sel = cfg['selection']
        for param in ('databases', 'exclude_databases', 'namespaces', 'exclude_namespaces'):
            for index, pattern in enumerate(getattr(sel, param)):
                if '?' in pattern or '[' in pattern:
                    raise MongoBackupError("%s[%d]: %r: method: mongodump supports only '*' wildcards in patterns" % (param, index, pattern))
        if cfg['compression'] == 'zstd':
            raise MongoBackupError('compression: zstd is not supported by method: mongodump (mongodump writes gzip or nothing); '
                                   'use gzip or none, or method: pymongo')
        argv = [self.binary('mongodump'), '--out=%s' % partial, '--numParallelCollections=%d' % cfg['parallel']]
        if cfg.get('read_preference'):
            argv.append('--readPreference=%s' % cfg['read_preference'])
        if cfg['compression'] == 'gzip':
            argv.append('--gzip')
        if cfg['oplog']:
            argv.append('--oplog')
        includes = ['%s.*' % db for db in sel.databases] + list(sel.namespaces)
        excludes = ['%s.*' % db for db in sel.exclude_databases] + list(sel.exclude_namespaces)
        if not sel.include_internal:
            excludes += ['%s.*' % db for db in INTERNAL_DATABASES if db not in sel.databases]
        argv += ['--nsInclude=%s' % p for p in includes]
        argv += ['--nsExclude=%s' % p for p in excludes]
        return argv

    def dump(self, cfg, partial, name, started):
        self.secrets = set(cfg.get('secrets', ()))
        argv = self.dump_argv(cfg, partial)  # checks the binary and the options before connecting
        client = self.connect()
        try:
            server = server_info(client)
            server['target'] = cfg['target']
            if cfg['oplog'] and server['topology'] != 'replicaset':
                raise MongoBackupError('oplog: true needs a replica set member, but %s is a %s server; set oplog: false'
                                       % (cfg['target'], server['topology']))
            position = oplog_edge(client, -1) if server['topology'] == 'replicaset' and oplog_available(client) else None
        finally:
            client.close()
        self._run(argv, 'mongodump')
        manifest = base_manifest(name, 'mongodump', cfg, server, started)
        manifest['tool']['mongodump'] = argv[0]
        if position is not None:
            manifest['oplog_position'] = ts_doc(position)
        collections = manifest_entries_from_directory(partial, cfg['compression'], cfg['selection'])
        manifest['collections'] = collections
        if os.path.exists(os.path.join(partial, 'oplog.bson')):
            manifest['oplog'] = oplog_entry(partial, cfg['compression'])
        manifest['totals'] = totals_of(collections, manifest.get('oplog'))
        return manifest

    # ------------------------------------------------------------------ restore

    def restore_argv(self, cfg, path, manifest, pairs):
        if cfg['on_duplicate'] == 'replace':
            raise MongoBackupError('on_duplicate: replace is not supported by method: mongodump (mongorestore only inserts); '
                                   'use skip or fail, or method: pymongo')
        if manifest.get('compression') == 'zstd':
            raise MongoBackupError('method: mongodump cannot restore backup %s: it is zstd-compressed; use method: pymongo'
                                   % manifest.get('name'))
        argv = [self.binary('mongorestore'), '--dir=%s' % path, '--numParallelCollections=%d' % cfg['parallel'],
                '--batchSize=%d' % cfg['batch_size']]
        if manifest.get('compression') == 'gzip':
            argv.append('--gzip')
        if cfg['drop']:
            argv.append('--drop')
        if not cfg['restore_indexes']:
            argv.append('--noIndexRestore')
        if not cfg['restore_collection_options']:
            argv.append('--noOptionsRestore')
        if cfg['bypass_document_validation']:
            argv.append('--bypassDocumentValidation')
        if cfg['on_duplicate'] == 'fail':
            argv.append('--stopOnError')
        argv += ['--nsInclude=%s' % _escape_ns(p['source']) for p in pairs]
        for rule in cfg['mapper'].describe():
            argv += ['--nsFrom=%s' % rule['from'], '--nsTo=%s' % rule['to']]
        return argv

    def restore(self, cfg, path, manifest, pairs):
        self.secrets = set(cfg.get('secrets', ()))
        argv = self.restore_argv(cfg, path, manifest, pairs)
        out, err = self._run(argv, 'mongorestore')
        match = _RESTORED_RE.search(err + '\n' + out)
        restored = int(match.group(1)) if match else None
        failed = int(match.group(2)) if match else None
        rows = [{'source': p['source'], 'target': p['target'], 'type': p['type'], 'documents': p['entry'].get('documents', 0)} for p in pairs]
        msg = 'mongorestore restored %s documents into %d namespaces' % (restored if restored is not None else 'an unknown number of', len(rows))
        if failed:
            msg += '; %d documents failed to restore (duplicates are skipped by mongorestore)' % failed
        return {'changed': True, 'dry_run': False, 'namespaces': rows, 'msg': msg,
                'totals': {'inserted': restored, 'failed': failed, 'namespaces': len(rows)},
                'tool_output': scrub('\n'.join((err or '').strip().splitlines()[-20:]), self.secrets)}


def _escape_ns(ns):
    """Escape mongorestore namespace pattern metacharacters in an exact namespace."""
    return ns.replace('\\', '\\\\').replace('*', '\\*')


def _collection_from_file(filename, suffix):
    return unquote(filename[:-len(suffix)])


def manifest_entries_from_directory(partial, compression, selection):
    """Manifest collection entries for what mongodump wrote (unselected leftovers are removed)."""
    data_ext = '.bson.gz' if compression == 'gzip' else '.bson'
    meta_ext = '.metadata.json.gz' if compression == 'gzip' else '.metadata.json'
    entries = []
    for db_name in sorted(os.listdir(partial)):
        db_path = os.path.join(partial, db_name)
        if not os.path.isdir(db_path):
            continue
        files = sorted(os.listdir(db_path))
        metas = [f for f in files if f.endswith(meta_ext)]
        datas = set(f for f in files if f.endswith(data_ext))
        for meta_file in metas:
            stem = meta_file[:-len(meta_ext)]
            meta = parse_metadata(read_small_file(os.path.join(db_path, meta_file)), '%s/%s' % (db_name, meta_file))
            name = meta.get('collectionName') or _collection_from_file(meta_file, meta_ext)
            kind = meta.get('type') or ('view' if (meta.get('options') or {}).get('viewOn') else 'collection')
            data_file = stem + data_ext
            if not selection.wanted(db_name, name):
                for leftover in (meta_file, data_file):
                    if os.path.exists(os.path.join(db_path, leftover)):
                        os.unlink(os.path.join(db_path, leftover))
                datas.discard(data_file)
                continue
            entry = {'db': db_name, 'collection': name, 'ns': '%s.%s' % (db_name, name), 'type': kind, 'uuid': meta.get('uuid'),
                     'metadata_file': '%s/%s' % (db_name, meta_file),
                     'metadata_bytes': os.path.getsize(os.path.join(db_path, meta_file)),
                     'metadata_sha256': sha256_file(os.path.join(db_path, meta_file)),
                     'indexes': [ix.get('name') for ix in meta.get('indexes', [])], 'options': sorted(meta.get('options') or {})}
            if data_file in datas:
                datas.discard(data_file)
                scan = scan_data_file(os.path.join(db_path, data_file), compression)
                if scan['error']:
                    raise MongoBackupError('mongodump wrote an unreadable file %s/%s: %s' % (db_name, data_file, scan['error']))
                entry['file'] = '%s/%s' % (db_name, data_file)
                entry.update((k, scan[k]) for k in ('documents', 'bson_bytes', 'bson_sha256', 'file_bytes', 'sha256'))
            else:
                entry['documents'] = 0
                if kind == 'view':
                    entry['view_on'] = (meta.get('options') or {}).get('viewOn')
            entries.append(entry)
        for orphan in sorted(datas):
            raise MongoBackupError('mongodump wrote %s/%s without a metadata file' % (db_name, orphan))
        if not os.listdir(db_path):
            os.rmdir(db_path)
    stray = [f for f in os.listdir(partial) if os.path.isfile(os.path.join(partial, f)) and f not in ('oplog.bson', PARTIAL_MARKER)]
    if stray:
        raise MongoBackupError('mongodump wrote unexpected files: %s' % ', '.join(sorted(stray)))
    entries.sort(key=lambda e: (e['db'], e['collection']))
    return entries


def oplog_entry(partial, compression):
    """Manifest entry for the oplog.bson mongodump wrote (first/last ts read from the file)."""
    path = os.path.join(partial, 'oplog.bson')
    scan = scan_data_file(path, compression)
    if scan['error'] and compression != 'none':
        # be lenient about whether this mongodump version compresses oplog.bson along with the collections
        plain = scan_data_file(path, 'none')
        if not plain['error']:
            scan, compression = plain, 'none'
    if scan['error']:
        raise MongoBackupError('mongodump wrote an unreadable oplog.bson: %s' % scan['error'])
    first = last = None
    with open(path, 'rb') as raw:
        for doc in iter_raw_documents(open_decompressed(raw, compression), 'oplog.bson'):
            ts = RawBSONDocument(doc, raw_codec_options()).get('ts')
            first = first if first is not None else ts
            last = ts
    entry = {'file': 'oplog.bson', 'compression': compression, 'entries': scan['documents'], 'first_ts': ts_doc(first),
             'last_ts': ts_doc(last), 'tool': TOOL_NAME}
    entry.update((k, scan[k]) for k in ('documents', 'bson_bytes', 'bson_sha256', 'file_bytes', 'sha256'))
    return entry
