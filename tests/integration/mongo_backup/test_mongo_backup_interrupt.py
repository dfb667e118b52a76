"""A dump killed with SIGKILL never looks complete, never moves ``latest``, and is cleaned up by the next run.

Also: the dumping process's peak RSS stays bounded (the documents stream through; a collection is never held in memory).
"""

import json
import os
import signal
import subprocess
import time

import pytest

from mongo_backup_support import COLLECTIONS, MODULE_PATH, PYTHON  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import MANIFEST, read_latest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, 'dump_runner.py')
COLLECTION_COUNT = 16
DOCS_PER_COLLECTION = 1200
DOC_PAD = 2000  # ~2 KB documents: about 38 MB of BSON in all


@pytest.fixture(scope='module')
def big_db(client, db_prefix):
    name = '%s_interrupt' % db_prefix
    db = client[name]
    payload = os.urandom(DOC_PAD // 2).hex()  # incompressible-ish text
    for index in range(COLLECTION_COUNT):
        db['c%02d' % index].insert_many([{'_id': i, 'c': index, 'pad': payload[i % 97:] + payload[:i % 97]}
                                         for i in range(DOCS_PER_COLLECTION)])
    yield name
    client.drop_database(name)


def partial_dirs(root):
    return [e for e in os.listdir(root) if e.startswith('.partial-')] if os.path.isdir(root) else []


def data_files(path):
    found = []
    for dirpath, _dirs, files in os.walk(path):
        found += [os.path.join(dirpath, f) for f in files if '.bson' in f and 'metadata' not in f]
    return found


def module_args(mongo_uri, root, db_name, **extra):
    args = {'mode': 'dump', 'uri': mongo_uri, 'backup_dir': root, 'databases': [db_name], 'parallel': 1, 'batch_size': 50,
            'compression': 'gzip', 'compression_level': 9}
    args.update(extra)
    return args


def test_sigkill_halfway_leaves_no_complete_backup_and_next_run_cleans_up(mb, mongo_uri, big_db, tmp_path):
    previous = mb.dump(namespaces=['%s.c00' % big_db], backup_name='before-the-crash')
    assert read_latest(mb.root) == 'before-the-crash'
    args_file = tmp_path / 'args.json'
    args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': module_args(mongo_uri, mb.root, big_db)}))
    proc = subprocess.Popen([PYTHON, MODULE_PATH, str(args_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    killed_at = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            partials = partial_dirs(mb.root)
            if partials and len(data_files(os.path.join(mb.root, partials[0]))) >= COLLECTION_COUNT // 2:
                proc.send_signal(signal.SIGKILL)
                killed_at = len(data_files(os.path.join(mb.root, partials[0])))
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0].decode('utf-8', 'replace')
    assert killed_at is not None, 'the dump finished before it could be killed halfway:\n' + output[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert killed_at < COLLECTION_COUNT

    partials = partial_dirs(mb.root)
    assert len(partials) == 1
    assert not os.path.exists(os.path.join(mb.root, partials[0], MANIFEST))
    assert read_latest(mb.root) == 'before-the-crash'
    listing = mb.list()
    assert [b['name'] for b in listing['backups']] == ['before-the-crash']
    assert [(p['status'], p['alive'], p['pid']) for p in listing['partials']] == [('partial', False, proc.pid)]

    result = mb.dump(namespaces=['%s.c01' % big_db])
    assert [p['name'] for p in result['partials_removed']] == partials
    assert 'no longer running' in result['partials_removed'][0]['reason']
    assert partial_dirs(mb.root) == []
    assert read_latest(mb.root) == result['backup']['name'] != previous['backup']['name']


def test_sigkill_just_before_the_rename_leaves_only_a_partial(mb, mongo_uri, big_db):
    mb.dump(namespaces=['%s.c00' % big_db], backup_name='good')
    params = {'mode': 'dump', 'uri': mongo_uri, 'backup_dir': mb.root, 'namespaces': ['%s.c0[12]' % big_db]}
    proc = subprocess.run([PYTHON, RUNNER, json.dumps(params), '--kill-before-rename'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.decode()[-2000:]
    partials = partial_dirs(mb.root)
    assert len(partials) == 1
    # the manifest was complete and verified, but the directory never got its final name: it is not a backup
    with open(os.path.join(mb.root, partials[0], MANIFEST)) as fh:
        assert json.load(fh)['status'] == 'complete'
    assert read_latest(mb.root) == 'good'
    assert [b['name'] for b in mb.list()['backups']] == ['good']
    assert mb.prune()['partials_removed'][0]['name'] == partials[0]
    assert partial_dirs(mb.root) == []


def test_a_live_partial_is_left_alone(mb, mongo_uri, big_db):
    """A partial dir whose dump still runs (same host, live pid) is not removed by another run."""
    from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import create_partial  # pylint: disable=import-outside-toplevel
    os.makedirs(mb.root)
    live = create_partial(mb.root, 'in-flight')  # owned by this (live) test process
    result = mb.dump(namespaces=['%s.c00' % big_db])
    assert result['partials_removed'] == []
    assert os.path.isdir(live)
    assert mb.list()['partials'][0]['alive'] is True


def test_dumper_peak_memory_is_bounded(mongo_uri, big_db, tmp_path):
    """Dumping ~38 MB (16 collections of 2.4 MB) with parallel=2 keeps the dumper's own peak RSS far below the data size."""
    params = {'mode': 'dump', 'uri': mongo_uri, 'backup_dir': str(tmp_path / 'mem'), 'databases': [big_db], 'parallel': 2,
              'compression_level': 1}
    proc = subprocess.run([PYTHON, RUNNER, json.dumps(params)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, check=False)
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out['ok'], out
    bson_bytes = sum(c['bson_bytes'] for c in out['result']['collections'])
    assert bson_bytes > 35e6
    # interpreter + ansible + pymongo is ~40 MB; the data adds at most a few batches and buffers
    print('dumper VmHWM %d kB for %d BSON bytes' % (out['vmhwm_kb'], bson_bytes))
    assert out['vmhwm_kb'] < 100 * 1024, out['vmhwm_kb']
