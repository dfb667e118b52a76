# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release bookkeeping on an app node: manifests, ordering, rollback target, pruning, history.

Layout::

    <releases_dir>/<release_id>/.nodeops-release.json   manifest of that release
    <current_link> -> <releases_dir>/<release_id>         the live release
    <history_file>                                        one JSON line per deploy event

Releases are ordered by the manifest's ``seq`` (assigned once, when the release
is first recorded), never by directory mtime: copying, touching or restoring a
directory must not change which release counts as newer. Pruning keeps the
newest ``keep`` releases and, whatever ``keep`` says, the current release and
the newest healthy release before it (the rollback target).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import re
import shutil
import time

MANIFEST_NAME = '.nodeops-release.json'
STATUSES = ('pending', 'healthy', 'failed', 'rolled_back')
RELEASE_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$')
MANIFEST_FIELDS = ('version', 'git_sha', 'artifact_sha256', 'deployed_by', 'run_id')


class ReleaseError(Exception):
    """Bad input or an inconsistent release tree; the message names what and where."""


def utc_now(clock=time.time):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(clock()))


def check_release_id(release_id):
    if not isinstance(release_id, str) or not RELEASE_ID_RE.match(release_id) or release_id in ('.', '..'):
        raise ReleaseError('release_id: expected 1-128 characters of letters, digits and ._+- starting with a letter or digit, got %r'
                           % (release_id,))
    return release_id


def read_manifest(release_path):
    """The manifest dict of a release directory, or None when it has none (or it is unreadable)."""
    try:
        with open(os.path.join(release_path, MANIFEST_NAME)) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path, data, mode=0o644):
    tmp = '%s.tmp-%d' % (path, os.getpid())
    with open(tmp, 'w') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write('\n')
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def current_release_id(current_link):
    """Release id the ``current`` symlink points at, or None."""
    try:
        target = os.readlink(current_link)
    except OSError:
        return None
    return os.path.basename(os.path.normpath(target))


def list_releases(releases_dir):
    """Every release directory, oldest first by manifest seq (releases without a manifest sort first, by name)."""
    try:
        names = sorted(os.listdir(releases_dir))
    except FileNotFoundError:
        return []
    releases = []
    for name in names:
        path = os.path.join(releases_dir, name)
        if name.startswith('.') or not os.path.isdir(path) or os.path.islink(path):
            continue
        manifest = read_manifest(path)
        entry = {'release_id': name, 'path': path, 'seq': None, 'status': 'unknown'}
        if manifest:
            entry.update({k: manifest.get(k) for k in MANIFEST_FIELDS + ('deployed_at', 'status_changed_at')})
            entry['seq'] = manifest.get('seq') if isinstance(manifest.get('seq'), int) else None
            entry['status'] = manifest.get('status') if manifest.get('status') in STATUSES else 'unknown'
        releases.append(entry)
    releases.sort(key=lambda r: (r['seq'] is not None, r['seq'] or 0, r['release_id']))
    return releases


def previous_healthy(releases, exclude_id):
    """Newest healthy release other than ``exclude_id`` (by seq), or None."""
    for entry in reversed(releases):
        if entry['release_id'] != exclude_id and entry['status'] == 'healthy':
            return entry
    return None


def plan_prune(releases, keep, current_id):
    """Split releases into (kept, pruned); each kept entry says why it is kept."""
    if keep < 1:
        raise ReleaseError('keep: expected at least 1 release to keep, got %d' % keep)
    protected = {}
    if current_id:
        protected[current_id] = 'current'
        rollback = previous_healthy(releases, current_id)
        if rollback:
            protected.setdefault(rollback['release_id'], 'rollback target')
    newest = [r['release_id'] for r in releases[-keep:]]
    kept, pruned = [], []
    for entry in releases:
        rid = entry['release_id']
        if rid in protected:
            kept.append(dict(entry, reason=protected[rid]))
        elif rid in newest:
            kept.append(dict(entry, reason='newest %d' % keep))
        elif entry['status'] == 'pending' and entry['seq'] is not None and entry is releases[-1]:
            kept.append(dict(entry, reason='being deployed'))
        else:
            pruned.append(entry)
    return kept, pruned


class ReleaseStore:
    """Manifests and history under one app root. ``clock`` is injectable for tests."""

    def __init__(self, releases_dir, current_link, history_file=None, clock=time.time):
        self.releases_dir = releases_dir
        self.current_link = current_link
        self.history_file = history_file
        self.clock = clock

    def path(self, release_id):
        return os.path.join(self.releases_dir, check_release_id(release_id))

    def planned_manifest(self, release_id, fields, status=None):
        """The manifest ``record`` would write, and whether it differs from what is there."""
        path = self.path(release_id)
        if not os.path.isdir(path):
            raise ReleaseError('release %s does not exist under %s (unpack it first)' % (release_id, self.releases_dir))
        before = read_manifest(path)
        after = dict(before or {})
        after['release_id'] = release_id
        for key in MANIFEST_FIELDS:
            if fields.get(key) is not None:
                after[key] = fields[key]
        if before is None or not isinstance(before.get('seq'), int):
            seqs = [r['seq'] for r in list_releases(self.releases_dir) if r['seq'] is not None]
            after['seq'] = max(seqs, default=0) + 1
            after['deployed_at'] = utc_now(self.clock)
            after.setdefault('history', [])
        if status is None and after.get('status') not in STATUSES:
            status = 'pending'
        if status is not None:
            if status not in STATUSES:
                raise ReleaseError('status: expected one of %s, got %r' % (', '.join(STATUSES), status))
            if after.get('status') != status:
                after['status'] = status
                after['status_changed_at'] = utc_now(self.clock)
                after['history'] = list(after.get('history') or []) + [{'status': status, 'at': after['status_changed_at']}]
        return before, after

    def record(self, release_id, fields, status=None, check_mode=False):
        before, after = self.planned_manifest(release_id, fields, status)
        changed = before != after
        if changed and not check_mode:
            write_json_atomic(os.path.join(self.path(release_id), MANIFEST_NAME), after)
        return changed, before, after

    def append_history(self, event, check_mode=False):
        """Append one JSON line to the history file (created 0644 when missing)."""
        if not self.history_file:
            raise ReleaseError('history_file: required to append a history event')
        line = dict(event, at=event.get('at') or utc_now(self.clock))
        if not check_mode:
            parent = os.path.dirname(self.history_file)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, mode=0o755)
            with open(self.history_file, 'a') as handle:
                handle.write(json.dumps(line, sort_keys=True) + '\n')
                handle.flush()
                os.fsync(handle.fileno())
        return line

    def prune(self, keep, check_mode=False):
        kept, pruned = plan_prune(list_releases(self.releases_dir), keep, current_release_id(self.current_link))
        if not check_mode:
            for entry in pruned:
                shutil.rmtree(entry['path'])
        return kept, pruned

    def summary(self):
        releases = list_releases(self.releases_dir)
        current = current_release_id(self.current_link)
        rollback = previous_healthy(releases, current)
        return {
            'releases': releases,
            'current': current,
            'current_status': next((r['status'] for r in releases if r['release_id'] == current), None),
            'rollback_target': rollback['release_id'] if rollback else None,
        }
