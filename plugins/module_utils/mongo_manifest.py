# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups under a root directory: manifest, verification, listing, the ``latest`` pointer, partial dirs, locking.

Root layout::

    <root>/<name>/manifest.json            the manifest (status "complete"), written last
    <root>/<name>/manifest.json.sha256     "<sha256>  manifest.json" (sha256sum -c format)
    <root>/<name>/verification.json        outcome of the last verification of this backup
    <root>/<name>/<db>/<coll>.bson[.gz]    data (mongodump layout), <coll>.metadata.json[.gz]
    <root>/<name>/oplog.bson               oplog slice (only with oplog capture)
    <root>/.partial-<name>-<pid>/          a dump in progress (or killed); never listed as complete
    <root>/latest -> <name>                symlink, only ever pointing at a verified backup
    <root>/.lock                           flock held by dump and prune

Backup status, as ``list`` reports it:

* ``verified``: manifest complete, its sha256 matches the sidecar, and the last
  full verification (``verification.json``) passed for exactly this manifest.
* ``complete``: manifest complete and intact, but no passing verification recorded.
* ``corrupt``: manifest missing, unreadable, not complete or not matching its
  sidecar, or the last verification failed.
* ``partial``: a ``.partial-*`` directory (dump running, failed or killed).

Directories that hold none of these files are not backups and are never touched.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time

from concurrent.futures import ThreadPoolExecutor

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import canonical_json, read_small_file, scan_data_file, parse_metadata

MANIFEST = 'manifest.json'
MANIFEST_SHA = 'manifest.json.sha256'
VERIFICATION = 'verification.json'
PARTIAL_PREFIX = '.partial-'
PARTIAL_MARKER = '.partial.json'
LATEST = 'latest'
LOCK = '.lock'
FORMAT = 'nodeops.stack.mongo_backup/1'
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$')
DIR_MODE = 0o750
FILE_MODE = 0o640


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(dt):
    """ISO 8601 UTC with milliseconds and a Z."""
    return dt.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (dt.microsecond // 1000)


def parse_iso(text):
    """Parse what :func:`iso` writes (and plain ISO 8601 with an offset)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace('Z', '+00:00')).astimezone(datetime.timezone.utc)
    except ValueError:
        return None


def validate_name(name, param='backup_name'):
    """A backup name is a single safe path component and not a reserved name."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (LATEST,) or name.startswith(PARTIAL_PREFIX):
        raise MongoBackupError("%s: '%s' is not a valid backup name: use 1-200 characters from A-Z a-z 0-9 . _ + -, "
                               "starting with a letter or digit, and not 'latest'" % (param, name))
    return name


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b''):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path, obj, mode=FILE_MODE):
    """Write JSON through a temp file + rename (+ fsync); returns the bytes written."""
    data = canonical_json(obj).encode('utf-8')
    tmp = '%s.tmp-%d' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(os.path.dirname(path))
    return data


# --------------------------------------------------------------------------- manifest

def write_manifest(backup_path, manifest):
    """Write manifest.json then its sha256 sidecar; returns the manifest's sha256."""
    data = write_json_atomic(os.path.join(backup_path, MANIFEST), manifest)
    digest = sha256_bytes(data)
    sidecar = os.path.join(backup_path, MANIFEST_SHA)
    tmp = sidecar + '.tmp-%d' % os.getpid()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, 'w') as fh:
        fh.write('%s  %s\n' % (digest, MANIFEST))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, sidecar)
    fsync_dir(backup_path)
    return digest


def load_manifest(backup_path):
    """``(manifest, manifest_sha256, problems)``: the manifest if it could be read, and what is wrong with it."""
    problems = []
    path = os.path.join(backup_path, MANIFEST)
    try:
        with open(path, 'rb') as fh:
            data = fh.read()
    except OSError as exc:
        return None, None, ['%s: cannot read the manifest (%s)' % (MANIFEST, exc.strerror or exc)]
    digest = sha256_bytes(data)
    try:
        with open(os.path.join(backup_path, MANIFEST_SHA), 'r') as fh:
            expected = fh.read().split()[0].strip().lower()
    except (OSError, IndexError):
        expected = None
        problems.append('%s: missing or empty, so the manifest cannot be checked' % MANIFEST_SHA)
    if expected is not None and expected != digest:
        problems.append('%s: sha256 mismatch (the sidecar %s says %s, the file has %s): the manifest was modified'
                        % (MANIFEST, MANIFEST_SHA, expected[:16], digest[:16]))
    try:
        manifest = json.loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append('%s: not valid JSON (%s)' % (MANIFEST, exc))
        return None, digest, problems
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        problems.append('%s: not a %s manifest' % (MANIFEST, FORMAT))
        return None, digest, problems
    if manifest.get('status') != 'complete':
        problems.append('%s: status is %r, not complete' % (MANIFEST, manifest.get('status')))
    return manifest, digest, problems


def manifest_files(manifest):
    """Every file a manifest lists: ``{relative path: entry}`` where entry has sha256/file_bytes (+ kind)."""
    files = {}
    for coll in manifest.get('collections', []):
        if coll.get('file'):
            files[coll['file']] = dict(kind='data', compression=manifest.get('compression', 'none'), entry=coll,
                                       sha256=coll.get('sha256'), file_bytes=coll.get('file_bytes'))
        if coll.get('metadata_file'):
            files[coll['metadata_file']] = dict(kind='metadata', entry=coll, sha256=coll.get('metadata_sha256'),
                                                file_bytes=coll.get('metadata_bytes'))
    oplog = manifest.get('oplog') or {}
    if oplog.get('file'):
        files[oplog['file']] = dict(kind='data', compression=oplog.get('compression', manifest.get('compression', 'none')), entry=oplog,
                                    sha256=oplog.get('sha256'), file_bytes=oplog.get('file_bytes'))
    return files


def _safe_relpath(rel):
    return isinstance(rel, str) and rel and not rel.startswith('/') and '..' not in rel.split('/')


def _check_file(backup_path, rel, info, deep):
    """Problems of one listed file: ``(errors, files_checked, documents, bytes_read)``."""
    if not _safe_relpath(rel):
        return ['%s: unsafe path in the manifest' % rel], 0, 0, 0
    path = os.path.join(backup_path, rel)
    try:
        size = os.lstat(path).st_size
    except OSError:
        return ['%s: missing (listed in the manifest)' % rel], 0, 0, 0
    if os.path.islink(path) or not os.path.isfile(path):
        return ['%s: not a regular file' % rel], 0, 0, 0
    errors = []
    if size != info.get('file_bytes'):
        truncated = isinstance(info.get('file_bytes'), int) and size < info['file_bytes']
        errors.append('%s: size mismatch: %d bytes on disk, %s in the manifest%s'
                      % (rel, size, info.get('file_bytes'), ' (truncated)' if truncated else ''))
    if not deep:
        return errors, 1, 0, 0
    if info['kind'] == 'metadata':
        digest_now = sha256_file(path)
        if digest_now != info.get('sha256'):
            errors.append('%s: sha256 mismatch (manifest %s, file %s)' % (rel, str(info.get('sha256'))[:16], digest_now[:16]))
        else:
            try:
                parse_metadata(read_small_file(path), rel)
            except (MongoBackupError, OSError, EOFError, ValueError) as exc:
                errors.append(str(exc))
        return errors, 1, 0, size
    scan = scan_data_file(path, info.get('compression', 'none'))
    entry = info['entry']
    problems = []
    if scan['sha256'] != info.get('sha256'):
        problems.append('sha256 mismatch (manifest %s, file %s)' % (str(info.get('sha256'))[:16], scan['sha256'][:16]))
    if scan['error']:
        problems.append(scan['error'])
    else:
        if entry.get('documents') is not None and scan['documents'] != entry.get('documents'):
            problems.append('%d documents, the manifest says %s' % (scan['documents'], entry.get('documents')))
        if entry.get('bson_bytes') is not None and scan['bson_bytes'] != entry.get('bson_bytes'):
            problems.append('%d BSON bytes, the manifest says %s' % (scan['bson_bytes'], entry.get('bson_bytes')))
        if entry.get('bson_sha256') and scan['bson_sha256'] != entry.get('bson_sha256'):
            problems.append('uncompressed sha256 mismatch')
    if problems:
        # a size mismatch is implied by the sha256/truncation details; keep one line per file
        errors = ['%s: %s' % (rel, '; '.join(([errors[0].split(': ', 1)[1]] if errors else []) + problems))]
    return errors, 1, scan['documents'], scan['file_bytes']


def verify_backup(backup_path, deep=True, allow=(), workers=1):
    """Check a backup against its manifest; returns ``{ok, errors, files_checked, documents, manifest_sha256, manifest}``.

    Detects a manifest changed after it was written (sidecar hash), missing
    files, files not listed in the manifest, size and sha256 mismatches
    (flipped bits, truncation), streams that do not decompress, broken BSON
    framing and document counts that differ from the manifest. ``deep=False``
    checks only the manifest, file presence and sizes. ``allow`` names extra
    files that may exist. ``workers`` files are read at a time (decompression
    and hashing release the GIL); errors come out in file name order anyway.
    """
    manifest, digest, errors = load_manifest(backup_path)
    result = {'ok': False, 'errors': errors, 'files_checked': 0, 'documents': 0, 'bytes_read': 0,
              'manifest_sha256': digest, 'manifest': manifest}
    if manifest is None:
        return result
    expected = manifest_files(manifest)
    names = sorted(expected)
    if workers > 1 and len(names) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(lambda rel: _check_file(backup_path, rel, expected[rel], deep), names))
    else:
        outcomes = [_check_file(backup_path, rel, expected[rel], deep) for rel in names]
    for file_errors, checked, documents, bytes_read in outcomes:
        errors.extend(file_errors)
        result['files_checked'] += checked
        result['documents'] += documents
        result['bytes_read'] += bytes_read
    known = set(expected) | {MANIFEST, MANIFEST_SHA, VERIFICATION, PARTIAL_MARKER} | set(allow)
    for dirpath, dirnames, filenames in os.walk(backup_path):
        dirnames.sort()
        for filename in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, filename), backup_path).replace(os.sep, '/')
            if rel not in known:
                errors.append('%s: unexpected file, not listed in the manifest' % rel)
    result['ok'] = not errors
    return result


def record_verification(backup_path, result, when=None):
    """Write verification.json for a verification outcome."""
    record = {
        'verified_at': iso(when or utc_now()),
        'result': 'ok' if result['ok'] else 'failed',
        'manifest_sha256': result.get('manifest_sha256'),
        'files_checked': result.get('files_checked'),
        'documents': result.get('documents'),
        'errors': result.get('errors', [])[:50],
    }
    write_json_atomic(os.path.join(backup_path, VERIFICATION), record)
    return record


# --------------------------------------------------------------------------- listing

def is_backup_dir(path):
    """A directory holding a manifest, its sidecar or a verification record."""
    return os.path.isdir(path) and not os.path.islink(path) and any(
        os.path.exists(os.path.join(path, f)) for f in (MANIFEST, MANIFEST_SHA, VERIFICATION))


def read_latest(root):
    """Name the ``latest`` symlink points at, or None."""
    link = os.path.join(root, LATEST)
    if not os.path.islink(link):
        return None
    target = os.readlink(link)
    return os.path.basename(target.rstrip('/'))


def set_latest(root, name):
    """Atomically point ``<root>/latest`` at ``name`` (relative symlink replaced through rename)."""
    link = os.path.join(root, LATEST)
    if os.path.lexists(link) and not os.path.islink(link):
        raise MongoBackupError("%s exists and is not a symlink; move it away so that 'latest' can point at the newest verified backup" % link)
    tmp = os.path.join(root, '.%s.tmp-%d' % (LATEST, os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, link)
    fsync_dir(root)


def remove_latest(root):
    link = os.path.join(root, LATEST)
    if os.path.islink(link):
        os.unlink(link)
        fsync_dir(root)


def backup_status(backup_path):
    """Cheap status of one backup directory (no data file is read)."""
    info = {'name': os.path.basename(backup_path), 'path': backup_path}
    manifest, digest, problems = load_manifest(backup_path)
    info['manifest_sha256'] = digest
    verification = None
    try:
        with open(os.path.join(backup_path, VERIFICATION), 'rb') as fh:
            verification = json.loads(fh.read().decode('utf-8'))
    except (OSError, ValueError, UnicodeDecodeError):
        verification = None
    if manifest is not None:
        info.update(
            created=manifest.get('started_at'),
            finished=manifest.get('finished_at'),
            size_bytes=(manifest.get('totals') or {}).get('file_bytes'),
            documents=(manifest.get('totals') or {}).get('documents'),
            collections=(manifest.get('totals') or {}).get('collections'),
            views=(manifest.get('totals') or {}).get('views'),
            compression=manifest.get('compression'),
            server_version=(manifest.get('server') or {}).get('version'),
            method=manifest.get('method'),
            oplog=bool((manifest.get('oplog') or {}).get('file')),
        )
    else:
        info['created'] = _dir_mtime(backup_path)
    if verification:
        info['verified_at'] = verification.get('verified_at')
    if problems:
        info['status'] = 'corrupt'
        info['problems'] = problems
    elif verification and verification.get('result') == 'failed' and verification.get('manifest_sha256') == digest:
        info['status'] = 'corrupt'
        info['problems'] = verification.get('errors') or ['the last verification failed']
    elif verification and verification.get('result') == 'ok' and verification.get('manifest_sha256') == digest:
        info['status'] = 'verified'
    else:
        info['status'] = 'complete'
    return info


def _dir_mtime(path):
    try:
        return iso(datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc))
    except OSError:
        return None


def partial_info(root, entry):
    """Details of a ``.partial-*`` directory from its marker."""
    path = os.path.join(root, entry)
    info = {'name': entry, 'path': path, 'status': 'partial'}
    marker = {}
    try:
        with open(os.path.join(path, PARTIAL_MARKER), 'rb') as fh:
            marker = json.loads(fh.read().decode('utf-8'))
    except (OSError, ValueError, UnicodeDecodeError):
        marker = {}
    info['pid'] = marker.get('pid')
    info['host'] = marker.get('host')
    info['backup_name'] = marker.get('name')
    info['created'] = marker.get('started_at') or _dir_mtime(path)
    info['alive'] = _owner_alive(marker)
    return info


def list_backups(root, deep=False):
    """``(backups, partials, foreign)`` under root; backups newest first, each with status and ``latest``."""
    backups, partials, foreign = [], [], []
    if not os.path.isdir(root):
        return backups, partials, foreign
    latest = read_latest(root)
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry == LATEST or (entry.startswith('.') and not entry.startswith(PARTIAL_PREFIX)):
            continue  # the pointer, the lock, temporary symlinks and directories being deleted
        if entry.startswith(PARTIAL_PREFIX) and os.path.isdir(path):
            partials.append(partial_info(root, entry))
            continue
        if not is_backup_dir(path):
            foreign.append(entry)
            continue
        info = backup_status(path)
        if deep and info['status'] in ('verified', 'complete'):
            result = verify_backup(path)
            info['deep_verified'] = result['ok']
            if not result['ok']:
                info['status'] = 'corrupt'
                info['problems'] = result['errors']
        info['latest'] = entry == latest
        backups.append(info)
    backups.sort(key=lambda b: (b.get('created') or '', b['name']), reverse=True)
    return backups, partials, foreign


# --------------------------------------------------------------------------- partial directories

def _proc_start_time(pid):
    try:
        with open('/proc/%d/stat' % pid, 'rb') as fh:
            stat = fh.read().decode('ascii', 'replace')
        return int(stat.rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _owner_alive(marker):
    """True/False when we can tell whether the dump that owns a partial dir still runs, None otherwise."""
    pid = marker.get('pid')
    if not isinstance(pid, int) or marker.get('host') != socket.gethostname():
        return None
    if not _pid_alive(pid):
        return False
    started = marker.get('proc_start')
    if started is not None:
        now = _proc_start_time(pid)
        if now is not None and now != started:
            return False  # the pid was reused by another process
    return True


def create_partial(root, name):
    """Create ``<root>/.partial-<name>-<pid>`` with its owner marker; returns the path."""
    path = os.path.join(root, '%s%s-%d' % (PARTIAL_PREFIX, name, os.getpid()))
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.mkdir(path, DIR_MODE)
    marker = {'pid': os.getpid(), 'host': socket.gethostname(), 'name': name, 'started_at': iso(utc_now()),
              'proc_start': _proc_start_time(os.getpid())}
    try:
        write_json_atomic(os.path.join(path, PARTIAL_MARKER), marker)
    except BaseException:
        # without its owner marker (a full disk) nobody could tell it is stale for partial_max_age_hours
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def stale_partials(root, max_age_hours, now=None):
    """Partial dirs whose dump is gone (same host, pid dead or reused) or that are older than max_age_hours."""
    now = now or time.time()
    stale = []
    if not os.path.isdir(root):
        return stale
    for entry in sorted(os.listdir(root)):
        if not entry.startswith(PARTIAL_PREFIX) or not os.path.isdir(os.path.join(root, entry)):
            continue
        info = partial_info(root, entry)
        try:
            age_hours = (now - os.stat(info['path']).st_mtime) / 3600.0
        except OSError:
            continue
        if info['alive'] is False:
            info['reason'] = 'its dump (pid %s) is no longer running' % info['pid']
        elif age_hours > max_age_hours:
            info['reason'] = 'older than %g hours' % max_age_hours
        else:
            continue
        stale.append(info)
    return stale


# --------------------------------------------------------------------------- lock

class RootLock(object):
    """Exclusive flock on ``<root>/.lock`` (dump and prune); released when the process dies."""

    def __init__(self, root, timeout=0.0):
        self.root = root
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        path = os.path.join(self.root, LOCK)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 64, 0).decode('ascii', 'replace').strip()
                    os.close(self.fd)
                    self.fd = None
                    raise MongoBackupError('another mongo_backup dump or prune is running in %s (lock %s held by pid %s); '
                                           'wait for it or raise lock_timeout' % (self.root, path, holder or 'unknown'))
                time.sleep(0.1)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, ('%d\n' % os.getpid()).encode('ascii'), 0)
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None
        return False
