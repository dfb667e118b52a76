# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A deploy lock that two concurrent runs cannot both hold.

The lock is a directory: ``mkdir`` is atomic on every local filesystem, so of
two runs racing for it exactly one wins. The winner writes ``owner.json``
(who, which run, when, from which controller process) inside it. A lock older
than ``stale_after`` seconds, or whose owner process is known to be dead, may
be taken over; the old directory is first renamed aside (also atomic), so two
runs breaking the same stale lock still cannot both end up holding it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import shutil
import time

OWNER_FILE = 'owner.json'
BREAK_MUTEX_STALE = 60


class LockError(Exception):
    """The lock cannot be taken or released; the message says why and what to do."""


def read_owner(lock_dir):
    """Return the owner record of a held lock, or None when the lock is free.

    A lock directory without a readable owner file (a run killed between mkdir
    and the write) is reported with its directory mtime and ``owner`` unknown.
    """
    try:
        st = os.stat(lock_dir)
    except FileNotFoundError:
        return None
    try:
        with open(os.path.join(lock_dir, OWNER_FILE)) as handle:
            record = json.load(handle)
        if not isinstance(record, dict):
            raise ValueError('not an object')
    except (OSError, ValueError):
        record = {'owner': 'unknown', 'run_id': None}
    record.setdefault('acquired_epoch', st.st_mtime)
    return record


def describe(record, now):
    age = max(0, int(now - float(record.get('acquired_epoch', now))))
    return '%s (run %s, controller %s) for %ds' % (
        record.get('owner') or 'unknown', record.get('run_id') or '?', record.get('controller') or '?', age)


class DeployLock:
    """The lock at ``lock_dir``; ``clock`` is injectable for tests."""

    def __init__(self, lock_dir, clock=time.time):
        self.lock_dir = lock_dir
        self.clock = clock

    def _write_owner(self, record):
        tmp = os.path.join(self.lock_dir, '.%s.tmp' % OWNER_FILE)
        with open(tmp, 'w') as handle:
            json.dump(record, handle, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.rename(tmp, os.path.join(self.lock_dir, OWNER_FILE))

    def _try_mkdir(self):
        parent = os.path.dirname(self.lock_dir)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700)
        try:
            os.mkdir(self.lock_dir, 0o700)
            return True
        except FileExistsError:
            return False

    def _set_aside(self, now):
        """Rename the held lock out of the way; False when another run moved it first."""
        aside = '%s.broken-%d-%d' % (self.lock_dir, int(now), os.getpid())
        try:
            os.rename(self.lock_dir, aside)
        except FileNotFoundError:
            return False
        shutil.rmtree(aside, ignore_errors=True)
        return True

    def _break(self, judged):
        """Set aside the lock judged breakable, unless it changed since it was judged.

        Breakers serialise on a second directory: without it, a breaker acting on
        an old reading could set aside the fresh lock another breaker just took.
        A breaker that died inside this short section leaves the mutex behind; it
        is cleared after BREAK_MUTEX_STALE seconds.
        """
        mutex = self.lock_dir + '.breaking'
        try:
            os.mkdir(mutex, 0o700)
        except FileExistsError:
            try:
                if self.clock() - os.stat(mutex).st_mtime > BREAK_MUTEX_STALE:
                    os.rmdir(mutex)
            except OSError:
                pass
            return False
        try:
            current = read_owner(self.lock_dir)
            if current is None:
                return True
            if (current.get('run_id'), current.get('acquired_epoch')) != (judged.get('run_id'), judged.get('acquired_epoch')):
                return False
            return self._set_aside(self.clock())
        finally:
            os.rmdir(mutex)

    def plan_acquire(self, run_id, stale_after, force=False, owner_dead=False):
        """Decide without side effects: returns (action, holder) with action in
        ``take`` (free), ``held`` (already ours), ``break`` (stale/dead/forced) or ``busy``."""
        now = self.clock()
        holder = read_owner(self.lock_dir)
        if holder is None:
            return 'take', None
        if run_id and holder.get('run_id') == run_id:
            return 'held', holder
        age = now - float(holder.get('acquired_epoch', now))
        if force or owner_dead or age >= stale_after:
            return 'break', holder
        return 'busy', holder

    def acquire(self, record, stale_after, force=False, owner_dead=False):
        """Take the lock for ``record`` (must carry run_id). Returns (changed, broken_holder)."""
        run_id = record.get('run_id')
        action, holder = self.plan_acquire(run_id, stale_after, force=force, owner_dead=owner_dead)
        if action == 'held':
            return False, None
        if action == 'busy':
            raise LockError(self.busy_message(holder, stale_after))
        if action == 'break' and not self._break(holder):
            holder = None  # it changed under us; compete for it below like any run
        now = self.clock()
        if not self._try_mkdir():
            raise LockError(self.busy_message(read_owner(self.lock_dir) or {}, stale_after))
        record = dict(record, acquired_epoch=now, acquired_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now)))
        self._write_owner(record)
        return True, holder if action == 'break' else None

    def release(self, run_id, force=False):
        """Release the lock if this run holds it (or with force). Returns (changed, holder)."""
        holder = read_owner(self.lock_dir)
        if holder is None:
            return False, None
        if not force and holder.get('run_id') != run_id:
            raise LockError('the deploy lock %s is held by %s, not by this run (%s); not releasing it. '
                            'Release it explicitly (force) only if that run is really gone.'
                            % (self.lock_dir, describe(holder, self.clock()), run_id))
        self._set_aside(self.clock())
        return True, holder

    def busy_message(self, holder, stale_after):
        now = self.clock()
        age = now - float(holder.get('acquired_epoch', now))
        return ('another deploy holds the lock %s: %s. It goes stale in %ds (stale_after=%ds); '
                'if that run is gone, release the lock explicitly (force=true, or rolling_update_release_lock=true).'
                % (self.lock_dir, describe(holder, now), max(0, int(stale_after - age)), stale_after))
