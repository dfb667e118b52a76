"""Damaged backups: verify detects each kind of damage naming the file, restore refuses before touching the server."""

import json
import os

import pytest

from mongo_backup_support import snapshot  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import read_latest


# zstd joins in when the optional zstandard library is importable (checked for real in a scratch environment)
@pytest.fixture(params=['gzip', 'none'] + (['zstd'] if mongo_common.HAS_ZSTD else []))
def backup(request, client, make_db, mb):
    db = make_db('_damage')
    db.orders.insert_many([{'_id': i, 'sku': 'SKU-%04d' % i, 'qty': i % 13, 'note': 'n' * (i % 50)} for i in range(3000)])
    db.users.insert_many([{'_id': i, 'name': 'user %d' % i} for i in range(50)])
    db.orders.create_index('sku', unique=True)
    db.command('create', 'recent', viewOn='orders', pipeline=[{'$match': {'qty': {'$gt': 10}}}])
    result = mb.dump(databases=[db.name], compression=request.param)
    ext = {'gzip': '.gz', 'zstd': '.zst', 'none': ''}[request.param]
    meta_ext = '.gz' if request.param == 'gzip' else ''
    return {'db': db, 'name': result['backup']['name'], 'path': mb.path(result['backup']['name']), 'ext': ext,
            'data': '%s/orders.bson%s' % (db.name, ext), 'meta': '%s/orders.metadata.json%s' % (db.name, meta_ext),
            'view_meta': '%s/recent.metadata.json%s' % (db.name, meta_ext), 'before': snapshot(client, [db.name])}


def flip_bit(path, offset=None):
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, 'r+b') as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))


def truncate(path, keep=None):
    size = os.path.getsize(path)
    with open(path, 'r+b') as fh:
        fh.truncate(keep if keep is not None else size - 100)


def tamper_manifest(path):
    manifest_path = os.path.join(path, 'manifest.json')
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    for coll in manifest['collections']:
        if coll['collection'] == 'orders':
            coll['documents'] -= 1
    with open(manifest_path, 'w') as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)


DAMAGE = {
    'flipped-bit': (lambda b: flip_bit(os.path.join(b['path'], b['data'])), lambda b: b['data'], 'sha256 mismatch'),
    'flipped-bit-in-first-header': (lambda b: flip_bit(os.path.join(b['path'], b['data']), 1 if b['ext'] else 2),
                                    lambda b: b['data'], 'sha256 mismatch'),
    'truncated': (lambda b: truncate(os.path.join(b['path'], b['data'])), lambda b: b['data'], 'truncated'),
    'truncated-to-empty': (lambda b: truncate(os.path.join(b['path'], b['data']), 0), lambda b: b['data'], 'size mismatch'),
    'missing-data-file': (lambda b: os.unlink(os.path.join(b['path'], b['data'])), lambda b: b['data'], 'missing'),
    'missing-metadata': (lambda b: os.unlink(os.path.join(b['path'], b['view_meta'])), lambda b: b['view_meta'], 'missing'),
    'edited-metadata': (lambda b: flip_bit(os.path.join(b['path'], b['meta']), 20), lambda b: b['meta'], 'sha256 mismatch'),
    'tampered-manifest': (lambda b: tamper_manifest(b['path']), lambda b: 'manifest.json', 'the manifest was modified'),
    'missing-manifest-sidecar': (lambda b: os.unlink(os.path.join(b['path'], 'manifest.json.sha256')), lambda b: 'manifest.json.sha256',
                                 'missing'),
    'extra-file': (lambda b: open(os.path.join(b['path'], b['db'].name, 'intruder.bson'), 'wb').close(),
                   lambda b: '%s/intruder.bson' % b['db'].name, 'unexpected file'),
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damage_is_detected_and_restore_refuses(client, make_db, mb, backup, damage):
    apply, culprit, phrase = DAMAGE[damage]
    apply(backup)
    rel = culprit(backup)

    result = mb.verify(backup_name=backup['name'])
    assert not result['verified']
    errors = result['backups'][0]['errors']
    assert any(e.startswith(rel + ':') and phrase in e for e in errors), errors
    assert rel in result['msg']
    listing = mb.list()
    assert listing['backups'][0]['status'] == 'corrupt'

    # restore refuses, naming the file, and leaves both possible targets untouched
    target = make_db('_target')
    for kwargs in ({'ns_from': ['%s.*' % backup['db'].name], 'ns_to': ['%s.*' % target.name]}, {'drop': True}):
        with pytest.raises(MongoBackupError) as info:
            mb.restore(backup_name=backup['name'], **kwargs)
        assert 'refusing to restore' in info.value.msg and rel in info.value.msg
    assert target.name not in client.list_database_names()
    assert snapshot(client, [backup['db'].name]) == backup['before']


def test_corrupt_latest_is_repointed_to_the_newest_verified_backup(client, make_db, mb):
    db = make_db('_repoint')
    db.c.insert_many([{'_id': i} for i in range(100)])
    mb.dump(databases=[db.name], backup_name='older')
    mb.dump(databases=[db.name], backup_name='newer')
    assert read_latest(mb.root) == 'newer'
    flip_bit(mb.path('newer', db.name, 'c.bson.gz'))
    result = mb.verify()
    assert not result['verified'] and result['latest_changed'] and result['latest'] == 'older'
    assert [b['ok'] for b in result['backups']] == [False, True]
    assert {b['name']: b['status'] for b in mb.list()['backups']} == {'newer': 'corrupt', 'older': 'verified'}
    # check mode verifies but records nothing and moves nothing
    flip_bit(mb.path('older', db.name, 'c.bson.gz'))
    checked = mb.verify(check_mode=True)
    assert not checked['verified'] and not checked['latest_changed'] and read_latest(mb.root) == 'older'
