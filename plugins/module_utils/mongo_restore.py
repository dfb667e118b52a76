# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore of a verified backup through pymongo.

Order of work:

1. The whole backup is verified against its manifest (sha256 of every file,
   sizes, document counts, no missing or unknown files, manifest sidecar hash).
   Any mismatch refuses the restore, naming the files, before the target
   server is even contacted.
2. Selection (databases/namespaces filters) and renaming (``ns_from``/``ns_to``)
   give the source -> target namespaces; a dry run (or check mode) stops here and
   reports them with document counts and what would happen to each target.
3. Per collection (``parallel`` at a time): drop the target when ``drop``,
   create it with its options (capped, size, max, validator, collation ...) when
   it does not exist, insert the documents as raw BSON in batches bounded by
   count (``batch_size``) and bytes (``restore_batch_bytes``, at most 48 MB), then
   build the indexes from the metadata (unless ``restore_indexes`` is false).
   In merge mode (``drop: false``) documents whose ``_id`` or unique key exists
   are counted and skipped, replaced, or fail the restore (``on_duplicate``).
4. Views are created last, with ``viewOn`` renamed along with its collection.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import os

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_backup_ops import resolve_backup
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    HAS_PYMONGO, Cancelled, MongoBackupError, PyMongoError, error_text, raw_codec_options, run_cancellable,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import (
    iter_raw_documents, open_decompressed, parse_metadata, read_small_file,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import verify_backup
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_select import INTERNAL_DATABASES, check_target_ns, split_ns

if HAS_PYMONGO:
    from bson.raw_bson import RawBSONDocument
    from bson.son import SON
    from pymongo.errors import BulkWriteError, DuplicateKeyError
else:  # pragma: no cover
    RawBSONDocument = SON = None
    BulkWriteError = DuplicateKeyError = Exception

MAX_BATCH_BYTES = 48000000
DUPLICATE_KEY = 11000


def verified_manifest(path, workers=1):
    """The manifest of a backup that verifies cleanly, or MongoBackupError naming every bad file."""
    result = verify_backup(path, workers=workers)
    if not result['ok']:
        raise MongoBackupError('refusing to restore %s: it does not match its manifest (nothing was changed on the server): %s'
                               % (path, '; '.join(result['errors'][:10])), errors=result['errors'])
    return result['manifest']


def plan_restore(manifest, selection, mapper, include_internal=False):
    """Source -> target pairs for the selected collections and views (collections first)."""
    pairs = []
    targets = {}
    for entry in manifest.get('collections', []):
        if not selection.wanted(entry['db'], entry['collection']):
            continue
        target = mapper.map(entry['ns'])
        target_db, target_coll = check_target_ns(target, entry['ns'])
        if target_db in INTERNAL_DATABASES and not include_internal:
            raise MongoBackupError('ns_to: %s would be restored into the internal database %s; set include_internal_databases: true '
                                   'if that is really wanted' % (entry['ns'], target_db))
        if target in targets:
            raise MongoBackupError('ns_from/ns_to: both %s and %s would be restored into %s' % (targets[target], entry['ns'], target))
        targets[target] = entry['ns']
        pairs.append({'entry': entry, 'source': entry['ns'], 'target': target, 'db': target_db, 'collection': target_coll,
                      'type': entry['type']})
    pairs.sort(key=lambda p: (p['type'] != 'collection', p['source']))
    return pairs


def _existing(client, pairs):
    """{target ns: listCollections info} for the targets that exist."""
    found = {}
    for db_name in sorted(set(p['db'] for p in pairs)):
        names = [p['collection'] for p in pairs if p['db'] == db_name]
        for info in client[db_name].list_collections(filter={'name': {'$in': names}}):
            found['%s.%s' % (db_name, info['name'])] = info
    return found


def describe_plan(client, pairs, cfg):
    """Dry-run rows: what would happen to each target namespace."""
    existing = _existing(client, pairs) if client is not None else {}
    rows = []
    for pair in pairs:
        info = existing.get(pair['target'])
        row = {'source': pair['source'], 'target': pair['target'], 'type': pair['type'],
               'documents': pair['entry'].get('documents', 0), 'indexes': len(pair['entry'].get('indexes') or []),
               'target_exists': info is not None}
        if info is not None and info.get('type', 'collection') == 'collection':
            row['target_documents'] = client[pair['db']][pair['collection']].estimated_document_count()
        if cfg['drop']:
            row['action'] = 'drop and restore' if info is not None else 'create and restore'
        elif info is None:
            row['action'] = 'create and restore'
        else:
            row['action'] = 'merge into the existing %s' % info.get('type', 'collection')
        rows.append(row)
    return rows


def _clean_index(spec):
    return SON((k, v) for k, v in spec.items() if k != 'ns')


def _create_options(meta):
    options = meta.get('options') or {}
    return [(k, v) for k, v in options.items() if k not in ('uuid', 'idIndex')]


def restore_collection(client, backup_path, manifest, pair, cfg, stop):
    """Restore one collection; returns its result row."""
    entry = pair['entry']
    db = client[pair['db']]
    meta = parse_metadata(read_small_file(os.path.join(backup_path, entry['metadata_file'])), entry['metadata_file'])
    row = {'source': pair['source'], 'target': pair['target'], 'type': 'collection', 'documents': entry.get('documents', 0),
           'inserted': 0, 'duplicates': 0, 'replaced': 0, 'dropped': False, 'created': False, 'indexes_created': 0, 'warnings': []}
    if cfg['drop']:
        db.drop_collection(pair['collection'])
        row['dropped'] = True
    exists = bool(db.list_collection_names(filter={'name': pair['collection']}))
    if not exists:
        options = _create_options(meta) if cfg['restore_collection_options'] else []
        db.command(SON([('create', pair['collection'])] + options))
        row['created'] = True
    elif cfg['restore_collection_options'] and _create_options(meta):
        row['warnings'].append('%s exists; its options were left as they are (use drop: true to recreate them from the backup)'
                               % pair['target'])
    coll = db.get_collection(pair['collection'])
    batch, batch_bytes = [], 0
    limit_docs, limit_bytes = cfg['batch_size'], cfg['restore_batch_bytes']
    compression = manifest.get('compression', 'none')
    codec = raw_codec_options()
    with open(os.path.join(backup_path, entry['file']), 'rb') as raw:
        stream = open_decompressed(raw, compression)
        for doc in iter_raw_documents(stream, entry['file']):
            if batch and (len(batch) >= limit_docs or batch_bytes + len(doc) > limit_bytes):
                _insert_batch(coll, batch, row, cfg)
                batch, batch_bytes = [], 0
                if stop.is_set():
                    raise Cancelled()
            batch.append(RawBSONDocument(doc, codec))
            batch_bytes += len(doc)
        if batch:
            _insert_batch(coll, batch, row, cfg)
    if cfg['restore_indexes']:
        specs = [_clean_index(ix) for ix in meta.get('indexes', []) if ix.get('name') != '_id_']
        if specs:
            reply = db.command(SON([('createIndexes', pair['collection']), ('indexes', specs)]))
            row['indexes_created'] = max(0, reply.get('numIndexesAfter', 0) - reply.get('numIndexesBefore', 0))
    return row


def _insert_batch(coll, batch, row, cfg):
    try:
        coll.insert_many(batch, ordered=False, bypass_document_validation=cfg['bypass_document_validation'])
        row['inserted'] += len(batch)  # inserted_ids stays empty for RawBSONDocument batches
        return
    except BulkWriteError as exc:
        details = exc.details or {}
    row['inserted'] += details.get('nInserted', 0)
    write_errors = details.get('writeErrors') or []
    duplicates = [e for e in write_errors if e.get('code') == DUPLICATE_KEY]
    others = [e for e in write_errors if e.get('code') != DUPLICATE_KEY]
    if others:
        first = others[0]
        raise MongoBackupError('%s: %d documents were rejected by the server (first: code %s, %s)' % (
            row['target'], len(others), first.get('code'), str(first.get('errmsg'))[:300]))
    if not duplicates:
        return
    if cfg['on_duplicate'] == 'fail':
        raise MongoBackupError('%s: %d documents clash with existing documents on a unique key (first: %s); the target is partly '
                               'restored. Use drop: true, or on_duplicate: skip or replace' % (
                                   row['target'], len(duplicates), str(duplicates[0].get('errmsg'))[:300]))
    if cfg['on_duplicate'] == 'skip':
        row['duplicates'] += len(duplicates)
        return
    for error in duplicates:
        doc = batch[error['index']]
        try:
            coll.replace_one({'_id': doc['_id']}, doc, upsert=True, bypass_document_validation=cfg['bypass_document_validation'])
        except DuplicateKeyError as exc:
            raise MongoBackupError('%s: cannot replace the document with _id %r: it clashes on another unique index (%s)'
                                   % (row['target'], doc['_id'], str(exc)[:200]))
        row['replaced'] += 1


def restore_view(client, pair, mapper, backup_path, cfg):
    """Create one view (viewOn follows the namespace renaming when it stays in the same database)."""
    entry = pair['entry']
    meta = parse_metadata(read_small_file(os.path.join(backup_path, entry['metadata_file'])), entry['metadata_file'])
    options = meta.get('options') or {}
    row = {'source': pair['source'], 'target': pair['target'], 'type': 'view', 'dropped': False, 'created': False, 'warnings': []}
    view_on = options.get('viewOn')
    if not view_on:
        raise MongoBackupError('%s: the view has no viewOn in %s' % (pair['source'], entry['metadata_file']))
    source_db = split_ns(pair['source'])[0]
    mapped_db, mapped_coll = split_ns(mapper.map('%s.%s' % (source_db, view_on)))
    if mapped_db == pair['db']:
        view_on = mapped_coll
    else:
        row['warnings'].append('%s: viewOn %s.%s maps to database %s, not %s; the view keeps viewOn %s' % (
            pair['target'], source_db, view_on, mapped_db, pair['db'], view_on))
    row['view_on'] = view_on
    db = client[pair['db']]
    if cfg['drop']:
        db.drop_collection(pair['collection'])
        row['dropped'] = True
    existing = list(db.list_collections(filter={'name': pair['collection']}))
    if existing:
        current = existing[0].get('options') or {}
        if existing[0].get('type') == 'view' and current.get('viewOn') == view_on and current.get('pipeline') == options.get('pipeline', []):
            return row
        raise MongoBackupError('%s already exists with a different definition; use drop: true to replace it' % pair['target'])
    command = [('create', pair['collection']), ('viewOn', view_on), ('pipeline', options.get('pipeline', []))]
    if options.get('collation'):
        command.append(('collation', options['collation']))
    db.command(SON(command))
    row['created'] = True
    return row


def restore(cfg, connect, check_mode=False, tools=None):
    """Verify, plan and (unless dry run / check mode) restore; returns the module result."""
    path = resolve_backup(cfg['backup_dir'], cfg.get('backup_name'))
    manifest = verified_manifest(path, cfg['parallel'])
    pairs = plan_restore(manifest, cfg['selection'], cfg['mapper'], cfg['selection'].include_internal)
    if not pairs:
        raise MongoBackupError('nothing to restore: no collection of backup %s matches the databases/namespaces filters (%s)'
                               % (os.path.basename(path), ', '.join(sorted(set(c['db'] for c in manifest.get('collections', [])))) or 'empty backup'))
    dry = cfg['dry_run'] or check_mode
    base = {'backup': {'name': manifest.get('name'), 'path': path, 'created': manifest.get('started_at'), 'verified': True},
            'mapping': cfg['mapper'].describe()}
    if cfg['method'] == 'mongodump' and not dry:
        result = tools.restore(cfg, path, manifest, pairs)
        result.update(base)
        return result
    client = connect()
    try:
        if dry:
            rows = describe_plan(client, pairs, cfg)
            result = dict(base, changed=False if cfg['dry_run'] else True, dry_run=True, namespaces=rows,
                          msg='%s: would restore %d documents into %d namespaces from %s' % (
                              'dry run' if cfg['dry_run'] else 'check mode', sum(r['documents'] for r in rows), len(rows),
                              os.path.basename(path)))
            return result
        rows = _restore_all(client, path, manifest, pairs, cfg)
    finally:
        client.close()
    totals = {k: sum(r.get(k, 0) for r in rows) for k in ('inserted', 'duplicates', 'replaced', 'indexes_created')}
    totals['namespaces'] = len(rows)
    warnings = [w for r in rows for w in r.pop('warnings', [])]
    msg = 'restored %d documents into %d namespaces from %s' % (totals['inserted'], len(rows), os.path.basename(path))
    if totals['duplicates']:
        msg += '; %d documents skipped as duplicates (on_duplicate=skip)' % totals['duplicates']
    if totals['replaced']:
        msg += '; %d existing documents replaced' % totals['replaced']
    return dict(base, changed=True, dry_run=False, namespaces=rows, totals=totals, warnings=warnings, msg=msg)


def _restore_all(client, path, manifest, pairs, cfg):
    secrets = cfg.get('secrets', ())
    collections = [p for p in pairs if p['type'] == 'collection']
    views = [p for p in pairs if p['type'] == 'view']

    def work(pair, stop):
        return restore_collection(client, path, manifest, pair, cfg, stop)

    def on_error(pair, exc):
        if isinstance(exc, MongoBackupError):
            return exc.msg
        return '%s -> %s: %s' % (pair['source'], pair['target'], error_text(exc, secrets))

    by_index, errors = run_cancellable(collections, work, cfg['parallel'], on_error, (MongoBackupError, PyMongoError))
    results = dict((collections[index]['source'], value) for index, value in by_index.items())
    if errors:
        raise MongoBackupError('restore failed: %s' % '; '.join(errors[:5]), errors=errors,
                               namespaces=list(results.values()))
    for pair in views:
        try:
            results[pair['source']] = restore_view(client, pair, cfg['mapper'], path, cfg)
        except PyMongoError as exc:
            raise MongoBackupError('restore failed: view %s -> %s: %s' % (pair['source'], pair['target'], error_text(exc, secrets)),
                                   namespaces=list(results.values()))
    return [results[p['source']] for p in pairs if p['source'] in results]
