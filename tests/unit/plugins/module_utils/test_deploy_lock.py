"""deploy_lock: exactly one holder, re-entrant per run, stale and dead-owner takeover, safe release."""

import multiprocessing
import os

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.deploy_lock import DeployLock, LockError, read_owner


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def record(run_id, owner='alice'):
    return {'run_id': run_id, 'owner': owner, 'controller': 'ctl:1'}


def test_free_lock_is_taken_and_records_owner(tmp_path):
    lock = DeployLock(str(tmp_path / 'locks' / 'shop.lock'))
    changed, broken = lock.acquire(record('r1'), stale_after=60)
    assert changed and broken is None
    holder = read_owner(lock.lock_dir)
    assert holder['run_id'] == 'r1' and holder['owner'] == 'alice' and holder['acquired_at'].endswith('Z')
    assert oct(os.stat(lock.lock_dir).st_mode & 0o777) == '0o700'


def test_same_run_reacquires_without_change(tmp_path):
    lock = DeployLock(str(tmp_path / 'shop.lock'))
    lock.acquire(record('r1'), stale_after=60)
    assert lock.acquire(record('r1'), stale_after=60) == (False, None)


def test_other_run_is_refused_with_holder_and_remaining_time(tmp_path):
    clock = Clock()
    lock = DeployLock(str(tmp_path / 'shop.lock'), clock=clock)
    lock.acquire(record('r1', owner='alice'), stale_after=600)
    clock.now += 100
    with pytest.raises(LockError) as err:
        lock.acquire(record('r2', owner='bob'), stale_after=600)
    msg = str(err.value)
    assert 'alice' in msg and 'run r1' in msg and 'for 100s' in msg and 'stale in 500s' in msg
    assert read_owner(lock.lock_dir)['run_id'] == 'r1'


def test_stale_lock_is_taken_over(tmp_path):
    clock = Clock()
    lock = DeployLock(str(tmp_path / 'shop.lock'), clock=clock)
    lock.acquire(record('r1'), stale_after=600)
    clock.now += 600
    changed, broken = lock.acquire(record('r2', owner='bob'), stale_after=600)
    assert changed and broken['run_id'] == 'r1'
    assert read_owner(lock.lock_dir)['run_id'] == 'r2'
    assert [p for p in os.listdir(tmp_path) if 'broken' in p] == []


@pytest.mark.parametrize('flag', ['owner_dead', 'force'])
def test_dead_owner_or_force_takes_over_a_fresh_lock(tmp_path, flag):
    lock = DeployLock(str(tmp_path / 'shop.lock'))
    lock.acquire(record('r1'), stale_after=600)
    changed, broken = lock.acquire(record('r2'), stale_after=600, **{flag: True})
    assert changed and broken['run_id'] == 'r1'


def test_lock_without_owner_file_ages_from_directory_mtime(tmp_path):
    lock_dir = tmp_path / 'shop.lock'
    lock_dir.mkdir()
    os.utime(lock_dir, (1000, 1000))
    lock = DeployLock(str(lock_dir), clock=Clock(1000 + 30))
    with pytest.raises(LockError, match='unknown'):
        lock.acquire(record('r2'), stale_after=60)
    lock.clock = Clock(1000 + 61)
    assert lock.acquire(record('r2'), stale_after=60)[0]


def test_release_by_holder_and_refusal_for_others(tmp_path):
    lock = DeployLock(str(tmp_path / 'shop.lock'))
    lock.acquire(record('r1'), stale_after=60)
    with pytest.raises(LockError, match='not by this run'):
        lock.release('r2')
    assert lock.release('r1')[0]
    assert read_owner(lock.lock_dir) is None
    assert lock.release('r1') == (False, None)


def test_forced_release(tmp_path):
    lock = DeployLock(str(tmp_path / 'shop.lock'))
    lock.acquire(record('r1'), stale_after=60)
    changed, holder = lock.release(None, force=True)
    assert changed and holder['run_id'] == 'r1'


def _race(path, run_id, start, results):
    start.wait()
    try:
        DeployLock(path).acquire(record(run_id), stale_after=600)
        results.put(run_id)
    except LockError:
        results.put(None)


def test_concurrent_acquirers_exactly_one_wins(tmp_path):
    path = str(tmp_path / 'shop.lock')
    ctx = multiprocessing.get_context('fork')
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, 'r%d' % i, start, results)) for i in range(8)]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=20) for _proc in procs]
    for proc in procs:
        proc.join(timeout=20)
    winners = [o for o in outcomes if o]
    assert len(winners) == 1
    assert read_owner(path)['run_id'] == winners[0]


def test_concurrent_breakers_of_a_stale_lock_exactly_one_wins(tmp_path):
    path = str(tmp_path / 'shop.lock')
    DeployLock(path, clock=Clock(0)).acquire(record('old'), stale_after=10)
    ctx = multiprocessing.get_context('fork')
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, 'r%d' % i, start, results)) for i in range(8)]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=20) for _proc in procs]
    for proc in procs:
        proc.join(timeout=20)
    # The stale lock is old by the real clock, so all eight race to break it.
    winners = [o for o in outcomes if o]
    assert len(winners) == 1
    assert read_owner(path)['run_id'] == winners[0]
