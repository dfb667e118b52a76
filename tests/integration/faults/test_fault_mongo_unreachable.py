"""MongoDB unreachable mid-dump: the server SIGKILLed, or hung with SIGSTOP, while the module or the backup-set runner
is dumping it.

Pass: non-zero status with a clear message (no traceback), nothing marked complete (no partial left, nothing listed but
the earlier backups), ``latest`` still names the previous verified backup (set), last-run.json records the failure; once
the server is back (restarted with its data, or resumed) a re-run succeeds and verifies.

A hung server is noticed through pymongo's heartbeat: when the monitor's hello gets no answer within connect_timeout,
pymongo cancels the reads in flight ("operation cancelled"), so the dump fails within heartbeat + connect_timeout. The
module test keeps pymongo's default heartbeat (10 s) to prove that bound; the runner test sets heartbeatFrequencyMS=500
in its URI to stay fast (same code path, shorter wait).
"""

import os

import pytest
from pymongo import MongoClient

from fault_support import (  # pylint: disable=import-error
    load_collections, last_json, output_of, partial_entries, read_json, run_runner, run_set_here, start_module, start_runner,
    wait_for_partial_files, write_runner_config,
)
from mongo_backup_support import Ops  # pylint: disable=import-error

import nodeops_backup_set as backup_set  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import list_backups, read_latest

DB = 'faults_app'
COLLECTIONS, DOCS, DOC_BYTES = 8, 250, 2000  # 4 MB in 8 collections: the fault lands in the 3rd
HEARTBEAT = 10  # seconds, pymongo's default heartbeatFrequencyMS
CONNECT_TIMEOUT = 2
DETECT_WITHIN = HEARTBEAT + CONNECT_TIMEOUT + 10  # slack for a loaded 2-core machine
FAULTS = ['server-sigkill', 'server-sigstop']


def load(client):
    load_collections(client, DB, COLLECTIONS, DOCS, DOC_BYTES)


def inject(fault, server):
    if fault == 'server-sigkill':
        server.kill()
    else:
        server.hang()


def bring_back(fault, server):
    """The server returns: restarted on the same port with the same data, or resumed.

    The data goes back through a new client: the test's own still pools sockets to the killed process, and a
    standalone server has no retryable writes, so its first insert there can fail (pymongo's AutoReconnect).
    """
    if fault == 'server-sigkill':
        server.restart()
        with MongoClient(server.uri, serverSelectionTimeoutMS=10000) as fresh:
            load(fresh)
    else:
        server.resume()


def module_args(server, root):
    return {'mode': 'dump', 'uri': server.uri, 'backup_dir': root, 'databases': [DB], 'parallel': 1, 'batch_size': 50,
            'compression_level': 1, 'connect_timeout': CONNECT_TIMEOUT}


@pytest.mark.parametrize('fault', FAULTS)
def test_module_dump_fails_cleanly_and_latest_stays_on_the_verified_backup(fault, fault_server, client, processes, tmp_path):
    load(client)
    root = str(tmp_path / 'backups')
    ops = Ops(fault_server.uri, root)
    ops.dump(backup_name='before', databases=[DB])
    proc = start_module(processes, tmp_path, module_args(fault_server, root))
    assert wait_for_partial_files(root, 3, proc) is not None, 'the dump ended before the fault:\n' + output_of(proc, 60)[1][-3000:]
    inject(fault, fault_server)
    rc, out, waited = output_of(proc, timeout=DETECT_WITHIN + 30)
    result = last_json(out)

    assert rc == 1 and result is not None and result.get('failed'), out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert result['msg'].startswith('dump failed: %s.c0' % DB), result['msg']
    assert 'lost the connection to the server, which closed it or stopped answering' in result['msg'], result['msg']
    print('%s: the module failed %.1fs after the fault: %s' % (fault, waited, result['msg']))
    assert waited < DETECT_WITHIN, 'the dump took %.1fs to notice' % waited
    assert partial_entries(root) == []
    assert read_latest(root) == 'before'
    backups, partials, _foreign = list_backups(root)
    assert [(b['name'], b['status']) for b in backups] == [('before', 'verified')] and partials == []

    bring_back(fault, fault_server)
    result = ops.dump(databases=[DB])
    assert result['backup']['status'] == 'verified' and result['backup']['documents'] == COLLECTIONS * DOCS
    assert read_latest(root) == result['backup']['name'] != 'before'
    verified = ops.verify()
    assert verified['verified'] and sorted(b['name'] for b in verified['backups']) == sorted(['before', result['backup']['name']])


@pytest.mark.parametrize('fault', FAULTS)
def test_runner_set_fails_cleanly_records_it_and_latest_stays_on_the_verified_set(fault, fault_server, client, processes, tmp_path):
    load(client)
    root, state = str(tmp_path / 'root'), str(tmp_path / 'state')
    sets_dir = os.path.join(root, 'sets')
    uri = fault_server.uri + ('&heartbeatFrequencyMS=500' if fault == 'server-sigstop' else '')
    config = write_runner_config(tmp_path, root, state, uri, [DB], connect_timeout=CONNECT_TIMEOUT)
    first = run_set_here(config)
    assert first['result'] == 'success', first

    proc = start_runner(processes, config)
    assert wait_for_partial_files(sets_dir, 3, proc) is not None, 'the run ended before the fault:\n' + output_of(proc, 60)[1][-3000:]
    inject(fault, fault_server)
    rc, out, waited = output_of(proc, timeout=DETECT_WITHIN + 30)
    record = last_json(out)

    assert rc == 1 and record is not None and record['result'] == 'failed', out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    assert record['error'].startswith('mongo: dump failed: %s.c0' % DB), record['error']
    assert 'lost the connection to the server' in record['error'] and record['verified'] is False
    print('%s: the runner failed %.1fs after the fault: %s' % (fault, waited, record['error']))
    assert waited < DETECT_WITHIN, 'the run took %.1fs to notice' % waited
    assert read_json(os.path.join(state, backup_set.LAST_RUN)) == record
    assert read_latest(sets_dir) == first['backup']
    assert [(s['name'], s['status']) for s in backup_set.list_sets(sets_dir)] == [(first['backup'], 'verified')]
    assert partial_entries(sets_dir) == []
    rc, check, out = run_runner(processes, config, 'verify', '--set', 'latest')
    assert rc == 0 and check == {'ok': True, 'errors': []}, out[-3000:]

    bring_back(fault, fault_server)
    third = run_set_here(config)
    assert third['result'] == 'success' and third['verified'], third
    assert read_latest(sets_dir) == third['backup'] != first['backup']
    assert backup_set.verify_set(os.path.join(sets_dir, third['backup']))['ok']
    with open(os.path.join(state, backup_set.HISTORY)) as fh:
        assert [line.count('"result": "success"') for line in fh] == [1, 0, 1]
