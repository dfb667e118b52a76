"""Release bookkeeping: ordering by manifest, rollback target, pruning that never loses the good release."""

import json
import os

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.releases import (
    MANIFEST_NAME, ReleaseError, ReleaseStore, check_release_id, list_releases, plan_prune,
)


class Clock:
    def __init__(self):
        self.now = 1_700_000_000

    def __call__(self):
        self.now += 60
        return self.now


@pytest.fixture
def store(tmp_path):
    (tmp_path / 'releases').mkdir()
    return ReleaseStore(str(tmp_path / 'releases'), str(tmp_path / 'current'), str(tmp_path / 'deploy-history.jsonl'), clock=Clock())


def deploy(store, rid, status='healthy', make_current=True):
    os.makedirs(store.path(rid), exist_ok=True)
    store.record(rid, {'version': rid.split('-')[0]}, 'pending')
    if make_current:
        tmp = store.current_link + '.tmp'
        os.symlink(store.path(rid), tmp)
        os.replace(tmp, store.current_link)
    store.record(rid, {}, status)


def test_record_assigns_increasing_seq_and_keeps_history(store):
    deploy(store, '1.0.0-a')
    deploy(store, '2.0.0-b')
    manifest = json.load(open(os.path.join(store.path('2.0.0-b'), MANIFEST_NAME)))
    assert manifest['seq'] == 2 and manifest['status'] == 'healthy'
    assert [h['status'] for h in manifest['history']] == ['pending', 'healthy']
    assert manifest['deployed_at'].endswith('Z')


def test_record_is_idempotent(store):
    deploy(store, '1.0.0-a')
    changed, before, after = store.record('1.0.0-a', {'version': '1.0.0'}, 'healthy')
    assert not changed and before == after


def test_order_follows_manifest_not_mtime(store):
    deploy(store, 'b-first')
    deploy(store, 'a-second')
    os.utime(store.path('b-first'), (2_000_000_000, 2_000_000_000))  # "newer" by mtime
    assert [r['release_id'] for r in list_releases(store.releases_dir)] == ['b-first', 'a-second']


def test_rollback_target_is_newest_healthy_before_current(store):
    deploy(store, '1.0.0-a')
    deploy(store, '2.0.0-b')
    deploy(store, '3.0.0-c', status='failed', make_current=False)
    deploy(store, '4.0.0-d')
    summary = store.summary()
    assert summary['current'] == '4.0.0-d' and summary['rollback_target'] == '2.0.0-b'


def test_prune_keeps_current_and_rollback_target_beyond_keep(store):
    deploy(store, '1.0.0-good')
    for n in range(2, 7):
        deploy(store, '%d.0.0-bad' % n, status='failed', make_current=False)
    deploy(store, '7.0.0-new', status='pending')
    kept, pruned = store.prune(keep=2)
    reasons = {k['release_id']: k['reason'] for k in kept}
    assert reasons == {'1.0.0-good': 'rollback target', '6.0.0-bad': 'newest 2', '7.0.0-new': 'current'}
    assert sorted(p['release_id'] for p in pruned) == ['2.0.0-bad', '3.0.0-bad', '4.0.0-bad', '5.0.0-bad']
    assert sorted(os.listdir(store.releases_dir)) == ['1.0.0-good', '6.0.0-bad', '7.0.0-new']


def test_prune_check_mode_deletes_nothing(store):
    for n in range(1, 5):
        deploy(store, '%d.0.0' % n)
    kept, pruned = store.prune(keep=1, check_mode=True)
    assert len(pruned) == 2 and len(os.listdir(store.releases_dir)) == 4


def test_releases_without_manifest_sort_oldest_and_can_be_pruned(store):
    os.makedirs(store.path('legacy'))
    deploy(store, '1.0.0-a')
    deploy(store, '2.0.0-b')
    assert list_releases(store.releases_dir)[0]['status'] == 'unknown'
    kept, pruned = store.prune(keep=2)
    assert [p['release_id'] for p in pruned] == ['legacy']


def test_history_lines_are_appended(store):
    store.append_history({'event': 'deployed', 'release_id': 'x'})
    store.append_history({'event': 'rolled_back', 'release_id': 'x'})
    lines = [json.loads(line) for line in open(store.history_file)]
    assert [line['event'] for line in lines] == ['deployed', 'rolled_back'] and all('at' in line for line in lines)


@pytest.mark.parametrize('bad', ['', '.', '..', '../etc', 'a/b', '-x', 'x' * 129, 'sp ace'])
def test_release_id_validation(bad):
    with pytest.raises(ReleaseError, match='release_id'):
        check_release_id(bad)


def test_bad_status_and_missing_release(store):
    deploy(store, '1.0.0-a')
    with pytest.raises(ReleaseError, match='status: expected one of'):
        store.record('1.0.0-a', {}, 'great')
    with pytest.raises(ReleaseError, match='does not exist'):
        store.record('9.9.9', {}, 'healthy')


def test_keep_must_be_positive():
    with pytest.raises(ReleaseError, match='keep: expected at least 1'):
        plan_prune([], 0, None)
