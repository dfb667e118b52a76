#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: mongo_backup
short_description: Verified logical backups of MongoDB - dump, restore, verify, list and GFS retention
version_added: 0.1.0
description:
  - Logical backup and restore of MongoDB through pymongo, streaming with bounded memory whatever the collection sizes,
    in the directory layout of C(mongodump)/C(mongorestore) plus a manifest that makes every backup verifiable.
  - O(mode=dump) reads each collection with a batched cursor of raw BSON documents (never decoded or re-encoded) and writes
    C(<db>/<collection>.bson[.gz]) and C(<db>/<collection>.metadata.json[.gz]) (options, indexes, uuid, type, in
    mongodump's format), views as metadata only, and C(manifest.json) (per collection the document count, BSON and file
    bytes and the sha256 of the file as written; server version, start and end time, oplog position, tool version and the
    options used) with its own sha256 in C(manifest.json.sha256).
  - A dump is written to C(<backup_dir>/.partial-<name>-<pid>), re-read completely against its manifest, and only then
    renamed to C(<backup_dir>/<name>); the C(latest) symlink is replaced atomically afterwards, so it only ever names a
    verified backup. A killed dump leaves only a C(.partial-*) directory, which the next dump or prune removes once the
    process that owned it is gone (or it is older than O(partial_max_age_hours)).
  - O(mode=restore) verifies the whole backup first and refuses it, naming the files, if anything does not match the
    manifest; only then does it touch the server. It drops (O(drop)) or merges into the targets, renames namespaces
    (O(ns_from)/O(ns_to)), recreates collection options, indexes and views, and can do a dry run.
  - O(mode=verify) re-reads backups against their manifests (sha256, sizes, document counts from the BSON framing,
    missing and unknown files, a modified manifest). O(mode=list) reports the backups with their status.
    O(mode=prune) applies grandfather-father-son retention (O(keep_daily), O(keep_weekly), O(keep_monthly),
    O(keep_yearly)); so does O(mode=dump) with O(prune=true).
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.mongodb
  - nodeops.stack.attributes
  - nodeops.stack.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - O(mode=dump) connects and reports the collections (with estimated document counts), the backup name, the stale
        partial directories and, with O(prune=true), the retention plan, without writing anything.
      - O(mode=restore) verifies the backup and reports the source and target namespaces with their document counts and
        what would happen to each target (like O(dry_run=true)), without writing anything.
      - O(mode=prune) reports what would be pruned and why the others are kept. O(mode=verify) verifies without recording
        the outcome.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - zstandard (Python library, only for O(compression=zstd))
  - mongodump and mongorestore (MongoDB Database Tools, only for O(method=mongodump))
notes:
  - Backups hold the data of the databases; directories are created with mode 0750 and files with mode 0640.
  - The status of a backup is V(verified) (manifest intact and the last full verification passed), V(complete)
    (manifest intact, no passing verification recorded), V(corrupt) (manifest missing, modified or incomplete, or the
    last verification failed) or V(partial) (a C(.partial-*) directory of a running, failed or killed dump).
    Directories under O(backup_dir) that hold no manifest are not backups; they are listed as RV(foreign) and never touched.
  - "Retention: only verified backups fill the daily/weekly/monthly/yearly slots (the newest verified backup of each of
    the N most recent UTC days, ISO weeks, months or years that have one; rules are independent and a backup may be kept
    for several reasons). The newest verified backup and the target of C(latest) are always kept. Backups in status
    V(complete) are verified first. Corrupt backups never fill a slot; they are kept and reported unless
    O(prune_corrupt=true). Partial directories are not subject to retention: they are removed once stale (see above)."
  - System collections (C(system.*)) are skipped except C(system.js), as mongodump does; view definitions are saved as
    view metadata. Time series collections are skipped with method pymongo (reported in RV(skipped)).
  - With gzip the metadata files are gzipped too (C(.metadata.json.gz)), exactly as C(mongodump --gzip) names them, so
    C(mongorestore --gzip --dir <backup>) reads a backup as is. zstd backups can only be restored by this module.
  - With O(oplog=true) the oplog entries written during the dump are saved to C(oplog.bson) (compressed like the
    collections, as C(mongodump --gzip --oplog) does); replay them with C(mongorestore --oplogReplay) for a
    point-in-time-consistent restore. This module restores the collections, not the oplog.
seealso:
  - name: mongodump
    description: The MongoDB Database Tools' dump program, whose output layout this module writes.
    link: https://www.mongodb.com/docs/database-tools/mongodump/
  - name: mongorestore
    description: Restores the layout this module writes.
    link: https://www.mongodb.com/docs/database-tools/mongorestore/
options:
  mode:
    description:
      - V(dump) creates a new backup, V(restore) restores one, V(verify) re-reads backups against their manifests,
        V(list) reports the backups under O(backup_dir), V(prune) applies the retention policy.
    type: str
    required: true
    choices: [dump, restore, verify, list, prune]
  backup_dir:
    description:
      - Absolute path of the directory that holds the backups (one subdirectory per backup, plus the C(latest) symlink).
        O(mode=dump) creates it when missing.
    type: path
    required: true
  backup_name:
    description:
      - O(mode=dump) the name of the new backup. Default is the UTC start time as C(20261122T020000Z). A value containing
        C(%) is a C(strftime) format applied to the UTC time (for example C(nightly-%Y%m%dT%H%M%SZ)); generated names that
        exist already get a C(-2), C(-3) ... suffix. A plain name that exists already and is intact makes the task
        succeed without change (so a named pre-deploy backup is taken once).
      - O(mode=restore) (required) and O(mode=verify) the backup to use, a name under O(backup_dir), V(latest), or an
        absolute path to a backup directory. O(mode=verify) without it verifies every backup.
    type: str
  method:
    description:
      - V(pymongo) dumps and restores through pymongo.
      - V(mongodump) runs C(mongodump)/C(mongorestore) (which must be installed on the managed node) for the data
        transfer; the manifest, the verification, the atomic rename, C(latest) and retention work the same.
    type: str
    default: pymongo
    choices: [pymongo, mongodump]
  tools_path:
    description:
      - Directory holding C(mongodump) and C(mongorestore), searched before C(PATH), for O(method=mongodump).
    type: path
  databases:
    description:
      - Only these databases (shell wildcards, for example C(shop*)). Default is every database except the internal
        ones. An internal database (C(admin), C(config), C(local)) named literally here is included.
      - For O(mode=restore) this selects from the databases in the backup.
    type: list
    elements: str
  exclude_databases:
    description:
      - Databases to leave out (shell wildcards).
    type: list
    elements: str
  namespaces:
    description:
      - Only the namespaces matching these C(db.collection) patterns (shell wildcards, for example C(shop.orders*) or
        C(*.sessions)). Combined with O(databases), a namespace must match both.
    type: list
    elements: str
  exclude_namespaces:
    description:
      - Namespaces to leave out (C(db.collection) patterns with shell wildcards).
    type: list
    elements: str
  include_internal_databases:
    description:
      - Include the C(admin) and C(config) databases (C(local) is only ever included when named in O(databases)).
    type: bool
    default: false
  compression:
    description:
      - Compression of the data files. V(zstd) needs the C(zstandard) Python library and cannot be read by
        C(mongorestore).
    type: str
    default: gzip
    choices: [gzip, zstd, none]
  compression_level:
    description:
      - Compression level, 0-9 for gzip (default 6) and 1-22 for zstd (default 3).
    type: int
  batch_size:
    description:
      - Documents per cursor batch when dumping, and at most this many documents per insert batch when restoring.
    type: int
    default: 1000
  parallel:
    description:
      - Collections dumped or restored at the same time (a bounded thread pool), 1-64.
    type: int
    default: 4
  oplog:
    description:
      - Capture the oplog entries written while the dump runs into C(oplog.bson) and record the first and last
        timestamps, for a point-in-time-consistent restore with C(mongorestore --oplogReplay). Needs a replica set member;
        fails clearly on a standalone server.
    type: bool
    default: false
  update_latest:
    description:
      - After a successful O(mode=dump), point C(<backup_dir>/latest) at the new backup.
    type: bool
    default: true
  prune:
    description:
      - After a successful O(mode=dump), apply the retention policy (as O(mode=prune) does).
    type: bool
    default: false
  keep_daily:
    description:
      - Retention, number of days (with a verified backup) to keep the newest backup of.
    type: int
    default: 7
  keep_weekly:
    description:
      - Retention, number of ISO weeks (with a verified backup) to keep the newest backup of.
    type: int
    default: 4
  keep_monthly:
    description:
      - Retention, number of calendar months (with a verified backup) to keep the newest backup of.
    type: int
    default: 3
  keep_yearly:
    description:
      - Retention, number of calendar years (with a verified backup) to keep the newest backup of.
    type: int
    default: 0
  prune_corrupt:
    description:
      - Retention deletes corrupt backups too. By default they are kept for inspection and reported in RV(corrupt_kept).
    type: bool
    default: false
  partial_max_age_hours:
    description:
      - A C(.partial-*) directory is removed by the next dump or prune when the process that wrote it is gone (same host,
        pid dead or reused), or when it is older than this many hours.
    type: float
    default: 24
  lock_timeout:
    description:
      - Seconds to wait for the lock of O(backup_dir) that dump and prune hold; by default another running dump or prune
        makes the task fail at once.
    type: float
    default: 0
  drop:
    description:
      - O(mode=restore) drops each target collection or view before restoring it. Otherwise documents are merged into
        existing collections (see O(on_duplicate)).
    type: bool
    default: false
  on_duplicate:
    description:
      - O(mode=restore) without O(drop), for documents whose C(_id) or unique key exists in the target.
        V(skip) counts and skips them, V(replace) replaces the existing document with the one from the backup,
        V(fail) fails the task.
    type: str
    default: skip
    choices: [skip, fail, replace]
  ns_from:
    description:
      - O(mode=restore) namespace renaming patterns (mongorestore's C(--nsFrom)), paired with O(ns_to) by position;
        each C(*) captures text that fills the same C(*) of the O(ns_to) pattern. For example V(shop.*) with
        O(ns_to=shop_restoretest.*). Namespaces matching no pattern keep their name.
    type: list
    elements: str
  ns_to:
    description:
      - O(mode=restore) target patterns for O(ns_from), with as many C(*) as the matching O(ns_from) pattern.
    type: list
    elements: str
  restore_indexes:
    description:
      - O(mode=restore) builds the indexes from the metadata after the data (set V(false) to skip them).
    type: bool
    default: true
  restore_collection_options:
    description:
      - O(mode=restore) creates missing collections with the options of the backup (capped, size, max, validator,
        validation level and action, collation ...).
    type: bool
    default: true
  bypass_document_validation:
    description:
      - O(mode=restore) inserts without document validation, so that documents accepted before a validator changed are
        restored too.
    type: bool
    default: true
  restore_batch_bytes:
    description:
      - O(mode=restore) upper bound of the raw BSON bytes per insert batch (a batch always holds at least one document),
        16384 to 48000000.
    type: int
    default: 16777216
  dry_run:
    description:
      - O(mode=restore) verifies the backup and reports what would be restored (namespaces, document counts, what would
        happen to each target) without writing anything.
    type: bool
    default: false
  deep:
    description:
      - O(mode=list) re-reads every file of the intact backups against their manifests (like O(mode=verify), without
        recording the outcome) instead of only checking the manifests.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Nightly dump of every application database, then apply the 7/4/3 retention
  nodeops.stack.mongo_backup:
    mode: dump
    uri: "mongodb://backup:{{ vault_mongo_backup_password }}@127.0.0.1:27017/?authSource=admin"
    backup_dir: /var/backups/mongodb
    read_preference: secondaryPreferred
    prune: true
  register: nightly

- name: Point-in-time-consistent dump of a replica set member, zstd, two collections at a time
  nodeops.stack.mongo_backup:
    mode: dump
    uri: "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    backup_dir: /var/backups/mongodb
    backup_name: "pre-deploy-{{ release }}"
    databases: [shop, accounts]
    exclude_namespaces: ["shop.sessions", "*.cache_*"]
    oplog: true
    compression: zstd
    parallel: 2

- name: Verify every backup (for example from a weekly job)
  nodeops.stack.mongo_backup:
    mode: verify
    backup_dir: /var/backups/mongodb

- name: Sample restore of the latest backup into renamed databases, to prove it restores
  nodeops.stack.mongo_backup:
    mode: restore
    host: 127.0.0.1
    backup_dir: /var/backups/mongodb
    backup_name: latest
    namespaces: ["shop.*"]
    ns_from: ["shop.*"]
    ns_to: ["shop_restoretest.*"]
    drop: true

- name: What would a restore do?
  nodeops.stack.mongo_backup:
    mode: restore
    backup_dir: /var/backups/mongodb
    backup_name: 20261122T020000Z
    dry_run: true
  register: plan

- name: Show the backups
  nodeops.stack.mongo_backup:
    mode: list
    backup_dir: /var/backups/mongodb
  register: backups

- name: Preview the retention (check mode shows what would be pruned and why the rest is kept)
  nodeops.stack.mongo_backup:
    mode: prune
    backup_dir: /var/backups/mongodb
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    keep_yearly: 3
  check_mode: true
'''

RETURN = r'''
msg:
  description: What was done, or what failed and what to do about it.
  returned: always
  type: str
  sample: dumped 120431 documents from 12 collections (2 views) into /var/backups/mongodb/20261122T020000Z and verified it
backup:
  description: The backup that was written (O(mode=dump)) or restored from (O(mode=restore)).
  returned: mode is dump or restore
  type: dict
  sample: {"name": "20261122T020000Z", "path": "/var/backups/mongodb/20261122T020000Z", "status": "verified",
           "created": "2026-11-22T02:00:00.112Z", "size_bytes": 48213344, "documents": 120431, "collections": 12, "views": 2}
collections:
  description: O(mode=dump) per collection or view, the namespace, type, documents, uncompressed BSON bytes, file bytes
    and file (estimated_documents in check mode).
  returned: mode is dump
  type: list
  elements: dict
  sample: [{"ns": "shop.orders", "type": "collection", "documents": 1000, "bson_bytes": 412000, "file_bytes": 93122,
            "file": "shop/orders.bson.gz"}]
skipped:
  description: O(mode=dump) collections that were not dumped, with the reason (time series with method pymongo).
  returned: mode is dump
  type: list
  elements: dict
oplog:
  description: O(mode=dump) with O(oplog=true), the captured oplog slice (file, entries, start/end and first/last
    timestamps as C({t, i, time})).
  returned: mode is dump and oplog is true
  type: dict
oplog_position:
  description: O(mode=dump) the newest oplog timestamp when the dump started (replica sets only).
  returned: mode is dump and the server is a replica set member with a readable oplog
  type: dict
server:
  description: Version and topology (standalone, replicaset, sharded) of the server that was dumped.
  returned: mode is dump
  type: dict
latest:
  description: Name of the backup C(latest) points at (after the operation).
  returned: mode is dump, verify or list
  type: str
  sample: 20261122T020000Z
partials_removed:
  description: Stale C(.partial-*) directories removed (or, in check mode, that would be removed), with the reason.
  returned: mode is dump or prune
  type: list
  elements: dict
retention:
  description: O(mode=dump) with O(prune=true), the same keys as O(mode=prune) returns (RV(kept), RV(pruned), ...).
  returned: mode is dump and prune is true
  type: dict
duration_seconds:
  description: O(mode=dump) wall time of the dump, verification included.
  returned: mode is dump and not check mode
  type: float
throughput_mb_s:
  description: O(mode=dump) uncompressed BSON megabytes (10^6 bytes) per second.
  returned: mode is dump and not check mode
  type: float
namespaces:
  description:
    - O(mode=restore) one entry per restored namespace, source and target, type and documents in the backup; after a
      restore inserted, duplicates (skipped), replaced, dropped, created, indexes_created; in a dry run target_exists,
      target_documents and action.
  returned: mode is restore
  type: list
  elements: dict
  sample: [{"source": "shop.orders", "target": "shop_restoretest.orders", "type": "collection", "documents": 1000,
            "inserted": 1000, "duplicates": 0, "replaced": 0, "dropped": true, "created": true, "indexes_created": 3}]
totals:
  description: O(mode=restore) sums over RV(namespaces) (inserted, duplicates, replaced, indexes_created, namespaces).
  returned: mode is restore and not a dry run
  type: dict
dry_run:
  description: O(mode=restore) whether nothing was written (dry run or check mode).
  returned: mode is restore
  type: bool
mapping:
  description: O(mode=restore) the O(ns_from)/O(ns_to) renaming rules applied.
  returned: mode is restore
  type: list
  elements: dict
warnings:
  description: O(mode=restore) things the restore left as they were (existing collection options, a view whose viewOn
    could not follow a renaming).
  returned: mode is restore and not a dry run
  type: list
  elements: str
backups:
  description:
    - O(mode=list) every backup, newest first, with name, path, status (verified, complete, corrupt), created, finished,
      size_bytes, documents, collections, views, compression, server_version, method, oplog, verified_at, latest
      (bool) and, when corrupt, problems.
    - O(mode=verify) per verified backup, name, path, ok, errors (each naming a file), files_checked, documents, bytes_read.
  returned: mode is list or verify
  type: list
  elements: dict
  sample: [{"name": "20261122T020000Z", "status": "verified", "created": "2026-11-22T02:00:00.112Z", "size_bytes": 48213344,
            "documents": 120431, "latest": true}]
partials:
  description: O(mode=list) C(.partial-*) directories, with the pid and host that own them and whether that process is alive.
  returned: mode is list
  type: list
  elements: dict
foreign:
  description: O(mode=list) entries of O(backup_dir) that are not backups (never touched by the module).
  returned: mode is list
  type: list
  elements: str
counts:
  description: O(mode=list) number of backups per status.
  returned: mode is list
  type: dict
  sample: {"verified": 9, "partial": 1}
verified:
  description: O(mode=verify) true when every verified backup matched its manifest.
  returned: mode is verify
  type: bool
latest_changed:
  description: O(mode=verify) true when C(latest) pointed at a backup that failed verification and was moved to the
    newest verified backup (or removed when there is none).
  returned: mode is verify
  type: bool
kept:
  description: O(mode=prune) backups kept, newest first, with the reasons (newest, daily, weekly, monthly, yearly,
    protected, unverified).
  returned: mode is prune
  type: list
  elements: dict
  sample: [{"name": "20261122T020000Z", "created": "2026-11-22T02:00:00.112Z", "status": "verified", "reasons": ["newest", "daily", "weekly", "monthly"]}]
pruned:
  description: O(mode=prune) backups deleted (in check mode, that would be deleted), with the reason.
  returned: mode is prune
  type: list
  elements: dict
corrupt_kept:
  description: O(mode=prune) corrupt backups kept because O(prune_corrupt=false).
  returned: mode is prune
  type: list
  elements: str
policy:
  description: O(mode=prune) the retention counts applied.
  returned: mode is prune
  type: dict
'''

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import mongodb_common_argument_spec
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_module import build_module, run_module


def argument_spec():
    """The shared connection options plus mongo_backup's own."""
    spec = mongodb_common_argument_spec()
    spec.update(
        mode=dict(type='str', required=True, choices=['dump', 'restore', 'verify', 'list', 'prune']),
        backup_dir=dict(type='path', required=True),
        backup_name=dict(type='str'),
        method=dict(type='str', default='pymongo', choices=['pymongo', 'mongodump']),
        tools_path=dict(type='path'),
        databases=dict(type='list', elements='str'),
        exclude_databases=dict(type='list', elements='str'),
        namespaces=dict(type='list', elements='str'),
        exclude_namespaces=dict(type='list', elements='str'),
        include_internal_databases=dict(type='bool', default=False),
        compression=dict(type='str', default='gzip', choices=['gzip', 'zstd', 'none']),
        compression_level=dict(type='int'),
        batch_size=dict(type='int', default=1000),
        parallel=dict(type='int', default=4),
        oplog=dict(type='bool', default=False),
        update_latest=dict(type='bool', default=True),
        prune=dict(type='bool', default=False),
        keep_daily=dict(type='int', default=7),
        keep_weekly=dict(type='int', default=4),
        keep_monthly=dict(type='int', default=3),
        keep_yearly=dict(type='int', default=0),
        prune_corrupt=dict(type='bool', default=False),
        partial_max_age_hours=dict(type='float', default=24.0),
        lock_timeout=dict(type='float', default=0.0),
        drop=dict(type='bool', default=False),
        on_duplicate=dict(type='str', default='skip', choices=['skip', 'fail', 'replace']),
        ns_from=dict(type='list', elements='str'),
        ns_to=dict(type='list', elements='str'),
        restore_indexes=dict(type='bool', default=True),
        restore_collection_options=dict(type='bool', default=True),
        bypass_document_validation=dict(type='bool', default=True),
        restore_batch_bytes=dict(type='int', default=16777216),
        dry_run=dict(type='bool', default=False),
        deep=dict(type='bool', default=False),
    )
    return spec


def main():
    # MongoBackupModule masks the password inside ``uri`` (not a no_log option itself) in the logged invocation and the result.
    module = build_module(argument_spec())
    run_module(module)


if __name__ == '__main__':
    main()
