# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modes that work on the backup root only: list, verify and prune (retention)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import datetime
import os
import shutil

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import (
    LATEST, RootLock, fsync_dir, is_backup_dir, iso, list_backups, parse_iso, read_latest, record_verification, remove_latest,
    set_latest, stale_partials, utc_now, verify_backup,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_retention import plan_retention

TRASH_PREFIX = '.trash-'


def resolve_backup(root, name, param='backup_name'):
    """Path of a backup given by name, ``latest``, or an absolute path to a backup directory."""
    if name is None:
        raise MongoBackupError('%s is required for this mode: name a backup under %s, or use latest' % (param, root))
    if os.path.isabs(name):
        path = name
    elif name == LATEST:
        target = read_latest(root)
        if target is None:
            raise MongoBackupError("%s: latest was requested but %s has no 'latest' pointer (no verified dump yet)" % (param, root))
        path = os.path.join(root, target)
    else:
        if '/' in name or name in ('.', '..'):
            raise MongoBackupError("%s: %r is not a backup name (give a name under backup_dir, latest, or an absolute path)" % (param, name))
        path = os.path.join(root, name)
    if not os.path.isdir(path):
        raise MongoBackupError('%s: no backup %s (%s does not exist or is not a directory)' % (param, name, path))
    if not is_backup_dir(path):
        raise MongoBackupError('%s: %s is not a backup (it has no manifest.json)' % (param, path))
    return os.path.realpath(path) if name == LATEST else path


# --------------------------------------------------------------------------- list

def run_list(cfg):
    root = cfg['backup_dir']
    backups, partials, foreign = list_backups(root, deep=cfg.get('deep', False))
    counts = {}
    for info in backups + partials:
        counts[info['status']] = counts.get(info['status'], 0) + 1
    return {
        'changed': False,
        'msg': '%d backups in %s (%s)' % (len(backups), root, ', '.join('%d %s' % (n, s) for s, n in sorted(counts.items())) or 'none'),
        'backups': backups,
        'partials': partials,
        'foreign': foreign,
        'latest': read_latest(root),
        'counts': counts,
    }


# --------------------------------------------------------------------------- verify

def run_verify(cfg, check_mode=False):
    """Verify one backup (backup_name) or all; records the outcome unless in check mode."""
    root = cfg['backup_dir']
    if cfg.get('backup_name'):
        paths = [resolve_backup(root, cfg['backup_name'])]
    else:
        backups, _partials, _foreign = list_backups(root)
        paths = [b['path'] for b in backups]
    results = []
    for path in paths:
        result = verify_backup(path, workers=cfg.get('parallel') or 1)
        if not check_mode:
            record_verification(path, result)
        results.append({'name': os.path.basename(path), 'path': path, 'ok': result['ok'], 'errors': result['errors'],
                        'files_checked': result['files_checked'], 'documents': result['documents'], 'bytes_read': result['bytes_read']})
    latest_before = read_latest(root)
    latest_changed = False
    failed_names = set(r['name'] for r in results if not r['ok'])
    if latest_before in failed_names and not check_mode:
        backups, _partials, _foreign = list_backups(root)
        good = [b for b in backups if b['status'] == 'verified']
        if good:
            set_latest(root, good[0]['name'])
        else:
            remove_latest(root)
        latest_changed = True
    failed = [r for r in results if not r['ok']]
    if failed:
        msg = 'verification failed for %d of %d backups: %s' % (len(failed), len(results), '; '.join(
            '%s: %s' % (r['name'], ', '.join(r['errors'][:3])) for r in failed[:5]))
    else:
        msg = '%d backups verified (%d files, %d documents)' % (len(results), sum(r['files_checked'] for r in results),
                                                                sum(r['documents'] for r in results))
    return {
        'changed': latest_changed,
        'failed': bool(failed),
        'verified': not failed,
        'msg': msg,
        'backups': results,
        'latest': read_latest(root),
        'latest_changed': latest_changed,
    }


# --------------------------------------------------------------------------- prune

def _created(info):
    created = parse_iso(info.get('created'))
    if created is None:
        try:
            created = datetime.datetime.fromtimestamp(os.stat(info['path']).st_mtime, datetime.timezone.utc)
        except OSError:
            created = utc_now()
    return created


def policy_of(cfg):
    return {'daily': cfg['keep_daily'], 'weekly': cfg['keep_weekly'], 'monthly': cfg['keep_monthly'], 'yearly': cfg['keep_yearly'],
            'prune_corrupt': cfg['prune_corrupt']}


def plan_prune(cfg, extra_new=None, check_mode=True):
    """Retention plan for the backups under the root (complete-but-unverified ones are verified first)."""
    root = cfg['backup_dir']
    backups, _partials, _foreign = list_backups(root)
    entries = []
    status = {}
    for info in backups:
        if info['status'] == 'complete':
            result = verify_backup(info['path'], workers=cfg.get('parallel') or 1)
            if not check_mode:
                record_verification(info['path'], result)
            info['status'] = 'verified' if result['ok'] else 'corrupt'
        status[info['name']] = info
        entries.append((info['name'], _created(info), info['status'] == 'verified'))
    if extra_new:
        entries.append((extra_new, utc_now(), True))
        status[extra_new] = {'name': extra_new, 'status': 'planned', 'path': os.path.join(root, extra_new)}
    latest = read_latest(root)
    plan = plan_retention(entries, daily=cfg['keep_daily'], weekly=cfg['keep_weekly'], monthly=cfg['keep_monthly'],
                          yearly=cfg['keep_yearly'], prune_unverified=cfg['prune_corrupt'], protect=[latest] if latest else [])
    kept = [{'name': k['name'], 'created': iso(k['time']), 'status': status[k['name']]['status'], 'reasons': k['reasons']}
            for k in plan['keep']]
    pruned = [{'name': p['name'], 'created': iso(p['time']), 'status': status[p['name']]['status'], 'reason': p['reason'],
               'path': status[p['name']]['path']} for p in plan['prune']]
    corrupt_kept = [k['name'] for k in kept if k['status'] == 'corrupt']
    return {
        'policy': policy_of(cfg),
        'kept': kept,
        'pruned': pruned,
        'corrupt_kept': corrupt_kept,
        'partials_removed': [{'name': p['name'], 'pid': p.get('pid'), 'reason': p['reason']}
                             for p in stale_partials(root, cfg['partial_max_age_hours'])],
    }


def _delete_backup(root, name):
    path = os.path.join(root, name)
    if not is_backup_dir(path) or os.path.dirname(os.path.abspath(path)) != os.path.abspath(root):
        raise MongoBackupError('refusing to delete %s: not a backup directory directly under %s' % (path, root))
    trash = os.path.join(root, '%s%s-%d' % (TRASH_PREFIX, name, os.getpid()))
    os.rename(path, trash)
    fsync_dir(root)
    shutil.rmtree(trash)


def prune_locked(cfg, check_mode=False):
    """Apply the retention policy (caller holds the root lock unless in check mode)."""
    root = cfg['backup_dir']
    plan = plan_prune(cfg, check_mode=check_mode)
    latest = read_latest(root)
    if not check_mode:
        for entry in plan['pruned']:
            if entry['name'] == latest:
                raise MongoBackupError('internal error: refusing to prune %s, the target of latest' % latest)
            _delete_backup(root, entry['name'])
        for info in stale_partials(root, cfg['partial_max_age_hours']):
            shutil.rmtree(info['path'], ignore_errors=True)
        for entry in os.listdir(root):
            if entry.startswith(TRASH_PREFIX):
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    plan['changed'] = bool(plan['pruned'] or plan['partials_removed'])
    return plan


def run_prune(cfg, check_mode=False):
    root = cfg['backup_dir']
    if not os.path.isdir(root):
        raise MongoBackupError('backup_dir: %s does not exist' % root)
    if check_mode:
        plan = prune_locked(cfg, check_mode=True)
    else:
        with RootLock(root, cfg.get('lock_timeout', 0)):
            plan = prune_locked(cfg, check_mode=False)
    verb = 'would prune' if check_mode else 'pruned'
    plan['msg'] = '%s %d backups, kept %d%s' % (verb, len(plan['pruned']), len(plan['kept']),
                                                ('; %d corrupt backups kept (prune_corrupt=false): %s' % (
                                                    len(plan['corrupt_kept']), ', '.join(plan['corrupt_kept']))) if plan['corrupt_kept'] else '')
    return plan
