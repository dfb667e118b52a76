"""Oplog capture: a clear error on a standalone server; on a replica set the entries written during the dump are saved."""

import os

import pytest
from bson import decode_file_iter
from bson.timestamp import Timestamp
from pymongo import MongoClient

from mongo_backup_support import Ops  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError, server_info
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import open_decompressed


def test_oplog_on_a_standalone_server_is_a_clear_error(client, make_db, mb):
    db = make_db('_oplog')
    db.c.insert_many([{'_id': i} for i in range(10)])
    topology = server_info(client)['topology']
    if topology == 'replicaset':  # a real replica set given through MONGODB_TEST_URI: the capture just works
        result = mb.dump(databases=[db.name], oplog=True)
        assert result['oplog']['entries'] >= 1 and result['oplog']['first_ts']
        return
    with pytest.raises(MongoBackupError) as info:
        mb.dump(databases=[db.name], oplog=True)
    assert 'oplog: true needs a replica set member' in info.value.msg and 'standalone' in info.value.msg
    assert not os.path.exists(mb.root) or not [e for e in os.listdir(mb.root) if not e.startswith('.')]
    with pytest.raises(MongoBackupError) as info:
        mb.dump(databases=[db.name], oplog=True, check_mode=True)
    assert 'oplog: true needs a replica set member' in info.value.msg


def _entry(t, i, ns='app.c', op='i', doc=None):
    return {'ts': Timestamp(t, i), 't': 1, 'h': 0, 'v': 2, 'op': op, 'ns': ns, 'wall': None, 'o': doc or {'_id': i}}


@pytest.fixture
def replset(server_process):
    server = server_process('--replset', 'rs0')
    uri = 'mongodb://127.0.0.1:%d/?directConnection=true' % server.port
    mongo_client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    # the stand-in keeps no oplog of its own: seed local.oplog.rs as a replica set member would have it
    mongo_client.local['oplog.rs'].insert_many([_entry(1700000000, i) for i in range(1, 6)])
    yield uri, mongo_client
    mongo_client.close()


def test_oplog_capture_on_a_replica_set(replset, tmp_path):
    uri, mongo_client = replset
    mongo_client.app.c.insert_many([{'_id': i, 'v': 'x' * 50} for i in range(600)])
    added = []

    def during_dump(task, count):
        # "writes" while the dump runs: the member appends them to its oplog
        ts = Timestamp(1700000001, len(added) + 1)
        mongo_client.local['oplog.rs'].insert_one(_entry(ts.time, ts.inc, doc={'_id': 1000 + len(added)}))
        added.append(ts)

    ops = Ops(uri, str(tmp_path / 'rs'))
    result = ops.dump(databases=['app'], oplog=True, batch_size=100, hooks={'batch': during_dump})
    assert result['server']['topology'] == 'replicaset' and len(added) == 6
    oplog = result['oplog']
    assert oplog['start_ts'] == {'t': 1700000000, 'i': 5, 'time': '2023-11-14T22:13:20.000Z'}
    assert (oplog['first_ts']['t'], oplog['first_ts']['i']) == (1700000000, 5)
    assert (oplog['last_ts']['t'], oplog['last_ts']['i']) == (1700000001, 6)
    assert oplog['entries'] == 1 + len(added)
    assert result['oplog_position']['i'] == 5
    path = ops.path(result['backup']['name'], 'oplog.bson')
    with open(path, 'rb') as raw:
        entries = list(decode_file_iter(open_decompressed(raw, 'gzip')))
    assert [e['ts'] for e in entries] == [Timestamp(1700000000, 5)] + added
    assert ops.verify(backup_name='latest')['verified']
    assert ops.list()['backups'][0]['oplog'] is True


def test_oplog_rollover_during_the_dump_fails_the_dump(replset, tmp_path):
    uri, mongo_client = replset
    mongo_client.app.c.insert_many([{'_id': i} for i in range(300)])

    def truncate_oplog(task, count):
        mongo_client.local['oplog.rs'].delete_many({})
        mongo_client.local['oplog.rs'].insert_one(_entry(1700000009, 1))

    ops = Ops(uri, str(tmp_path / 'rs'))
    with pytest.raises(MongoBackupError) as info:
        ops.dump(databases=['app'], oplog=True, batch_size=100, hooks={'batch': truncate_oplog})
    assert 'the oplog rolled over during the dump' in info.value.msg
    assert ops.list()['backups'] == [] and ops.list()['partials'] == []
