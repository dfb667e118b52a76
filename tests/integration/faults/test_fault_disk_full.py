"""The backup disk filling up: the backup root is an 8 MiB tmpfs (unmounted at teardown, failed or not).

Pass: a clear ENOSPC message (no traceback), non-zero status, the partial directory removed (the space is free again)
and nothing marked complete, the previous verified backup (set) intact and still ``latest``; a run that fits afterwards
succeeds. Two ways to get there: a dump bigger than the disk (it fills up mid-dump), and a disk that is already full
when the run starts (then the runner cannot even write last-run.json when its state directory is on the same disk).
"""

import os

from fault_support import (  # pylint: disable=import-error
    fill_disk, last_json, load_collections, output_of, partial_entries, read_json, run_runner, run_set_here, start_module,
    used_bytes, write_runner_config,
)
from mongo_backup_support import Ops  # pylint: disable=import-error

import nodeops_backup_set as backup_set  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import list_backups, read_latest

DB = 'faults_disk'
BIG_COLLECTIONS, BIG_DOCS, DOC_BYTES = 5, 1000, 2000  # 10 MB of incompressible documents for an 8 MiB disk
SLACK = 64 * 1024  # lock files and the like


def load_small(client):
    load_collections(client, DB, 1, 50, 100, prefix='small')


def load_big(client):
    load_collections(client, DB, BIG_COLLECTIONS, BIG_DOCS, DOC_BYTES, prefix='big')


def shrink_big(client):
    """The data shrinks back (or, seen from the backup, the disk grows): what is left fits."""
    for index in range(BIG_COLLECTIONS):
        client[DB]['big%02d' % index].delete_many({'_id': {'$gte': 100}})


def dump_args(server, root):
    return {'mode': 'dump', 'uri': server.uri, 'backup_dir': root, 'databases': [DB], 'parallel': 1, 'compression_level': 1,
            'connect_timeout': 5}


def assert_only_before_is_there(ops, root):
    assert partial_entries(root) == []
    assert read_latest(root) == 'before'
    backups, partials, _foreign = list_backups(root)
    assert [(b['name'], b['status']) for b in backups] == [('before', 'verified')] and partials == []
    assert ops.verify(backup_name='before', check_mode=True)['verified']  # check mode: no verification.json to write on a full disk


def test_module_dump_bigger_than_the_disk(small_disk, fault_server, client, processes, tmp_path):
    load_small(client)
    root = os.path.join(small_disk, 'backups')
    ops = Ops(fault_server.uri, root)
    ops.dump(backup_name='before', databases=[DB])
    load_big(client)
    used = used_bytes(small_disk)

    rc, out, _waited = output_of(start_module(processes, tmp_path, dump_args(fault_server, root)), timeout=120)
    result = last_json(out)
    assert rc == 1 and result is not None and result.get('failed'), out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert result['msg'].startswith('dump failed: %s.big0' % DB) and 'No space left on device' in result['msg'], result['msg']
    assert used_bytes(small_disk) <= used + SLACK, 'the partial dump was not removed'
    assert_only_before_is_there(ops, root)

    shrink_big(client)
    result = ops.dump(databases=[DB])
    assert result['backup']['status'] == 'verified' and result['backup']['documents'] == 50 + BIG_COLLECTIONS * 100
    assert read_latest(root) == result['backup']['name']


def test_module_dump_onto_a_full_disk_leaves_no_partial(small_disk, fault_server, client, processes, tmp_path):
    load_small(client)
    root = os.path.join(small_disk, 'backups')
    ops = Ops(fault_server.uri, root)
    ops.dump(backup_name='before', databases=[DB])
    filler = fill_disk(small_disk)

    rc, out, _waited = output_of(start_module(processes, tmp_path, dump_args(fault_server, root)), timeout=120)
    result = last_json(out)
    assert rc == 1 and result is not None and result.get('failed'), out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert result['msg'] == 'OSError: No space left on device (backup_dir %s)' % root
    # an unowned partial directory would linger for partial_max_age_hours
    assert_only_before_is_there(ops, root)

    os.unlink(filler)
    result = ops.dump(databases=[DB])
    assert result['backup']['status'] == 'verified' and read_latest(root) == result['backup']['name']


def test_runner_set_bigger_than_the_disk(small_disk, fault_server, client, processes, tmp_path):
    load_small(client)
    root, state = os.path.join(small_disk, 'root'), str(tmp_path / 'state')
    sets_dir = os.path.join(root, 'sets')
    config = write_runner_config(tmp_path, root, state, fault_server.uri, [DB], compression_level=1, parallel=2)
    first = run_set_here(config)
    assert first['result'] == 'success', first
    load_big(client)
    used = used_bytes(small_disk)

    rc, record, out = run_runner(processes, config)
    assert rc == 1 and record is not None and record['result'] == 'failed', out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert record['error'].startswith('mongo: dump failed: %s.big0' % DB) and 'No space left on device' in record['error'], record['error']
    assert read_json(os.path.join(state, backup_set.LAST_RUN)) == record
    assert used_bytes(small_disk) <= used + SLACK, 'the partial set was not removed'
    assert partial_entries(sets_dir) == []
    assert read_latest(sets_dir) == first['backup']
    assert [(s['name'], s['status']) for s in backup_set.list_sets(sets_dir)] == [(first['backup'], 'verified')]
    assert backup_set.verify_set(os.path.join(sets_dir, first['backup']))['ok']

    shrink_big(client)
    third = run_set_here(config)
    assert third['result'] == 'success', third
    assert read_latest(sets_dir) == third['backup']


def test_runner_on_a_full_disk_that_also_holds_its_state_dir(small_disk, fault_server, client, processes, tmp_path):
    """The role's defaults put both under /var: a full disk must not turn the failure into a traceback and lose the alert."""
    load_small(client)
    root, state = os.path.join(small_disk, 'root'), os.path.join(small_disk, 'state')
    sets_dir = os.path.join(root, 'sets')
    config = write_runner_config(tmp_path, root, state, fault_server.uri, [DB])
    first = run_set_here(config)
    assert first['result'] == 'success', first
    filler = fill_disk(small_disk)

    rc, record, out = run_runner(processes, config)
    assert rc == 1 and record is not None, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert record['result'] == 'failed' and 'No space left on device' in record['error'], record
    assert record['record_error'] == 'could not record the run in %s: No space left on device' % state, record
    assert read_json(os.path.join(state, backup_set.LAST_RUN)) == first  # untouched: the freshness check sees it age
    assert partial_entries(sets_dir) == []
    assert read_latest(sets_dir) == first['backup']
    assert [(s['name'], s['status']) for s in backup_set.list_sets(sets_dir)] == [(first['backup'], 'verified')]

    os.unlink(filler)
    third = run_set_here(config)
    assert third['result'] == 'success' and 'record_error' not in third, third
    assert read_json(os.path.join(state, backup_set.LAST_RUN)) == third
    assert read_latest(sets_dir) == third['backup']
