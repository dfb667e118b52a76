"""Backups on disk without a server: verification, status, listing, latest, partial-dir cleanup, locking, prune."""

import datetime
import json
import os
import socket
import subprocess
import sys

import bson
import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_backup_ops import run_list, run_prune, run_verify
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import (
    DataFileWriter, build_metadata, data_file_name, metadata_bytes, metadata_file_name, write_small_file,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import (
    FORMAT, PARTIAL_MARKER, RootLock, create_partial, iso, list_backups, read_latest, set_latest, stale_partials, verify_backup,
    write_manifest, record_verification,
)

UTC = datetime.timezone.utc


def make_backup(root, name, started=None, docs=20, compression='gzip', verified=True):
    """A real backup directory (data, metadata, manifest, sidecar, verification) written with the module's own writers."""
    path = os.path.join(root, name)
    os.makedirs(os.path.join(path, 'app'))
    rel = data_file_name('app', 'items', compression)
    writer = DataFileWriter(os.path.join(path, rel), compression)
    for i in range(docs):
        writer.write_document(bson.encode({'_id': i, 'v': 'x' * i}))
    figures = writer.close()
    meta_rel = metadata_file_name('app', 'items', compression)
    size, digest = write_small_file(os.path.join(path, meta_rel), metadata_bytes(
        build_metadata('items', 'collection', {}, [{'v': 2, 'key': {'_id': 1}, 'name': '_id_'}], '0' * 32)), compression)
    entry = {'db': 'app', 'collection': 'items', 'ns': 'app.items', 'type': 'collection', 'file': rel, 'metadata_file': meta_rel,
             'metadata_bytes': size, 'metadata_sha256': digest}
    entry.update(figures)
    started = started or datetime.datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    manifest = {'format': FORMAT, 'status': 'complete', 'name': name, 'method': 'pymongo', 'compression': compression,
                'started_at': iso(started), 'finished_at': iso(started), 'collections': [entry],
                'totals': {'collections': 1, 'views': 0, 'documents': docs, 'bson_bytes': figures['bson_bytes'],
                           'file_bytes': figures['file_bytes'] + size}}
    write_manifest(path, manifest)
    if verified:
        record_verification(path, verify_backup(path))
    return path


def cfg(root, **kwargs):
    base = {'backup_dir': str(root), 'backup_name': None, 'keep_daily': 7, 'keep_weekly': 4, 'keep_monthly': 3, 'keep_yearly': 0,
            'prune_corrupt': False, 'partial_max_age_hours': 24.0, 'lock_timeout': 0.0, 'deep': False}
    base.update(kwargs)
    return base


def dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_a_fresh_backup_verifies(tmp_path):
    path = make_backup(str(tmp_path), 'b1', docs=100)
    result = verify_backup(path)
    assert result['ok'] and result['files_checked'] == 2 and result['documents'] == 100 and result['errors'] == []


def test_statuses_in_listing(tmp_path):
    root = str(tmp_path)
    make_backup(root, 'verified', started=datetime.datetime(2026, 1, 3, tzinfo=UTC))
    make_backup(root, 'complete', started=datetime.datetime(2026, 1, 2, tzinfo=UTC), verified=False)
    corrupt = make_backup(root, 'corrupt', started=datetime.datetime(2026, 1, 1, tzinfo=UTC))
    with open(os.path.join(corrupt, 'manifest.json'), 'a') as fh:
        fh.write(' ')
    os.makedirs(os.path.join(root, 'uploads'))  # not a backup: never touched
    partial = create_partial(root, 'running')
    set_latest(root, 'verified')
    backups, partials, foreign = list_backups(root)
    assert [(b['name'], b['status'], b['latest']) for b in backups] == [
        ('verified', 'verified', True), ('complete', 'complete', False), ('corrupt', 'corrupt', False)]
    assert 'the manifest was modified' in backups[2]['problems'][0]
    assert [(p['name'], p['alive']) for p in partials] == [(os.path.basename(partial), True)]
    assert foreign == ['uploads']
    listing = run_list(cfg(root))
    assert listing['counts'] == {'verified': 1, 'complete': 1, 'corrupt': 1, 'partial': 1}
    assert listing['latest'] == 'verified'


def test_deep_listing_reads_the_data(tmp_path):
    root = str(tmp_path)
    path = make_backup(root, 'b')
    data = os.path.join(path, 'app', 'items.bson.gz')
    with open(data, 'r+b') as fh:
        fh.seek(30)
        fh.write(b'\x00\x00')
    assert run_list(cfg(root))['backups'][0]['status'] == 'verified'  # the cheap listing trusts the last verification
    deep = run_list(cfg(root, deep=True))['backups'][0]
    assert deep['status'] == 'corrupt' and 'app/items.bson.gz: sha256 mismatch' in deep['problems'][0]


def test_latest_pointer(tmp_path):
    root = str(tmp_path)
    make_backup(root, 'a')
    make_backup(root, 'b')
    set_latest(root, 'a')
    assert os.readlink(os.path.join(root, 'latest')) == 'a'
    set_latest(root, 'b')
    assert read_latest(root) == 'b' and not [e for e in os.listdir(root) if 'tmp' in e]
    os.unlink(os.path.join(root, 'latest'))
    os.makedirs(os.path.join(root, 'latest'))
    with pytest.raises(MongoBackupError) as info:
        set_latest(root, 'a')
    assert 'is not a symlink' in info.value.msg


def _write_marker(path, **marker):
    with open(os.path.join(path, PARTIAL_MARKER), 'w') as fh:
        json.dump(marker, fh)


def test_stale_partials(tmp_path):
    root = str(tmp_path)
    live = create_partial(root, 'live')
    dead = os.path.join(root, '.partial-dead-1')
    os.makedirs(dead)
    _write_marker(dead, pid=dead_pid(), host=socket.gethostname(), name='dead')
    reused = os.path.join(root, '.partial-reused-2')
    os.makedirs(reused)
    _write_marker(reused, pid=os.getpid(), host=socket.gethostname(), name='reused', proc_start=1)
    remote = os.path.join(root, '.partial-remote-3')
    os.makedirs(remote)
    _write_marker(remote, pid=1, host='another-host', name='remote')
    old = os.path.join(root, '.partial-old-4')
    os.makedirs(old)
    os.utime(old, (0, 0))
    stale = {os.path.basename(p['path']): p['reason'] for p in stale_partials(root, 24)}
    assert stale == {'.partial-dead-1': 'its dump (pid %s) is no longer running' % json.load(open(os.path.join(dead, PARTIAL_MARKER)))['pid'],
                     '.partial-reused-2': 'its dump (pid %d) is no longer running' % os.getpid(),
                     '.partial-old-4': 'older than 24 hours'}
    assert os.path.basename(live) not in stale and '.partial-remote-3' not in stale


def test_a_partial_whose_marker_cannot_be_written_is_removed(tmp_path, monkeypatch):
    """On a full disk the owner marker fails: the directory must not stay behind, unowned, until it is 24 hours old."""
    from ansible_collections.nodeops.stack.plugins.module_utils import mongo_manifest  # pylint: disable=import-outside-toplevel

    def full_disk(path, obj, mode=0o640):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(mongo_manifest, 'write_json_atomic', full_disk)
    with pytest.raises(OSError):
        create_partial(str(tmp_path), 'n1')
    assert os.listdir(str(tmp_path)) == []


def test_root_lock_is_exclusive(tmp_path):
    root = str(tmp_path)
    with RootLock(root):
        with pytest.raises(MongoBackupError) as info:
            with RootLock(root, timeout=0.2):
                pass
        assert 'another mongo_backup dump or prune is running' in info.value.msg and str(os.getpid()) in info.value.msg
    with RootLock(root):
        pass


def test_verify_all_and_record(tmp_path):
    root = str(tmp_path)
    make_backup(root, 'a', verified=False)
    bad = make_backup(root, 'b', verified=False)
    os.unlink(os.path.join(bad, 'app', 'items.metadata.json.gz'))
    result = run_verify(cfg(root), check_mode=True)
    assert not result['verified'] and {b['name']: b['ok'] for b in result['backups']} == {'a': True, 'b': False}
    assert {b['status'] for b in run_list(cfg(root))['backups']} == {'complete'}  # check mode records nothing
    result = run_verify(cfg(root))
    assert {b['name']: b['status'] for b in run_list(cfg(root))['backups']} == {'a': 'verified', 'b': 'corrupt'}
    assert 'b: app/items.metadata.json.gz: missing (listed in the manifest)' in result['msg']


def test_prune_applies_gfs_keeps_corrupt_and_removes_stale_partials(tmp_path):
    root = str(tmp_path)
    day = datetime.datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    for offset in range(12):
        make_backup(root, 'd%02d' % offset, started=day + datetime.timedelta(days=offset), docs=3)
    corrupt = make_backup(root, 'x-corrupt', started=day + datetime.timedelta(days=5, hours=5), docs=3)
    os.unlink(os.path.join(corrupt, 'manifest.json.sha256'))
    unverified = make_backup(root, 'y-unverified', started=day + datetime.timedelta(days=11, hours=1), docs=3, verified=False)
    set_latest(root, 'd11')
    dead = os.path.join(root, '.partial-crashed-9')
    os.makedirs(dead)
    _write_marker(dead, pid=dead_pid(), host=socket.gethostname(), name='crashed')

    preview = run_prune(cfg(root, keep_daily=3, keep_weekly=2, keep_monthly=1), check_mode=True)
    assert preview['changed'] and sorted(os.listdir(root)) == sorted([
        'd%02d' % i for i in range(12)] + ['x-corrupt', 'y-unverified', 'latest', '.partial-crashed-9'])
    kept = {k['name']: k['reasons'] for k in preview['kept']}
    # 2026-01-01 is a Thursday: ISO week 1 is Dec 29 - Jan 4 (d00-d03), week 2 Jan 5-11 (d04-d10), week 3 starts with d11
    assert kept == {'y-unverified': ['newest', 'daily', 'weekly', 'monthly'], 'd11': ['protected'], 'd10': ['daily', 'weekly'],
                    'd09': ['daily'], 'x-corrupt': ['unverified']}
    assert preview['corrupt_kept'] == ['x-corrupt']
    assert 'x-corrupt' in preview['msg'] and preview['partials_removed'][0]['name'] == '.partial-crashed-9'

    result = run_prune(cfg(root, keep_daily=3, keep_weekly=2, keep_monthly=1))
    assert sorted(p['name'] for p in result['pruned']) == ['d%02d' % i for i in range(9)]
    assert sorted(e for e in os.listdir(root) if not e.startswith('.')) == ['d09', 'd10', 'd11', 'latest', 'x-corrupt', 'y-unverified']
    assert not os.path.exists(dead)
    assert os.path.exists(os.path.join(unverified, 'verification.json'))  # complete backups are verified before the plan

    result = run_prune(cfg(root, keep_daily=1, keep_weekly=0, keep_monthly=0, prune_corrupt=True))
    assert sorted(p['name'] for p in result['pruned']) == ['d09', 'd10', 'x-corrupt']
    assert sorted(e for e in os.listdir(root) if not e.startswith('.')) == ['d11', 'latest', 'y-unverified']
    assert read_latest(root) == 'd11'
