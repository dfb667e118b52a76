# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue between AnsibleModule and the mongo_backup logic: validation, secrets, dispatch, exit/fail."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_backup_ops import run_list, run_prune, run_verify
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    MongoBackupError, connect, connection_secrets, describe_target, error_text, scrub, validate_connection_params,
)
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_dump import dump
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_restore import MAX_BATCH_BYTES, restore
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_select import NamespaceMapper, Selection
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_tools import MongoTools

LEVELS = {'gzip': (0, 9, 6), 'zstd': (1, 22, 3)}


class MongoBackupModule(AnsibleModule):
    """AnsibleModule that masks the password inside ``uri`` before the invocation is logged or returned."""

    def _log_invocation(self):
        params = getattr(self, 'params', None) or {}
        self.no_log_values.update(connection_secrets(params))
        super(MongoBackupModule, self)._log_invocation()


def build_module(argument_spec):
    """The module object for ``argument_spec`` (the module file's options plus the shared connection options)."""
    return MongoBackupModule(argument_spec=argument_spec, mutually_exclusive=mongo_common.MUTUALLY_EXCLUSIVE, supports_check_mode=True)


def _range(params, name, low, high, unit=''):
    value = params[name]
    if value is None or not low <= value <= high:
        raise MongoBackupError('%s: expected %s to %s%s, got %s' % (name, low, high, unit, value))


def build_config(params):
    """Validate the options (no server needed) and return the configuration the operations use."""
    validate_connection_params(params)
    mode = params['mode']
    root = params['backup_dir']
    if not os.path.isabs(root):
        raise MongoBackupError('backup_dir: expected an absolute path, got %r' % root)
    root = os.path.normpath(root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise MongoBackupError('backup_dir: %s exists and is not a directory' % root)
    if mode in ('verify', 'list', 'prune', 'restore') and not os.path.isdir(root):
        raise MongoBackupError('backup_dir: %s does not exist (nothing to %s)' % (root, mode))
    for name in ('keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly'):
        if params[name] < 0:
            raise MongoBackupError('%s: expected a number of backups >= 0, got %d' % (name, params[name]))
    _range(params, 'batch_size', 1, 100000, ' documents')
    _range(params, 'parallel', 1, 64, ' collections at a time')
    _range(params, 'restore_batch_bytes', 16 * 1024, MAX_BATCH_BYTES, ' bytes (MongoDB caps a message at 48000000 bytes)')
    if params['partial_max_age_hours'] <= 0:
        raise MongoBackupError('partial_max_age_hours: expected a number of hours > 0, got %s' % params['partial_max_age_hours'])
    if params['lock_timeout'] < 0:
        raise MongoBackupError('lock_timeout: expected a number of seconds >= 0, got %s' % params['lock_timeout'])
    compression = params['compression']
    low, high, default_level = LEVELS.get(compression, (0, 0, None))
    level = params['compression_level']
    if level is None:
        level = default_level
    elif compression == 'none':
        raise MongoBackupError('compression_level: only applies to compression gzip or zstd, but compression is none')
    elif not low <= level <= high:
        raise MongoBackupError('compression_level: expected %d to %d for %s, got %d' % (low, high, compression, level))
    if compression == 'zstd' and mode == 'dump' and params['method'] == 'pymongo':
        mongo_common.require_zstd()
    if mode == 'restore' and not params.get('backup_name'):
        raise MongoBackupError('backup_name is required with mode=restore: name the backup to restore (a directory under %s), '
                               'or use latest' % root)
    if mode == 'dump' and params.get('backup_name') in ('latest',):
        raise MongoBackupError("backup_name: 'latest' is reserved for the pointer to the newest verified backup; choose another name")
    if params['method'] == 'mongodump' and mode in ('dump', 'restore') and params.get('tools_path') and not os.path.isdir(params['tools_path']):
        raise MongoBackupError('tools_path: %s is not a directory' % params['tools_path'])
    selection = Selection(params['databases'], params['exclude_databases'], params['namespaces'], params['exclude_namespaces'],
                          params['include_internal_databases'])
    mapper = NamespaceMapper(params['ns_from'], params['ns_to'])
    cfg = dict(params)
    cfg.update(backup_dir=root, compression_level=level, selection=selection, mapper=mapper,
               target=describe_target(params), secrets=connection_secrets(params))
    return cfg


def run_module(module, connect_fn=None):
    """Validate, run the mode and exit_json/fail_json; never returns."""
    params = module.params
    secrets = connection_secrets(params)
    module.no_log_values.update(secrets)

    def fail(msg, **details):
        details.pop('exception', None)
        module.fail_json(msg=scrub(msg, secrets), **details)

    try:
        if not mongo_common.HAS_PYMONGO:
            module.fail_json(msg=missing_required_lib('pymongo'), exception=mongo_common.PYMONGO_IMP_ERR)
        cfg = build_config(params)

        def connect_server():
            return (connect_fn or connect)(params)

        def find_binary(name):
            opt_dirs = [params['tools_path']] if params.get('tools_path') else []
            return module.get_bin_path(name, required=False, opt_dirs=opt_dirs)

        def run_command(argv):
            return module.run_command(argv, check_rc=False)

        tools = MongoTools(run_command, find_binary, params, connect_server) if params['method'] == 'mongodump' else None
        mode = params['mode']
        if mode == 'dump':
            result = dump(cfg, connect_server, check_mode=module.check_mode, tools=tools)
        elif mode == 'restore':
            result = restore(cfg, connect_server, check_mode=module.check_mode, tools=tools)
        elif mode == 'verify':
            result = run_verify(cfg, check_mode=module.check_mode)
        elif mode == 'list':
            result = run_list(cfg)
        else:
            result = run_prune(cfg, check_mode=module.check_mode)
    except MongoBackupError as exc:
        if exc.details.get('missing_lib'):
            module.fail_json(msg=missing_required_lib(exc.details['missing_lib']), exception=exc.details.get('exception'))
        fail(exc.msg, **exc.details)
    except mongo_common.PyMongoError as exc:
        fail('MongoDB at %s refused the %s: %s' % (describe_target(params), params['mode'], error_text(exc, secrets)))
    except OSError as exc:
        # a failed write (ENOSPC) names no file: name the backup directory instead
        where = exc.filename if getattr(exc, 'filename', None) else 'backup_dir %s' % params.get('backup_dir')
        fail('%s: %s (%s)' % (type(exc).__name__, exc.strerror or exc, where))
    msg = result.pop('msg', '')
    if result.pop('failed', False):
        fail(msg, **result)
    module.exit_json(msg=msg, **result)
