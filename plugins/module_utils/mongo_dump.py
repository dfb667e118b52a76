# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming logical dump through pymongo, atomic completion, and the ``latest`` pointer.

Memory stays bounded whatever the collection sizes: each collection is read
with a batched cursor whose documents are ``RawBSONDocument`` (the bytes the
server sent, never decoded or re-encoded) and appended to the data file through
a 1 MiB buffer; at most ``parallel`` collections are in flight.

A dump is written to ``<root>/.partial-<name>-<pid>``, its manifest is written
last, the whole directory is re-read against the manifest, and only then is it
renamed to ``<root>/<name>`` and ``latest`` repointed (rename of a temporary
symlink). A dump that is killed leaves only a ``.partial-*`` directory, which
the next dump or prune removes once its owner is gone.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import os
import platform
import shutil
import socket
import time

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_backup_ops import plan_prune, prune_locked
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    HAS_PYMONGO, TOOL_NAME, TOOL_VERSION, Cancelled, MongoBackupError, PyMongoError, error_text, raw_codec_options, run_cancellable,
    server_info,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import (
    DataFileWriter, build_metadata, data_file_name, metadata_bytes, metadata_file_name, write_small_file,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import (
    DIR_MODE, FORMAT, MANIFEST, PARTIAL_MARKER, RootLock, create_partial, fsync_dir, iso, list_backups, read_latest,
    record_verification, set_latest, stale_partials, utc_now, validate_name, verify_backup, write_manifest,
)

if HAS_PYMONGO:
    import pymongo
else:  # pragma: no cover
    pymongo = None

DEFAULT_NAME_FORMAT = '%Y%m%dT%H%M%SZ'


# --------------------------------------------------------------------------- naming

def resolve_backup_name(pattern, root, now=None):
    """``(name, explicit)``: the new backup's name.

    No pattern: the UTC time as ``20261122T020000Z``. A pattern with ``%`` is a
    strftime format applied to the UTC time. Generated names that already exist
    get a ``-2``, ``-3`` ... suffix; an explicit name is returned as is.
    """
    now = now or utc_now()
    explicit = bool(pattern) and '%' not in pattern
    name = pattern if explicit else now.strftime(pattern or DEFAULT_NAME_FORMAT)
    validate_name(name)
    if not explicit:
        base, counter = name, 1
        while os.path.lexists(os.path.join(root, name)):
            counter += 1
            name = '%s-%d' % (base, counter)
    return name, explicit


# --------------------------------------------------------------------------- plan

def ts_doc(ts):
    """A BSON Timestamp as JSON-friendly ``{"t", "i", "time"}``."""
    if ts is None:
        return None
    return {'t': ts.time, 'i': ts.inc, 'time': iso(ts.as_datetime())}


def plan_collections(client, selection, estimate=False):
    """The collections and views a dump covers, sorted by database and name."""
    tasks = []
    skipped = []
    for db_name in sorted(client.list_database_names()):
        if not selection.database_wanted(db_name):
            continue
        for info in client[db_name].list_collections():
            name = info['name']
            kind = info.get('type', 'collection')
            if not selection.wanted(db_name, name):
                continue
            if kind not in ('collection', 'view'):
                skipped.append({'ns': '%s.%s' % (db_name, name), 'type': kind,
                                'reason': '%s collections are not supported by method=pymongo; use method=mongodump' % kind})
                continue
            uuid = (info.get('info') or {}).get('uuid')
            task = {
                'db': db_name, 'name': name, 'ns': '%s.%s' % (db_name, name), 'type': kind,
                'options': info.get('options') or {},
                'uuid': bytes(uuid).hex() if uuid is not None and getattr(uuid, 'subtype', None) == 4 else None,
            }
            if estimate and kind == 'collection':
                task['estimated_documents'] = client[db_name][name].estimated_document_count()
            tasks.append(task)
    tasks.sort(key=lambda t: (t['db'], t['name']))
    return tasks, skipped


# --------------------------------------------------------------------------- oplog

def oplog_available(client):
    try:
        return bool(client.local.list_collection_names(filter={'name': 'oplog.rs'}))
    except PyMongoError:
        return False


def oplog_edge(client, direction):
    """Timestamp of the newest (direction=-1) or oldest (1) oplog entry, or None."""
    doc = client.local['oplog.rs'].find_one({}, sort=[('$natural', direction)], projection={'ts': 1, '_id': 0})
    return doc.get('ts') if doc else None


def check_oplog_entry(doc):
    """Refuse oplog entries mongorestore cannot replay (as mongodump does)."""
    ns = doc.get('ns')
    obj = doc.get('o') or {}
    if ns == 'admin.system.version':
        raise MongoBackupError('cannot dump with oplog=true while admin.system.version is modified (ts %s)' % doc.get('ts'))
    if 'renameCollection' in obj:
        raise MongoBackupError('cannot dump with oplog=true while collections are renamed (renameCollection at ts %s); run the dump again'
                               % doc.get('ts'))


def dump_oplog(client, partial, start, end, compression, level, batch_size):
    """Write the oplog entries with start <= ts <= end to oplog.bson; returns the manifest entry."""
    if start is None or end is None:
        raise MongoBackupError('oplog=true: the oplog (local.oplog.rs) has no entries to bound the dump')
    oldest = oplog_edge(client, 1)
    if oldest is not None and oldest > start:
        raise MongoBackupError('oplog=true: the oplog rolled over during the dump (its oldest entry %s is newer than the start %s); '
                               'increase the oplog size or dump faster (higher parallel)' % (ts_doc(oldest), ts_doc(start)))
    rel = 'oplog.bson'
    writer = DataFileWriter(os.path.join(partial, rel), compression, level)
    first = last = None
    try:
        coll = client.local.get_collection('oplog.rs', codec_options=raw_codec_options())
        for doc in coll.find({'$and': [{'ts': {'$gte': start}}, {'ts': {'$lte': end}}]}, batch_size=batch_size):
            check_oplog_entry(doc)
            if first is None:
                first = doc['ts']
            last = doc['ts']
            writer.write_document(doc.raw)
    except BaseException:
        writer.abort()
        raise
    figures = writer.close()
    entry = {'file': rel, 'compression': compression, 'entries': figures['documents'], 'documents': figures['documents'], 'start_ts': ts_doc(start),
             'end_ts': ts_doc(end), 'first_ts': ts_doc(first), 'last_ts': ts_doc(last)}
    entry.update((k, v) for k, v in figures.items() if k != 'documents')
    return entry


# --------------------------------------------------------------------------- collections

def dump_collection(client, task, partial, compression, level, batch_size, stop, hooks=None):
    """Dump one collection or view into the partial directory; returns its manifest entry."""
    db_name, name = task['db'], task['name']
    os.makedirs(os.path.join(partial, db_name), mode=DIR_MODE, exist_ok=True)
    entry = {'db': db_name, 'collection': name, 'ns': task['ns'], 'type': task['type'], 'uuid': task.get('uuid')}
    indexes = []
    if task['type'] == 'collection':
        indexes = list(client[db_name][name].list_indexes())
    meta = build_metadata(name, task['type'], task['options'], indexes, task.get('uuid'))
    meta_rel = metadata_file_name(db_name, name, compression)
    size, digest = write_small_file(os.path.join(partial, meta_rel), metadata_bytes(meta), compression)
    entry.update(metadata_file=meta_rel, metadata_bytes=size, metadata_sha256=digest,
                 indexes=[ix.get('name') for ix in indexes], options=sorted(task['options']))
    if task['type'] == 'view':
        entry.update(view_on=task['options'].get('viewOn'), documents=0)
        return entry
    rel = data_file_name(db_name, name, compression)
    writer = DataFileWriter(os.path.join(partial, rel), compression, level)
    try:
        coll = client.get_database(db_name, codec_options=raw_codec_options()).get_collection(name)
        cursor = coll.find({}, batch_size=batch_size)
        try:
            for count, doc in enumerate(cursor, 1):
                writer.write_document(doc.raw)
                if count % batch_size == 0:
                    if stop.is_set():
                        raise Cancelled()
                    if hooks and hooks.get('batch'):
                        hooks['batch'](task, count)
        finally:
            cursor.close()
    except BaseException:
        writer.abort()
        raise
    figures = writer.close()
    entry['file'] = rel
    entry.update(figures)
    return entry


def run_collections(client, tasks, partial, cfg, hooks=None):
    """Dump every task with at most cfg['parallel'] in flight; the first failure cancels the rest."""
    secrets = cfg.get('secrets', ())

    def work(task, stop):
        return dump_collection(client, task, partial, cfg['compression'], cfg['compression_level'], cfg['batch_size'], stop, hooks)

    def on_error(task, exc):
        if isinstance(exc, MongoBackupError):
            return '%s: %s' % (task['ns'], exc.msg)
        if isinstance(exc, PyMongoError):
            return '%s: %s' % (task['ns'], error_text(exc, secrets))
        return '%s: %s: %s' % (task['ns'], type(exc).__name__, exc)

    results, errors = run_cancellable(tasks, work, cfg['parallel'], on_error, (MongoBackupError, PyMongoError, OSError, ValueError))
    if errors:
        raise MongoBackupError('dump failed: %s' % '; '.join(errors[:5]), errors=errors)
    return [results[index] for index in range(len(tasks))]


# --------------------------------------------------------------------------- manifest and completion

def totals_of(collections, oplog=None):
    data = [c for c in collections if c['type'] == 'collection']
    file_bytes = sum(c.get('file_bytes', 0) + c.get('metadata_bytes', 0) for c in collections)
    if oplog:
        file_bytes += oplog.get('file_bytes', 0)
    return {
        'collections': len(data),
        'views': len(collections) - len(data),
        'databases': len(set(c['db'] for c in collections)),
        'documents': sum(c.get('documents', 0) for c in data),
        'bson_bytes': sum(c.get('bson_bytes', 0) for c in data),
        'file_bytes': file_bytes,
    }


def base_manifest(name, method, cfg, server, started):
    return {
        'format': FORMAT,
        'status': 'in-progress',
        'name': name,
        'method': method,
        'tool': {'name': TOOL_NAME, 'version': TOOL_VERSION, 'python': platform.python_version(),
                 'pymongo': getattr(pymongo, 'version', None)},
        'host': socket.gethostname(),
        'server': server,
        'started_at': iso(started),
        'compression': cfg['compression'],
        'compression_level': cfg['compression_level'] if cfg['compression'] != 'none' else None,
        'options': {
            'batch_size': cfg['batch_size'], 'parallel': cfg['parallel'], 'read_preference': cfg.get('read_preference') or 'primary',
            'oplog': cfg['oplog'], 'selection': cfg['selection'].describe(),
        },
    }


def finalize(root, partial, name, manifest, started, update_latest=True, clock=time.monotonic, t0=None, workers=1):
    """Write the manifest, verify the partial dir, rename it into place, repoint ``latest``; returns (path, verification)."""
    finished = utc_now()
    manifest['finished_at'] = iso(finished)
    manifest['duration_seconds'] = round((clock() - t0) if t0 is not None else (finished - started).total_seconds(), 3)
    manifest['status'] = 'complete'
    write_manifest(partial, manifest)
    result = verify_backup(partial, workers=workers)
    if not result['ok']:
        raise MongoBackupError('the dump did not verify against its own manifest, so it was discarded: %s'
                               % '; '.join(result['errors'][:5]), errors=result['errors'])
    record_verification(partial, result)
    final = os.path.join(root, name)
    if os.path.lexists(final):
        raise MongoBackupError('%s appeared while the dump ran; the new backup stays in %s' % (final, partial))
    # the owner marker goes along (a crash before this rename leaves a partial dir whose owner is known) and is removed after it
    os.rename(partial, final)
    fsync_dir(root)
    os.unlink(os.path.join(final, PARTIAL_MARKER))
    if update_latest:
        set_latest(root, name)
    return final, result


def cleanup_partials(root, max_age_hours, check_mode=False):
    """Remove stale ``.partial-*`` directories; returns what was (or would be) removed."""
    removed = []
    for info in stale_partials(root, max_age_hours):
        if not check_mode:
            shutil.rmtree(info['path'], ignore_errors=True)
        removed.append({'name': info['name'], 'pid': info.get('pid'), 'reason': info['reason']})
    return removed


def existing_backup(root, name):
    """Status of an existing backup of that name, or None."""
    path = os.path.join(root, name)
    if not os.path.lexists(path):
        return None
    backups, _partials, _foreign = list_backups(root)
    for info in backups:
        if info['name'] == name:
            return info
    return {'name': name, 'path': path, 'status': 'not-a-backup'}


def dump(cfg, connect, check_mode=False, hooks=None, tools=None):
    """Run a dump (or, in check mode, report what it would do). Returns the module result (without changed)."""
    root = cfg['backup_dir']
    name, explicit = resolve_backup_name(cfg.get('backup_name'), root)
    if explicit:
        existing = existing_backup(root, name)
        if existing is not None:
            if existing['status'] in ('verified', 'complete'):
                return {'changed': False, 'msg': 'backup %s already exists (%s); nothing to do' % (name, existing['status']),
                        'backup': existing}
            raise MongoBackupError('backup_name: %s already exists in %s with status %s; remove it or choose another name'
                                   % (name, root, existing['status']))
    if check_mode:
        return _dump_check_mode(cfg, connect, root, name)
    if not os.path.isdir(root):
        os.makedirs(root, DIR_MODE)
    with RootLock(root, cfg.get('lock_timeout', 0)):
        removed = cleanup_partials(root, cfg['partial_max_age_hours'])
        result = _dump_locked(cfg, connect, root, name, hooks, tools)
        result['partials_removed'] = removed
        if cfg.get('prune'):
            result['retention'] = prune_locked(cfg, check_mode=False)
    return result


def _dump_check_mode(cfg, connect, root, name):
    client = connect()
    try:
        server = server_info(client)
        _check_oplog_possible(cfg, client, server)
        tasks, skipped = plan_collections(client, cfg['selection'], estimate=True)
    finally:
        client.close()
    would_remove = [{'name': p['name'], 'pid': p.get('pid'), 'reason': p['reason']}
                    for p in stale_partials(root, cfg['partial_max_age_hours'])]
    result = {
        'changed': True,
        'msg': 'check mode: would dump %d collections and %d views into %s' % (
            sum(1 for t in tasks if t['type'] == 'collection'), sum(1 for t in tasks if t['type'] == 'view'), os.path.join(root, name)),
        'backup': {'name': name, 'path': os.path.join(root, name), 'status': 'planned'},
        'collections': [{'ns': t['ns'], 'type': t['type'], 'estimated_documents': t.get('estimated_documents')} for t in tasks],
        'skipped': skipped,
        'partials_removed': would_remove,
        'server': server,
        'latest': read_latest(root) if os.path.isdir(root) else None,
    }
    if cfg.get('prune'):
        result['retention'] = plan_prune(cfg, extra_new=name)
    return result


def _check_oplog_possible(cfg, client, server):
    if not cfg['oplog']:
        return
    if server['topology'] != 'replicaset':
        raise MongoBackupError('oplog: true needs a replica set member, but %s is a %s server (hello reports no setName); '
                               'set oplog: false or point the module at a replica set' % (cfg['target'], server['topology']))
    if not oplog_available(client):
        raise MongoBackupError('oplog: true, but %s has no readable local.oplog.rs (the user needs read access to the local '
                               'database)' % cfg['target'])


def _dump_locked(cfg, connect, root, name, hooks, tools):
    started = utc_now()
    t0 = time.monotonic()
    partial = create_partial(root, name)
    try:
        if cfg['method'] == 'mongodump':
            manifest = tools.dump(cfg, partial, name, started)
        else:
            manifest = _dump_pymongo(cfg, connect, partial, name, started, hooks)
        if hooks and hooks.get('before_finalize'):
            hooks['before_finalize'](partial)
        final, verification = finalize(root, partial, name, manifest, started, cfg.get('update_latest', True), t0=t0,
                                       workers=cfg['parallel'])
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    elapsed = max(time.monotonic() - t0, 1e-6)
    totals = manifest['totals']
    result = {
        'changed': True,
        'msg': 'dumped %d documents from %d collections (%d views) into %s and verified it' % (
            totals['documents'], totals['collections'], totals['views'], final),
        'backup': {'name': name, 'path': final, 'status': 'verified', 'created': manifest['started_at'],
                   'size_bytes': totals['file_bytes'], 'documents': totals['documents'], 'collections': totals['collections'],
                   'views': totals['views'], 'files_checked': verification['files_checked']},
        'collections': [{k: c[k] for k in ('ns', 'type', 'documents', 'bson_bytes', 'file_bytes', 'file') if c.get(k) is not None}
                        for c in manifest['collections']],
        'skipped': manifest.get('skipped', []),
        'server': manifest.get('server'),
        'latest': read_latest(root),
        'duration_seconds': round(elapsed, 3),
        'throughput_mb_s': round(totals['bson_bytes'] / 1e6 / elapsed, 2),
    }
    for key in ('oplog', 'oplog_position'):
        if manifest.get(key):
            result[key] = manifest[key]
    return result


def _dump_pymongo(cfg, connect, partial, name, started, hooks):
    client = connect()
    try:
        server = server_info(client)
        server['target'] = cfg['target']
        _check_oplog_possible(cfg, client, server)
        manifest = base_manifest(name, 'pymongo', cfg, server, started)
        position = oplog_edge(client, -1) if server['topology'] == 'replicaset' and oplog_available(client) else None
        if position is not None:
            manifest['oplog_position'] = ts_doc(position)
        tasks, skipped = plan_collections(client, cfg['selection'])
        manifest['skipped'] = skipped
        collections = run_collections(client, tasks, partial, cfg, hooks)
        if cfg['oplog']:
            end = oplog_edge(client, -1)
            manifest['oplog'] = dump_oplog(client, partial, position, end, cfg['compression'], cfg['compression_level'], cfg['batch_size'])
    finally:
        client.close()
    manifest['collections'] = collections
    manifest['totals'] = totals_of(collections, manifest.get('oplog'))
    return manifest


def manifest_path(root, name):
    return os.path.join(root, name, MANIFEST)
