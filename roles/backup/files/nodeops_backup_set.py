# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets: one MongoDB dump, one Redis RDB snapshot and one uploads tarball under one manifest.

The ``nodeops.stack.backup`` role copies this file with the ``mongo_*`` module
utilities to the backup host and runs it from a systemd timer (or cron)
through a thin entry point (``nodeops-backup``): a scheduled job cannot run an
Ansible module, and the dump/verify/restore logic must exist only once, in
these module utilities. Nothing here imports Ansible.

Layout of the set root (every set self-contained, so an off-site copy is one
directory)::

    <root>/sets/<name>/set.json               the set manifest, written last (sha256 sidecar set.json.sha256)
    <root>/sets/<name>/mongo/<name>/...       a mongo_backup backup (its own manifest, verified on its own)
    <root>/sets/<name>/redis/dump.rdb         the RDB snapshot taken for this set
    <root>/sets/<name>/uploads/uploads.tar.gz the uploads directory
    <root>/sets/.partial-<name>/              a set being written (renamed into place only when verified)
    <root>/sets/latest -> <name>              only ever a verified set

Records in the state directory (the monitoring contract):
``last-run.json`` after every run, ``restore-test.json`` after every restore
test, ``history.jsonl`` one line per run.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    MongoBackupError, connect, connection_secrets, describe_target, scrub, validate_connection_params,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_dump import dump
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import iter_raw_documents, open_decompressed
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import (
    RootLock, fsync_dir, load_manifest, read_latest, set_latest, sha256_bytes, sha256_file, utc_now,
    verify_backup, write_json_atomic,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_restore import restore
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_retention import plan_retention
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_select import NamespaceMapper, Selection

try:
    import redis as redis_lib
    HAS_REDIS = True
except ImportError:  # pragma: no cover
    redis_lib = None
    HAS_REDIS = False

SET_FORMAT = 'nodeops.stack.backup_set/1'
SET_MANIFEST = 'set.json'
SET_MANIFEST_SHA = 'set.json.sha256'
PARTIAL_PREFIX = '.partial-'
RDB_FILE = 'redis/dump.rdb'
UPLOADS_FILE = 'uploads/uploads.tar.gz'
DIR_MODE = 0o700
LAST_RUN = 'last-run.json'
RESTORE_TEST = 'restore-test.json'
HISTORY = 'history.jsonl'
# Encryption at rest (age): every part becomes one .age file; the header every age file starts with.
AGE_BINARY = 'age'
AGE_HEADER = b'age-encryption.org/v1'
AGE_SUFFIX = '.age'

# mongo_backup options the set runs with (the module's defaults; the role may override any of them)
MONGO_DEFAULTS = dict(
    uri=None, host=None, port=None, username=None, password=None, auth_source=None, tls=None, tls_ca_file=None,
    tls_certificate_key_file=None, connect_timeout=10.0, read_preference=None, method='pymongo', tools_path=None,
    databases=None, exclude_databases=None, namespaces=None, exclude_namespaces=None, include_internal_databases=False,
    compression='gzip', compression_level=None, batch_size=1000, parallel=4, oplog=False, update_latest=False, prune=False,
    keep_daily=7, keep_weekly=4, keep_monthly=3, keep_yearly=0, prune_corrupt=False, partial_max_age_hours=24.0,
    lock_timeout=0.0, drop=True, on_duplicate='skip', ns_from=None, ns_to=None, restore_indexes=True,
    restore_collection_options=True, bypass_document_validation=True, restore_batch_bytes=16777216, dry_run=False,
)
DEFAULT_LEVELS = {'gzip': 6, 'zstd': 3}


class BackupSetError(Exception):
    """A failure with a message meant for the operator (no traceback)."""


# --------------------------------------------------------------------------- helpers

def epoch():
    return int(time.time())


def mongo_cfg(params, backup_dir, **overrides):
    """The configuration mongo_dump/mongo_restore expect, from the set config's mongo options."""
    cfg = dict(MONGO_DEFAULTS)
    cfg.update((k, v) for k, v in (params or {}).items() if k in MONGO_DEFAULTS)
    cfg.update(overrides)
    validate_connection_params(cfg)
    if cfg['compression_level'] is None:
        cfg['compression_level'] = DEFAULT_LEVELS.get(cfg['compression'])
    cfg.update(backup_dir=os.path.normpath(backup_dir), target=describe_target(cfg), secrets=connection_secrets(cfg),
               selection=Selection(cfg['databases'], cfg['exclude_databases'], cfg['namespaces'], cfg['exclude_namespaces'],
                                   cfg['include_internal_databases']),
               mapper=NamespaceMapper(cfg['ns_from'], cfg['ns_to']))
    return cfg


def secrets_of(config):
    secrets = set(connection_secrets(config.get('mongo') or {}))
    if (config.get('redis') or {}).get('password'):
        secrets.add(config['redis']['password'])
    return secrets


def ssh_command(config, port):
    ssh = config.get('ssh') or {}
    argv = ['ssh', '-p', str(port or 22), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=accept-new',
            '-o', 'ConnectTimeout=%d' % int(ssh.get('connect_timeout', 10))]
    if ssh.get('key'):
        argv += ['-i', ssh['key'], '-o', 'IdentitiesOnly=yes']
    if ssh.get('known_hosts'):
        argv += ['-o', 'UserKnownHostsFile=%s' % ssh['known_hosts']]
    return ' '.join(argv)


def rsync(config, source, dest, port=None, extra=(), base=('-a', '--delete')):
    """rsync (over SSH when one side is ``[user@]host:path``); returns stdout, raises BackupSetError with rsync's message."""
    argv = ['rsync'] + list(base) + list(extra)
    if is_remote(source) or (dest and is_remote(dest)):
        argv += ['-e', ssh_command(config, port)]
    argv += [source] + ([dest] if dest else [])
    # TZ=UTC: --list-only prints modification times in local time; they are parsed as UTC.
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, env=dict(os.environ, TZ='UTC'))
    if proc.returncode != 0:
        raise BackupSetError('rsync %s -> %s failed (exit %d): %s' % (source, dest or '(list)', proc.returncode,
                                                                      proc.stderr.decode('utf-8', 'replace').strip()[-500:]))
    return proc.stdout.decode('utf-8', 'replace')


def is_remote(spec):
    """``[user@]host:path`` (rsync over SSH) rather than a local path."""
    return ':' in spec.split('/', 1)[0]


def remote_spec(host, user, path):
    """``user@host:path`` for rsync, or the local path when no host is given."""
    if not host:
        return path
    return '%s%s:%s' % ('%s@' % user if user else '', host, path)


def file_entry(set_path, rel, **extra):
    path = os.path.join(set_path, rel)
    entry = {'file': rel, 'file_bytes': os.path.getsize(path), 'sha256': sha256_file(path)}
    entry.update(extra)
    return entry


# --------------------------------------------------------------------------- parts

def take_mongo(config, set_path, name):
    cfg = mongo_cfg(config['mongo'], os.path.join(set_path, 'mongo'), backup_name=name)
    result = dump(cfg, lambda: connect(cfg))
    manifest, digest, problems = load_manifest(result['backup']['path'])
    if problems:
        raise BackupSetError('mongo dump %s: %s' % (name, '; '.join(problems)))
    collections = dict((c['ns'], {'documents': c.get('documents'), 'sha256': c.get('sha256'), 'type': c['type']})
                       for c in manifest.get('collections', []))
    return {'backup': name, 'dir': 'mongo', 'manifest_sha256': digest, 'documents': manifest['totals']['documents'],
            'collections': collections, 'size_bytes': manifest['totals']['file_bytes'], 'server': manifest.get('server')}


def redis_client(opts):
    if not HAS_REDIS:
        raise BackupSetError('the redis Python library is missing on the backup host (the role installs it into its venv)')
    return redis_lib.Redis(host=opts['host'], port=int(opts.get('port') or 6379), password=opts.get('password') or None,
                           socket_timeout=float(opts.get('socket_timeout', 10)), ssl=bool(opts.get('tls')))


def take_redis(config, set_path):
    """BGSAVE, wait until LASTSAVE (or the save counter) moves and the save succeeded, then copy the RDB file."""
    opts = config['redis']
    client = redis_client(opts)
    before = client.lastsave()
    saves_before = client.info('persistence').get('rdb_saves')
    try:
        client.bgsave()
    except redis_lib.ResponseError as exc:
        if 'in progress' not in str(exc):  # a save already running also produces a fresh snapshot: wait for it
            raise
    deadline = time.monotonic() + float(opts.get('bgsave_timeout', 300))
    while True:
        info = client.info('persistence')
        moved = client.lastsave() != before or (saves_before is not None and info.get('rdb_saves', 0) > saves_before)
        if moved and not info.get('rdb_bgsave_in_progress'):
            if info.get('rdb_last_bgsave_status') != 'ok':
                raise BackupSetError('redis BGSAVE failed on %s:%s (rdb_last_bgsave_status=%s); see the redis log'
                                     % (opts['host'], opts.get('port'), info.get('rdb_last_bgsave_status')))
            break
        if time.monotonic() > deadline:
            raise BackupSetError('redis BGSAVE on %s:%s did not finish within %ss (LASTSAVE still %s)'
                                 % (opts['host'], opts.get('port'), opts.get('bgsave_timeout', 300), before))
        time.sleep(0.2)
    lastsave = int(client.lastsave().timestamp())
    client.close()
    dest = os.path.join(set_path, RDB_FILE)
    os.makedirs(os.path.dirname(dest), DIR_MODE, exist_ok=True)
    source = remote_spec(opts.get('ssh_host'), opts.get('ssh_user'), opts['rdb_path'])
    if opts.get('ssh_host'):
        rsync(config, source, dest, opts.get('ssh_port'))
    else:
        shutil.copyfile(source, dest)
    with open(dest, 'rb') as fh:
        if fh.read(5) != b'REDIS':
            raise BackupSetError('%s (copied from %s) is not an RDB file (no REDIS magic)' % (dest, source))
    return file_entry(set_path, RDB_FILE, lastsave=lastsave, source=source)


def take_uploads(config, set_path, staging):
    """Mirror the uploads directory into the staging copy (rsync, incremental over SSH), then tar it into the set."""
    opts = config['uploads']
    source = remote_spec(opts.get('host'), opts.get('ssh_user'), opts['path'].rstrip('/') + '/')
    if opts.get('host') and opts.get('restricted'):
        source = remote_spec(opts.get('host'), opts.get('ssh_user'), './')  # rrsync on the source pins the directory
    os.makedirs(staging, DIR_MODE, exist_ok=True)
    rsync(config, source, staging.rstrip('/') + '/', opts.get('ssh_port'))
    dest = os.path.join(set_path, UPLOADS_FILE)
    os.makedirs(os.path.dirname(dest), DIR_MODE, exist_ok=True)
    files = 0
    with tarfile.open(dest, 'w:gz', compresslevel=int(opts.get('compression_level', 6))) as tar:
        for dirpath, dirnames, filenames in os.walk(staging):
            dirnames.sort()
            for dirname in dirnames:  # directory entries too, so a restore recreates them with their modes
                full = os.path.join(dirpath, dirname)
                tar.add(full, arcname=os.path.relpath(full, staging), recursive=False)
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                tar.add(full, arcname=os.path.relpath(full, staging), recursive=False)
                files += 1
    return file_entry(set_path, UPLOADS_FILE, files=files, source=source)


# --------------------------------------------------------------------------- set manifest

def write_set_manifest(set_path, manifest):
    data = write_json_atomic(os.path.join(set_path, SET_MANIFEST), manifest, mode=0o600)
    digest = sha256_bytes(data)
    with open(os.path.join(set_path, SET_MANIFEST_SHA), 'w') as fh:
        fh.write('%s  %s\n' % (digest, SET_MANIFEST))
    fsync_dir(set_path)
    return digest


def load_set(set_path):
    """``(manifest, problems)``."""
    try:
        with open(os.path.join(set_path, SET_MANIFEST), 'rb') as fh:
            data = fh.read()
        with open(os.path.join(set_path, SET_MANIFEST_SHA)) as fh:
            expected = fh.read().split()[0]
    except (OSError, IndexError) as exc:
        return None, ['%s: cannot read the set manifest or its sidecar (%s)' % (set_path, exc)]
    problems = []
    if sha256_bytes(data) != expected:
        problems.append('%s: sha256 does not match %s: the manifest was modified' % (SET_MANIFEST, SET_MANIFEST_SHA))
    try:
        manifest = json.loads(data.decode('utf-8'))
    except ValueError as exc:
        return None, problems + ['%s: not JSON (%s)' % (SET_MANIFEST, exc)]
    if manifest.get('format') != SET_FORMAT:
        problems.append('%s: not a %s manifest' % (SET_MANIFEST, SET_FORMAT))
    return manifest, problems


def verify_set(set_path, workers=1):
    """Re-read every part of a set against the set manifest; returns ``{ok, errors, manifest}``.

    An encrypted set is checked without the key: each part's ciphertext sha256 and its age header (the plaintext
    was verified before it was encrypted, and is verified again by ``decrypt_set``).
    """
    manifest, errors = load_set(set_path)
    if manifest is None:
        return {'ok': False, 'errors': errors, 'manifest': None}
    parts = manifest.get('parts', {})
    if manifest.get('encryption'):
        for key in sorted(parts):
            errors.extend(_check_file(set_path, key, parts[key], header=AGE_HEADER))
        return {'ok': not errors, 'errors': errors, 'manifest': manifest}
    if 'mongo' in parts:
        mongo_path = os.path.join(set_path, parts['mongo']['dir'], parts['mongo']['backup'])
        result = verify_backup(mongo_path, workers=workers)
        errors.extend('mongo: %s' % e for e in result['errors'])
        if result['manifest_sha256'] != parts['mongo']['manifest_sha256']:
            errors.append('mongo: the dump manifest is not the one the set recorded')
    for key in ('redis', 'uploads'):
        if key in parts:
            errors.extend(_check_file(set_path, key, parts[key]))
    if 'uploads' in parts and not errors:
        with tarfile.open(os.path.join(set_path, parts['uploads']['file']), 'r:gz') as tar:
            count = sum(1 for m in tar.getmembers() if m.isfile())
        if count != parts['uploads']['files']:
            errors.append('uploads: the tarball holds %d files, the set manifest says %d' % (count, parts['uploads']['files']))
    return {'ok': not errors, 'errors': errors, 'manifest': manifest}


def _check_file(set_path, key, part, header=None):
    """Errors of one part file: missing, sha256 differs from the manifest, or (encrypted) not an age file."""
    path = os.path.join(set_path, part['file'])
    if not os.path.isfile(path):
        return ['%s: %s is missing' % (key, part['file'])]
    if sha256_file(path) != part['sha256']:
        return ['%s: %s sha256 does not match the set manifest' % (key, part['file'])]
    if header is not None:
        with open(path, 'rb') as fh:
            if fh.read(len(header)) != header:
                return ['%s: %s is not an age-encrypted file' % (key, part['file'])]
    return []


# --------------------------------------------------------------------------- encryption at rest (age)

def encrypt_set(set_path, manifest, recipients):
    """Replace every part of a verified set by one age file for ``recipients`` (public keys only).

    The Mongo dump directory is packed into one tar first. Each part keeps its plaintext identity under
    ``plain`` (file, bytes, sha256), and gets the ciphertext's ``file``/``file_bytes``/``sha256``, so the set
    verifies without the key and ``decrypt_set`` can prove it got the very bytes back. The plaintext is removed.
    """
    if not recipients:
        raise BackupSetError('encryption is enabled but no recipient public key is configured (backup_encryption_recipients)')
    parts = manifest['parts']
    for key in sorted(parts):
        part = parts[key]
        if key == 'mongo':
            # The dump directory is streamed as a tar into age (no plaintext tar on disk); its files are compressed already.
            plain_rel = os.path.join(part['dir'], part['backup'] + '.tar')
            dump_dir = os.path.join(set_path, part['dir'], part['backup'])
            part['plain'] = age_encrypt_tar(dump_dir, part['backup'], os.path.join(set_path, plain_rel + AGE_SUFFIX), recipients)
            part['plain']['file'] = plain_rel
            shutil.rmtree(dump_dir)
            lock = os.path.join(set_path, part['dir'], '.lock')  # mongo_dump's released root lock: nothing to keep
            if os.path.exists(lock):
                os.unlink(lock)
        else:
            plain_rel = part['file']
            plain = os.path.join(set_path, plain_rel)
            part['plain'] = {'file': plain_rel, 'file_bytes': os.path.getsize(plain), 'sha256': sha256_file(plain)}
            age_encrypt(plain, plain + AGE_SUFFIX, recipients)
            os.unlink(plain)
        part.update(file_entry(set_path, plain_rel + AGE_SUFFIX))
    manifest['encryption'] = {'method': 'age', 'recipients': list(recipients)}
    return manifest


def _encrypt_argv(dest, recipients):
    argv = [AGE_BINARY, '--encrypt', '--output', dest]
    for recipient in recipients:
        argv += ['--recipient', recipient]
    return argv


def _no_age(exc):
    return BackupSetError('cannot run %s (%s): install the Debian package age (the role does when encryption is enabled)' % (AGE_BINARY, exc))


def age_encrypt(source, dest, recipients):
    _age(_encrypt_argv(dest, recipients) + [source], dest)


class _HashingWriter:
    """A write-only file object that counts and hashes what passes through it."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)


def age_encrypt_tar(directory, arcname, dest, recipients):
    """Stream a tar of ``directory`` (as ``arcname``) into ``age``; returns the plaintext tar's bytes and sha256."""
    try:
        proc = subprocess.Popen(_encrypt_argv(dest, recipients), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise _no_age(exc)
    writer = _HashingWriter(proc.stdin)
    written = False
    try:
        with tarfile.open(fileobj=writer, mode='w|') as tar:
            tar.add(directory, arcname=arcname)
        proc.stdin.close()
        written = True
    except BrokenPipeError:  # age stopped reading: its message below says why
        pass
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read()
    if proc.wait() != 0 or not written:
        if os.path.lexists(dest):
            os.unlink(dest)
        message = err.decode('utf-8', 'replace').strip()[-300:]
        raise BackupSetError('age encrypt of %s failed (exit %s): %s' % (directory, proc.returncode, message))
    return {'file_bytes': writer.size, 'sha256': writer.sha.hexdigest()}


def age_decrypt(source, dest, identity):
    """Decrypt with the identity handed over a pipe (``/dev/fd/N``): the private key never touches a disk here."""
    if len(identity) >= 65536:  # written whole into the pipe before age starts reading it
        raise BackupSetError('the age identity is larger than 64 KiB; pass only the key(s) needed for this set')
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, identity)
        os.close(write_fd)
        write_fd = None
        _age([AGE_BINARY, '--decrypt', '--identity', '/dev/fd/%d' % read_fd, '--output', dest, source], dest, pass_fds=(read_fd,))
    finally:
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)


def _age(argv, dest, pass_fds=()):
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, pass_fds=pass_fds)
    except OSError as exc:
        raise _no_age(exc)
    if proc.returncode != 0:
        if os.path.lexists(dest):
            os.unlink(dest)
        message = proc.stderr.decode('utf-8', 'replace').strip()[-300:]
        raise BackupSetError('age %s of %s failed (exit %d): %s' % (argv[1].lstrip('-'), argv[-1], proc.returncode, message))


def decrypt_set(set_path, dest, identity):
    """Write a plaintext copy of an encrypted set to ``dest`` (mode 0700) and verify it fully; returns its manifest.

    ``dest`` holds the layout of an unencrypted set (``mongo/<name>/``, ``redis/dump.rdb``, ``uploads/...``) with a
    plaintext manifest, so everything that restores an unencrypted set restores it. ``dest`` must not exist.
    """
    check = verify_set(set_path)
    if not check['ok']:
        raise BackupSetError('set %s does not verify: %s' % (os.path.basename(set_path), '; '.join(check['errors'][:5])))
    manifest = check['manifest']
    if not manifest.get('encryption'):
        raise BackupSetError('set %s is not encrypted' % os.path.basename(set_path))
    os.mkdir(dest, DIR_MODE)
    try:
        parts = {}
        for key, part in sorted(manifest['parts'].items()):
            plain = part['plain']
            out = os.path.join(dest, plain['file'])
            os.makedirs(os.path.dirname(out), DIR_MODE, exist_ok=True)
            age_decrypt(os.path.join(set_path, part['file']), out, identity)
            if sha256_file(out) != plain['sha256']:
                raise BackupSetError('%s: the decrypted %s does not match the sha256 the set recorded' % (key, plain['file']))
            entry = dict((k, v) for k, v in part.items() if k not in ('plain', 'file', 'file_bytes', 'sha256'))
            if key == 'mongo':
                _extract_dump(out, os.path.dirname(out), part['backup'])
                os.unlink(out)
            else:
                entry.update(plain)
            parts[key] = entry
        plain_manifest = dict((k, v) for k, v in manifest.items() if k != 'encryption')
        plain_manifest.update(parts=parts, decrypted_from=set_path)
        write_set_manifest(dest, plain_manifest)
        result = verify_set(dest)
        if not result['ok']:
            raise BackupSetError('the decrypted set %s does not verify: %s' % (manifest['name'], '; '.join(result['errors'][:5])))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return plain_manifest


def _extract_dump(tar_path, dest_dir, name):
    """Unpack the Mongo dump tar, accepting only regular files and directories under ``<name>/``."""
    with tarfile.open(tar_path, 'r') as tar:
        members = tar.getmembers()
        for member in members:
            parts = member.name.split('/')
            if parts[0] != name or '..' in parts or member.name.startswith('/') or not (member.isfile() or member.isdir()):
                raise BackupSetError('the decrypted Mongo dump holds an unexpected entry %r' % member.name)
        for member in members:
            target = os.path.join(dest_dir, member.name)
            if member.isdir():
                os.makedirs(target, DIR_MODE, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), DIR_MODE, exist_ok=True)
            with tar.extractfile(member) as src, open(target, 'wb') as dst:
                shutil.copyfileobj(src, dst)


def list_sets(sets_dir):
    """Sets newest first: name, path, created (epoch), status (verified/corrupt) from the manifests (cheap)."""
    out = []
    if not os.path.isdir(sets_dir):
        return out
    for entry in sorted(os.listdir(sets_dir)):
        path = os.path.join(sets_dir, entry)
        if entry.startswith('.') or entry == 'latest' or os.path.islink(path) or not os.path.isdir(path):
            continue
        manifest, problems = load_set(path)
        if manifest is None:
            out.append({'name': entry, 'path': path, 'status': 'corrupt', 'created': int(os.stat(path).st_mtime), 'problems': problems})
            continue
        out.append({'name': entry, 'path': path, 'created': manifest.get('started_at'), 'finished': manifest.get('finished_at'),
                    'size_bytes': manifest.get('size_bytes'), 'problems': problems,
                    'status': 'verified' if manifest.get('verified') and not problems else 'corrupt'})
    out.sort(key=lambda s: (s['created'] or 0, s['name']), reverse=True)
    return out


# --------------------------------------------------------------------------- the run

def run_set(config, now=None):
    """Take one verified set; returns the last-run record (raises nothing: failures become result failed)."""
    started = epoch()
    record = {'result': 'failed', 'started_at': started, 'finished_at': None, 'verified': False, 'backup': None,
              'size_bytes': 0, 'error': None, 'parts': {}, 'offsite': None, 'retention': None}
    secrets = secrets_of(config)
    sets_dir = os.path.join(config['root'], 'sets')
    try:
        os.makedirs(sets_dir, DIR_MODE, exist_ok=True)
        with RootLock(sets_dir, float(config.get('lock_timeout', 0))):
            name = (now or utc_now()).strftime(config.get('name_format') or '%Y%m%dT%H%M%SZ')
            base, counter = name, 1
            while os.path.lexists(os.path.join(sets_dir, name)):
                counter += 1
                name = '%s-%d' % (base, counter)
            record['backup'] = name
            record.update(_take_set(config, sets_dir, name, started))
            record['result'] = 'success'
            if (config.get('offsite') or {}).get('enabled'):
                record['offsite'] = offsite_copy(config, os.path.join(sets_dir, name))
            record['retention'] = prune_sets(config, sets_dir)
    except Exception as exc:  # pylint: disable=broad-except
        record['result'] = 'failed'
        record['error'] = scrub(_describe(exc), secrets)
        if config.get('debug'):
            record['traceback'] = scrub(traceback.format_exc(), secrets)
    record['finished_at'] = epoch()
    record['duration_seconds'] = record['finished_at'] - started
    report(config, LAST_RUN, record, 'backup')
    return record


def _describe(exc):
    if isinstance(exc, MongoBackupError):
        return 'mongo: %s' % exc.msg
    if isinstance(exc, BackupSetError):
        return str(exc)
    if mongo_common.HAS_PYMONGO and isinstance(exc, mongo_common.PyMongoError):
        return 'mongo: %s: %s' % (type(exc).__name__, exc)
    if HAS_REDIS and isinstance(exc, redis_lib.RedisError):
        return 'redis: %s: %s' % (type(exc).__name__, exc)
    return '%s: %s' % (type(exc).__name__, exc)


def _take_set(config, sets_dir, name, started):
    partial = os.path.join(sets_dir, PARTIAL_PREFIX + name)
    if os.path.lexists(partial):
        shutil.rmtree(partial)
    for entry in os.listdir(sets_dir):  # partial sets of earlier runs (the lock proves their run is gone)
        if entry.startswith(PARTIAL_PREFIX):
            shutil.rmtree(os.path.join(sets_dir, entry), ignore_errors=True)
    os.mkdir(partial, DIR_MODE)
    try:
        parts = {}
        if (config.get('mongo') or {}).get('enabled', True):
            parts['mongo'] = take_mongo(config, partial, name)
        if (config.get('redis') or {}).get('enabled'):
            parts['redis'] = take_redis(config, partial)
        if (config.get('uploads') or {}).get('enabled'):
            parts['uploads'] = take_uploads(config, partial, os.path.join(config['root'], '.staging', 'uploads'))
        size = sum(p.get('size_bytes', p.get('file_bytes', 0)) or 0 for p in parts.values())
        manifest = {'format': SET_FORMAT, 'name': name, 'host': os.uname()[1], 'started_at': started, 'finished_at': epoch(),
                    'size_bytes': size, 'parts': parts, 'verified': False}
        write_set_manifest(partial, manifest)
        check = verify_set(partial, workers=int((config.get('mongo') or {}).get('parallel', 1) or 1))
        if not check['ok']:
            raise BackupSetError('the new set %s did not verify, so it was discarded: %s' % (name, '; '.join(check['errors'][:5])))
        encryption = config.get('encryption') or {}
        if encryption.get('enabled'):
            # Encrypted only after the plaintext verified; then the ciphertext is verified like any set.
            encrypt_set(partial, manifest, encryption.get('recipients') or [])
            write_set_manifest(partial, manifest)
            check = verify_set(partial)
            if not check['ok']:
                raise BackupSetError('the encrypted set %s did not verify, so it was discarded: %s' % (name, '; '.join(check['errors'][:5])))
        manifest['verified'] = True
        manifest['verified_at'] = epoch()
        write_set_manifest(partial, manifest)
        final = os.path.join(sets_dir, name)
        os.rename(partial, final)
        fsync_dir(sets_dir)
        set_latest(sets_dir, name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        if (config.get('encryption') or {}).get('enabled'):
            # No plaintext copy of the uploads may stay at rest (the next pull is a full one).
            shutil.rmtree(os.path.join(config['root'], '.staging'), ignore_errors=True)
    return {'verified': True, 'encrypted': bool((config.get('encryption') or {}).get('enabled')), 'size_bytes': size,
            'parts': dict((k, _summary(v)) for k, v in parts.items()), 'path': final}


def _summary(part):
    return dict((k, v) for k, v in part.items() if k not in ('collections', 'server'))


def offsite_copy(config, set_path):
    """rsync the finished set to the off-site target (``[user@]host:path`` over SSH, or a local path), then apply
    the same retention there (``offsite.prune``, default on)."""
    opts = config['offsite']
    target = opts['target'].rstrip('/') + '/'
    # --delay-updates: the set's files appear together at the end, so a cut transfer leaves no half-new set.
    rsync(config, set_path, target, opts.get('ssh_port'), extra=['--delay-updates'])
    out = {'target': target, 'result': 'success'}
    if opts.get('prune', True):
        out['retention'] = prune_offsite(config, target, protect=os.path.basename(set_path))
    return out


def list_offsite(config, target):
    """``[(name, mtime datetime)]`` of the sets at the off-site target: directories holding a set.json.

    One ``rsync --list-only`` (works through rrsync); a set's time is its directory's mtime, which rsync -a
    keeps from the backup host (when the set was verified).
    """
    listing = rsync(config, target, None, (config.get('offsite') or {}).get('ssh_port'), base=('--list-only', '-r'),
                    extra=['--include=/*/', '--include=/*/%s' % SET_MANIFEST, '--exclude=*'])
    return parse_offsite_listing(listing)


def parse_offsite_listing(listing):
    dirs, manifests = {}, set()
    for line in listing.splitlines():
        fields = line.split(None, 4)
        if len(fields) != 5:
            continue
        mode, _size, day, clock, name = fields
        if mode.startswith('d') and '/' not in name and not name.startswith('.'):
            stamp = datetime.datetime.strptime('%s %s' % (day, clock), '%Y/%m/%d %H:%M:%S')
            dirs[name] = stamp.replace(tzinfo=datetime.timezone.utc)
        elif name.endswith('/' + SET_MANIFEST) and name.count('/') == 1:
            manifests.add(name.split('/', 1)[0])
    return sorted((name, when) for name, when in dirs.items() if name in manifests)


def prune_offsite(config, target, protect):
    """Grandfather-father-son retention at the off-site target, planned from its own listing (so sets whose
    deletion failed earlier, or that the backup host no longer has, are judged by the same policy), never
    touching ``protect`` (the set just copied) or anything that is not a set."""
    keep = config.get('retention') or {}
    entries = [(name, when, True) for name, when in list_offsite(config, target)]
    plan = plan_retention(entries, daily=int(keep.get('daily', 7)), weekly=int(keep.get('weekly', 4)),
                          monthly=int(keep.get('monthly', 3)), yearly=int(keep.get('yearly', 0)), prune_unverified=False,
                          protect=[protect])
    pruned = [e['name'] for e in plan['prune'] if e['name'] != protect]
    if pruned:
        # An empty source with --delete removes exactly the included set directories at the target.
        empty = tempfile.mkdtemp(prefix='nodeops-offsite-')
        try:
            rsync(config, empty + '/', target, (config.get('offsite') or {}).get('ssh_port'), base=('-r', '--delete'),
                  extra=['--include=/%s/***' % name for name in pruned] + ['--exclude=*'])
        finally:
            os.rmdir(empty)
    return {'kept': [k['name'] for k in plan['keep']], 'pruned': pruned}


def prune_sets(config, sets_dir):
    """Grandfather-father-son retention over verified sets (never the newest verified one or ``latest``)."""
    keep = config.get('retention') or {}
    sets = list_sets(sets_dir)
    entries = [(s['name'], _dt(s['created']), s['status'] == 'verified') for s in sets]
    latest = read_latest(sets_dir)
    plan = plan_retention(entries, daily=int(keep.get('daily', 7)), weekly=int(keep.get('weekly', 4)),
                          monthly=int(keep.get('monthly', 3)), yearly=int(keep.get('yearly', 0)), prune_unverified=False,
                          protect=[latest] if latest else [])
    pruned = []
    for entry in plan['prune']:
        if entry['name'] == latest:
            continue
        trash = os.path.join(sets_dir, '.trash-%s' % entry['name'])
        os.rename(os.path.join(sets_dir, entry['name']), trash)
        shutil.rmtree(trash)
        pruned.append(entry['name'])
    return {'kept': [k['name'] for k in plan['keep']], 'pruned': pruned}


def _dt(value):
    return datetime.datetime.fromtimestamp(value or 0, datetime.timezone.utc)


# --------------------------------------------------------------------------- records and alerting

def write_record(config, name, record):
    state = config['state_dir']
    os.makedirs(state, DIR_MODE, exist_ok=True)
    write_json_atomic(os.path.join(state, name), record, mode=0o640)
    with open(os.path.join(state, HISTORY), 'a') as fh:
        fh.write(json.dumps(dict(record, kind=name.split('.')[0]), sort_keys=True) + '\n')


def report(config, name, record, kind):
    """Write the record and alert on failure. A record that cannot be written (the state directory's disk is full)
    goes into ``record_error`` and is alerted on too: the failure must not be lost along with its record."""
    try:
        write_record(config, name, record)
    except OSError as exc:
        record['record_error'] = 'could not record the run in %s: %s' % (config['state_dir'], exc.strerror or exc)
    if record['result'] != 'success' or record.get('record_error'):
        notify(config, kind, record)


def notify(config, kind, record):
    """POST the failure record to the webhook, when one is configured; a webhook error is recorded, never raised."""
    hook = config.get('webhook') or {}
    if not hook.get('url'):
        return None
    body = json.dumps({'source': 'nodeops.stack.backup', 'kind': kind, 'host': os.uname()[1], 'record': record}).encode('utf-8')
    try:
        req = Request(hook['url'], data=body, headers={'Content-Type': 'application/json'}, method='POST')
        with urlopen(req, timeout=float(hook.get('timeout', 10))) as resp:  # nosec - operator-configured URL
            return resp.status
    except Exception as exc:  # pylint: disable=broad-except
        # The URL may carry a token: name its host only.
        sys.stderr.write('webhook to %s failed: %s\n' % (urlsplit(hook['url']).hostname, exc))
        return None


# --------------------------------------------------------------------------- restore test and freshness

def _digest_of(raw_docs):
    """Order-independent digest of a collection: sha256 over the sorted sha256 of each raw BSON document."""
    return sha256_bytes(b''.join(sorted(hashlib.sha256(d).digest() for d in raw_docs)))


def restore_test(config, name='latest'):
    """Restore a set's Mongo dump into scratch databases, compare counts and content digests, check the other parts."""
    started = epoch()
    sets_dir = os.path.join(config['root'], 'sets')
    record = {'result': 'failed', 'started_at': started, 'finished_at': None, 'backup': None, 'collections': {}, 'error': None}
    opts = config.get('restore_test') or {}
    prefix = opts.get('db_prefix', 'nodeops_restoretest_')
    client = None
    scratch = set()
    try:
        path = os.path.realpath(os.path.join(sets_dir, name))
        record['backup'] = os.path.basename(path)
        check = verify_set(path)
        if not check['ok']:
            raise BackupSetError('set %s does not verify: %s' % (record['backup'], '; '.join(check['errors'][:5])))
        if check['manifest'].get('encryption'):
            raise BackupSetError('set %s is encrypted: the restore test needs the private key, which is never on the backup host; '
                                 'test restores with playbooks/restore.yml and the key instead' % record['backup'])
        parts = check['manifest']['parts']
        if 'mongo' in parts:
            mongo_root = os.path.join(path, parts['mongo']['dir'])
            cfg = mongo_cfg(config['mongo'], mongo_root, backup_name=parts['mongo']['backup'], drop=True,
                            ns_from=['*.*'], ns_to=[prefix + '*.*'], read_preference=None)
            restore(cfg, lambda: connect(cfg))
            manifest = load_manifest(os.path.join(mongo_root, parts['mongo']['backup']))[0]
            client = connect(cfg)
            mismatches = []
            for coll in manifest.get('collections', []):
                if coll['type'] != 'collection':
                    continue
                db_name = prefix + coll['db']
                scratch.add(db_name)
                target = client[db_name].get_collection(coll['collection'], codec_options=mongo_common.raw_codec_options())
                restored = [d.raw for d in target.find({}, batch_size=1000)]
                with open(os.path.join(mongo_root, parts['mongo']['backup'], coll['file']), 'rb') as fh:
                    expected = _digest_of(iter_raw_documents(open_decompressed(fh, manifest.get('compression', 'none')), coll['file']))
                got = _digest_of(restored)
                record['collections'][coll['ns']] = {'documents': len(restored), 'expected_documents': coll['documents'],
                                                     'digest_match': got == expected}
                if len(restored) != coll['documents'] or got != expected:
                    mismatches.append('%s: %d documents restored (manifest %d), content digest %s' % (
                        coll['ns'], len(restored), coll['documents'], 'matches' if got == expected else 'differs'))
            if mismatches:
                raise BackupSetError('restore test of %s failed: %s' % (record['backup'], '; '.join(mismatches[:5])))
        record['result'] = 'success'
    except Exception as exc:  # pylint: disable=broad-except
        record['error'] = scrub(_describe(exc), secrets_of(config))
    finally:
        if client is not None:
            for db_name in sorted(scratch):
                try:
                    client.drop_database(db_name)
                except Exception:  # pylint: disable=broad-except
                    pass
            client.close()
    record['finished_at'] = epoch()
    report(config, RESTORE_TEST, record, 'restore-test')
    return record


def freshness(config, max_age_hours, now=None):
    """The newest verified set and whether it is younger than ``max_age_hours``."""
    sets = [s for s in list_sets(os.path.join(config['root'], 'sets')) if s['status'] == 'verified']
    now = now or epoch()
    newest = sets[0] if sets else None
    age = (now - newest['finished']) / 3600.0 if newest else None
    return {'fresh': newest is not None and age <= max_age_hours, 'newest': newest['name'] if newest else None,
            'age_hours': round(age, 3) if age is not None else None, 'max_age_hours': max_age_hours, 'verified_sets': len(sets)}


# --------------------------------------------------------------------------- entry point

def main(argv=None):
    parser = argparse.ArgumentParser(prog='nodeops-backup', description='nodeops.stack backup sets (see the backup role README)')
    parser.add_argument('--config', default='/etc/nodeops-backup/config.json')
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('run', help='take a verified backup set now and write last-run.json')
    test = sub.add_parser('restore-test', help='restore a set into scratch databases and compare with its manifest')
    test.add_argument('--set', default='latest')
    fresh = sub.add_parser('freshness', help='report whether the newest verified set is recent enough')
    fresh.add_argument('--max-age-hours', type=float, required=True)
    sub.add_parser('list', help='list the sets')
    verify = sub.add_parser('verify', help='verify one set against its manifest')
    verify.add_argument('--set', default='latest')
    decrypt = sub.add_parser('decrypt', help='write a verified plaintext copy of an encrypted set (age identity on stdin)')
    decrypt.add_argument('--set', default='latest')
    decrypt.add_argument('--dest', required=True)
    args = parser.parse_args(argv)
    with open(args.config) as fh:
        config = json.load(fh)
    if args.command in ('run', 'restore-test'):
        # What the timer's units set (UMask=0077); cron and by-hand runs would otherwise write with the caller's umask.
        os.umask(0o077)
    if args.command == 'run':
        out = run_set(config)
        ok = out['result'] == 'success' and not out.get('record_error')
    elif args.command == 'restore-test':
        out = restore_test(config, args.set)
        ok = out['result'] == 'success' and not out.get('record_error')
    elif args.command == 'freshness':
        out = freshness(config, args.max_age_hours)
        ok = out['fresh']
    elif args.command == 'list':
        sets_dir = os.path.join(config['root'], 'sets')
        out = {'sets': list_sets(sets_dir), 'latest': read_latest(sets_dir)}
        ok = True
    elif args.command == 'decrypt':
        try:
            out = {'ok': True, 'path': args.dest, 'manifest': decrypt_set(
                os.path.realpath(os.path.join(config['root'], 'sets', args.set)), args.dest, sys.stdin.buffer.read())}
        except (BackupSetError, OSError) as exc:
            out = {'ok': False, 'error': str(exc)}
        ok = out['ok']
    else:
        result = verify_set(os.path.realpath(os.path.join(config['root'], 'sets', args.set)))
        out = {'ok': result['ok'], 'errors': result['errors']}
        ok = result['ok']
    sys.stdout.write(json.dumps(out, sort_keys=True, default=str) + '\n')
    return 0 if ok else 1
