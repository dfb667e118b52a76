"""Round trips through mongo_backup: dump -> drop -> restore gives byte-identical documents, the same options, indexes and views.

Runs against the stand-in server, or unchanged against a real one with MONGODB_TEST_URI (throwaway databases only).
"""

import gzip
import json
import os

import pytest
from pymongo import MongoClient, monitoring

from mongo_backup_support import RAW, build_dataset, collection_hashes, snapshot, total_documents  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError, connect
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import load_manifest, read_latest
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_module import build_config
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_restore import restore


@pytest.fixture
def dataset(make_db):
    return build_dataset(make_db)


def drop_all(client, names):
    for name in names:
        client.drop_database(name)


def test_dump_drop_restore_is_byte_identical(client, dataset, mb):
    before = snapshot(client, dataset)
    assert total_documents(before) > 550
    result = mb.dump(databases=dataset)
    assert result['changed'] and result['backup']['status'] == 'verified'
    name = result['backup']['name']
    assert read_latest(mb.root) == name
    manifest, _digest, problems = load_manifest(mb.path(name))
    assert problems == []
    by_ns = {c['ns']: c for c in manifest['collections']}
    assert by_ns['%s.alltypes' % dataset[0]]['documents'] == len(before['%s.alltypes' % dataset[0]]['documents'])
    assert by_ns['%s.big_orders' % dataset[2]]['type'] == 'view' and 'file' not in by_ns['%s.big_orders' % dataset[2]]

    drop_all(client, dataset)
    assert not set(dataset) & set(client.list_database_names())
    restored = mb.restore(backup_name='latest', drop=True)
    assert restored['changed'] and restored['totals']['inserted'] == total_documents(before)
    after = snapshot(client, dataset)
    assert sorted(after) == sorted(before)
    for ns in before:
        assert after[ns] == before[ns], 'namespace %s differs after the round trip' % ns


def test_restore_with_namespace_remapping(client, dataset, mb, make_db):
    before = snapshot(client, dataset)
    mb.dump(databases=dataset)
    targets = [make_db('_r').name for _name in dataset]
    mapping = dict(zip(dataset, targets))
    result = mb.restore(backup_name='latest', ns_from=['%s.*' % d for d in dataset], ns_to=['%s.*' % t for t in targets])
    assert {r['target'].split('.', 1)[0] for r in result['namespaces']} == set(targets)
    after = snapshot(client, targets, rename={t: s for s, t in mapping.items()}.get)
    assert after == before
    # views follow their collections into the new database
    view = next(i for i in client[mapping[dataset[2]]].list_collections() if i['name'] == 'bigger_orders')
    assert view['options']['viewOn'] == 'big_orders'
    # the source stayed untouched
    assert snapshot(client, dataset) == before


@pytest.mark.parametrize('compression', ['none', 'gzip', 'zstd'])
def test_compressions_round_trip(client, make_db, mb, compression):
    names = build_dataset(make_db, big=False)
    before = snapshot(client, names)
    if compression == 'zstd' and not mongo_common.HAS_ZSTD:
        # zstandard is optional: without it the dump fails up front, naming the library (tested for real in a scratch venv)
        with pytest.raises(MongoBackupError) as info:
            mb.dump(databases=names, compression='zstd')
        assert info.value.details.get('missing_lib') == 'zstandard'
        return
    result = mb.dump(databases=names, compression=compression, compression_level=1 if compression != 'none' else None, batch_size=17,
                     parallel=2)
    backup = mb.path(result['backup']['name'])
    ext = {'none': '.bson', 'gzip': '.bson.gz', 'zstd': '.bson.zst'}[compression]
    assert os.path.exists(os.path.join(backup, names[2], 'orders' + ext))
    drop_all(client, names)
    mb.restore(backup_name=result['backup']['name'], batch_size=13)
    assert snapshot(client, names) == before


def test_metadata_files_have_mongodumps_format(client, dataset, mb):
    """Field names, order and types of <coll>.metadata.json as mongodump writes them (canonical Extended JSON)."""
    result = mb.dump(databases=dataset, compression='none')
    backup = mb.path(result['backup']['name'])
    with open(os.path.join(backup, dataset[2], 'people.metadata.json'), 'rb') as fh:
        text = fh.read().decode('utf-8')
    meta = json.loads(text)
    assert list(meta) == ['indexes', 'uuid', 'collectionName', 'type']  # no options: omitted when empty, like mongodump
    assert meta['collectionName'] == 'people' and meta['type'] == 'collection'
    assert len(meta['uuid']) == 32 and int(meta['uuid'], 16) >= 0
    first = meta['indexes'][0]
    assert first['v'] == {'$numberInt': '2'} and first['key'] == {'_id': {'$numberInt': '1'}} and first['name'] == '_id_'
    ttl = next(ix for ix in meta['indexes'] if ix['name'] == 'ttl_expireAt')
    assert ttl['expireAfterSeconds'] == {'$numberInt': '3600'}
    assert ' ' not in text.split('"people"')[0].replace('"user', '')  # compact separators as in Go's MarshalExtJSON
    with open(os.path.join(backup, dataset[0], 'capped.metadata.json'), 'rb') as fh:
        capped = json.loads(fh.read())
    assert list(capped) == ['options', 'indexes', 'uuid', 'collectionName', 'type']
    assert capped['options']['capped'] is True
    with open(os.path.join(backup, dataset[2], 'bigger_orders.metadata.json'), 'rb') as fh:
        view = json.loads(fh.read())
    assert view['type'] == 'view' and view['indexes'] == [] and 'uuid' not in view
    assert view['options']['viewOn'] == 'big_orders' and view['options']['pipeline'][0]['$match']['qty']['$gte'] == {'$numberInt': '200'}
    assert not os.path.exists(os.path.join(backup, dataset[2], 'bigger_orders.bson'))
    # a unicode collection name is escaped as Go's url.PathEscape does
    assert os.path.exists(os.path.join(backup, dataset[1], 'c%C3%B8ll%C3%A9cti%C3%B8n%20%E2%9C%93.bson'))
    # gzip: the metadata is gzipped too, named as mongodump --gzip names it
    gz = mb.dump(databases=[dataset[2]], namespaces=['%s.people' % dataset[2]])
    with gzip.open(os.path.join(mb.path(gz['backup']['name']), dataset[2], 'people.metadata.json.gz')) as fh:
        assert json.loads(fh.read())['collectionName'] == 'people'


def test_merge_restore_counts_duplicates_and_replaces(client, make_db, mb):
    db = make_db('_merge')
    db.items.insert_many([{'_id': i, 'v': i} for i in range(40)])
    db.items.create_index('v', unique=True)
    mb.dump(databases=[db.name])
    original = collection_hashes(client, db.name, 'items')
    db.items.delete_many({'_id': {'$gte': 30}})
    db.items.update_one({'_id': 1}, {'$set': {'extra': True}})
    result = mb.restore(backup_name='latest')
    row = result['namespaces'][0]
    assert (row['inserted'], row['duplicates'], row['replaced']) == (10, 30, 0)
    assert '30 documents skipped as duplicates' in result['msg']
    assert db.items.find_one({'_id': 1})['extra'] is True
    result = mb.restore(backup_name='latest', on_duplicate='replace')
    row = result['namespaces'][0]
    assert (row['inserted'], row['duplicates'], row['replaced']) == (0, 0, 40)
    assert collection_hashes(client, db.name, 'items') == original
    with pytest.raises(MongoBackupError) as info:
        mb.restore(backup_name='latest', on_duplicate='fail')
    assert '40 documents clash with existing documents' in info.value.msg and 'drop: true' in info.value.msg


def test_dry_run_and_check_mode_write_nothing(client, make_db, mb):
    db = make_db('_dry')
    db.things.insert_many([{'_id': i} for i in range(25)])
    db.command('create', 'view', viewOn='things', pipeline=[])
    planned = mb.dump(check_mode=True, databases=[db.name])
    assert planned['changed'] and not os.path.exists(mb.root)
    assert {c['ns']: c.get('estimated_documents') for c in planned['collections']} == {'%s.things' % db.name: 25, '%s.view' % db.name: None}
    mb.dump(databases=[db.name])
    target = make_db('_dry_target')
    dry = mb.restore(backup_name='latest', dry_run=True, ns_from=['%s.*' % db.name], ns_to=['%s.*' % target.name])
    assert dry['dry_run'] and not dry['changed']
    assert [(r['target'], r['documents'], r['action']) for r in dry['namespaces']] == [
        ('%s.things' % target.name, 25, 'create and restore'), ('%s.view' % target.name, 0, 'create and restore')]
    checked = mb.restore(check_mode=True, backup_name='latest', drop=True)
    assert checked['changed'] and checked['dry_run']
    assert [(r['target'], r['action'], r.get('target_documents')) for r in checked['namespaces']] == [
        ('%s.things' % db.name, 'drop and restore', 25), ('%s.view' % db.name, 'drop and restore', None)]
    assert target.name not in client.list_database_names()


def test_selection_filters(client, make_db, mb):
    db = make_db('_sel')
    for name in ('orders', 'orders_archive', 'sessions', 'users'):
        db[name].insert_one({'_id': 1})
    result = mb.dump(databases=[db.name], exclude_namespaces=['%s.orders_*' % db.name, '*.sessions'])
    assert sorted(c['ns'].split('.', 1)[1] for c in result['collections']) == ['orders', 'users']
    result = mb.dump(namespaces=['%s.orders*' % db.name])
    assert sorted(c['ns'].split('.', 1)[1] for c in result['collections']) == ['orders', 'orders_archive']
    # restore can select from a backup too
    client.drop_database(db.name)
    mb.restore(backup_name='latest', namespaces=['%s.orders_archive' % db.name])
    assert client[db.name].list_collection_names() == ['orders_archive']


class InsertRecorder(monitoring.CommandListener):
    def __init__(self):
        self.inserts = []

    def started(self, event):
        if event.command_name == 'insert':
            docs = event.command.get('documents') or []
            self.inserts.append((len(docs), sum(len(d.raw) if hasattr(d, 'raw') else 0 for d in docs)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_restore_batches_are_bounded_by_count_and_bytes(client, make_db, mb, mongo_uri):
    db = make_db('_batches')
    db.docs.insert_many([{'_id': i, 'pad': 'p' * 3000} for i in range(100)])
    db.docs.insert_one({'_id': 'large', 'pad': 'L' * 40000})
    mb.dump(databases=[db.name])
    client.drop_database(db.name)
    recorder = InsertRecorder()
    params = mb.params('restore', backup_name='latest', batch_size=7, restore_batch_bytes=16384)
    result = restore(build_config(params), lambda: connect(params, event_listeners=[recorder]))
    assert result['totals']['inserted'] == 101
    assert recorder.inserts and sum(n for n, _size in recorder.inserts) == 101
    for count, size in recorder.inserts:
        assert count <= 7
        assert size <= 16384 or count == 1
    assert collection_hashes(client, db.name, 'docs')


def test_listing_shows_status_size_and_latest(mb, make_db):
    db = make_db('_list')
    db.c.insert_many([{'_id': i} for i in range(10)])
    first = mb.dump(databases=[db.name], backup_name='first')
    second = mb.dump(databases=[db.name], backup_name='second')
    again = mb.dump(databases=[db.name], backup_name='second')
    assert not again['changed'] and 'already exists' in again['msg']
    listing = mb.list()
    assert [b['name'] for b in listing['backups']] == ['second', 'first']
    assert [b['status'] for b in listing['backups']] == ['verified', 'verified']
    assert [b['latest'] for b in listing['backups']] == [True, False]
    assert listing['backups'][0]['size_bytes'] == second['backup']['size_bytes'] and listing['backups'][0]['documents'] == 10
    assert listing['latest'] == 'second' and listing['counts'] == {'verified': 2}
    assert first['backup']['name'] == 'first'


def test_raw_documents_are_never_reencoded(client, make_db, mb):
    """Key order, duplicate-looking keys and int/double distinctions survive: the bytes come back unchanged."""
    db = make_db('_raw')
    coll = db.get_collection('c', codec_options=RAW)
    from bson import encode  # pylint: disable=import-outside-toplevel
    from bson.son import SON  # pylint: disable=import-outside-toplevel
    raw = encode(SON([('_id', 1), ('z', 1), ('a', 1.0), ('m', SON([('b', 2), ('a', 1)]))]))
    coll.insert_one(RAW.document_class(raw))
    mb.dump(databases=[db.name])
    client.drop_database(db.name)
    mb.restore(backup_name='latest')
    assert client.get_database(db.name, codec_options=RAW).c.find_one().raw == raw


def test_parallel_dump_of_many_collections(client, make_db, mb):
    db = make_db('_many')
    for index in range(24):
        db['c%02d' % index].insert_many([{'_id': i, 'c': index} for i in range(index * 3 + 1)])
    result = mb.dump(databases=[db.name], parallel=8, batch_size=5)
    assert len(result['collections']) == 24
    assert sum(c['documents'] for c in result['collections']) == sum(i * 3 + 1 for i in range(24))
    assert mb.verify(backup_name='latest')['verified']


def test_password_never_in_error_messages(mongo_uri, tmp_path):
    from mongo_backup_support import default_params  # pylint: disable=import-error,import-outside-toplevel
    params = default_params()
    params.update(mode='dump', backup_dir=str(tmp_path), uri='mongodb://backup:S3cr3t-Pa55@127.0.0.1:1/?authSource=admin',
                  connect_timeout=0.5)
    with pytest.raises(MongoBackupError) as info:
        connect(params)
    assert 'S3cr3t-Pa55' not in info.value.msg and 'backup:********@127.0.0.1:1' in info.value.msg
    assert 'connect_timeout' in info.value.msg


def test_client_sees_the_real_server(mongo_uri):
    """Sanity: the suite talks to the server it thinks it does (stand-in unless MONGODB_TEST_URI is set)."""
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as mongo_client:
        version = mongo_client.admin.command('buildInfo')['version']
    if os.environ.get('MONGODB_TEST_URI'):
        assert 'nodeops-test' not in version
    else:
        assert version.endswith('nodeops-test')


def test_authentication_failure_is_clear_and_secret_free(mongo_uri, tmp_path):
    """Wrong credentials (the stand-in refuses every authentication; a real server refuses these): a clear message, no password."""
    from mongo_backup_support import Ops  # pylint: disable=import-error,import-outside-toplevel
    scheme, rest = mongo_uri.split('://', 1)
    rest = rest.split('@', 1)[1] if '@' in rest.split('/', 1)[0] else rest
    ops = Ops('%s://nobody:Wr0ng-Passw0rd@%s' % (scheme, rest), str(tmp_path / 'auth'))
    with pytest.raises(MongoBackupError) as info:
        ops.dump(connect_timeout=5.0)
    assert 'authentication to MongoDB at' in info.value.msg and 'failed for user nobody' in info.value.msg
    assert 'Wr0ng-Passw0rd' not in info.value.msg and 'nobody:********@' in info.value.msg
