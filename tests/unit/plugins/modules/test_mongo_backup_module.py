"""mongo_backup main(): bad input gives a clear fail_json message naming the parameter (never a traceback), secrets stay out."""

import json
import socket
import time

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common
from ansible_collections.nodeops.stack.plugins.modules import mongo_backup

from module_harness import run_main


def run(args, check_mode=False):
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    return run_main(mongo_backup, args)


def fail_msg(args):
    failed, result = run(args)
    assert failed, result
    assert 'Traceback' not in result['msg']
    return result['msg']


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


# (id, module args (backup_dir filled in when it is None), fragments that must all be in the message)
BAD_INPUT = [
    ('unknown-mode', {'mode': 'backup'}, ['value of mode must be one of: dump, restore, verify, list, prune, got: backup']),
    ('missing-backup-dir', {'mode': 'dump', 'backup_dir': '<absent>'}, ['missing required arguments: backup_dir']),
    ('relative-backup-dir', {'mode': 'dump', 'backup_dir': 'backups'}, ["backup_dir: expected an absolute path, got 'backups'"]),
    ('restore-without-name', {'mode': 'restore'}, ['backup_name is required with mode=restore', 'or use latest']),
    ('restore-unknown-backup', {'mode': 'restore', 'backup_name': 'nope'}, ['backup_name: no backup nope']),
    ('bad-ns-pattern', {'mode': 'dump', 'namespaces': ['shop']},
     ["namespaces[0]: 'shop' is not a namespace pattern: expected DB.COLLECTION", "e.g. 'shop.*'"]),
    ('bad-exclude-ns-pattern', {'mode': 'dump', 'exclude_namespaces': ['ok.*', '.orders']}, ["exclude_namespaces[1]: '.orders' is not a namespace pattern"]),
    ('bad-db-pattern', {'mode': 'dump', 'databases': ['shop.orders']}, ["databases[0]: 'shop.orders' is not a database name pattern"]),
    ('bad-compression', {'mode': 'dump', 'compression': 'lz4'}, ['value of compression must be one of: gzip, zstd, none, got: lz4']),
    ('bad-gzip-level', {'mode': 'dump', 'compression_level': 12}, ['compression_level: expected 0 to 9 for gzip, got 12']),
    ('level-without-compression', {'mode': 'dump', 'compression': 'none', 'compression_level': 3},
     ['compression_level: only applies to compression gzip or zstd']),
    ('negative-daily', {'mode': 'prune', 'keep_daily': -1}, ['keep_daily: expected a number of backups >= 0, got -1']),
    ('negative-monthly', {'mode': 'dump', 'prune': True, 'keep_monthly': -3}, ['keep_monthly: expected a number of backups >= 0, got -3']),
    ('zero-batch-size', {'mode': 'dump', 'batch_size': 0}, ['batch_size: expected 1 to 100000 documents, got 0']),
    ('too-parallel', {'mode': 'dump', 'parallel': 100}, ['parallel: expected 1 to 64 collections at a time, got 100']),
    ('huge-restore-batch', {'mode': 'restore', 'backup_name': 'x', 'restore_batch_bytes': 100000000},
     ['restore_batch_bytes: expected 16384 to 48000000 bytes']),
    ('ns-from-without-ns-to', {'mode': 'restore', 'backup_name': 'x', 'ns_from': ['shop.*']},
     ['ns_from and ns_to: expected the same number of patterns, got 1 and 0']),
    ('ns-wildcards-differ', {'mode': 'restore', 'backup_name': 'x', 'ns_from': ['shop.*'], 'ns_to': ['copy.orders']},
     ["ns_from[0]/ns_to[0]: 'shop.*' has 1 '*' but 'copy.orders' has 0"]),
    ('bad-uri-scheme', {'mode': 'dump', 'uri': 'http://u:pw@db:27017'}, ["uri: expected a connection string starting with mongodb://", 'u:********@db']),
    ('uri-and-host', {'mode': 'dump', 'uri': 'mongodb://db', 'host': 'db'}, ['parameters are mutually exclusive: uri|host']),
    ('bad-port', {'mode': 'dump', 'port': 70000}, ['port: expected 1-65535, got 70000']),
    ('password-without-user', {'mode': 'dump', 'password': 'pw'}, ['password is set but username is not']),
    ('bad-timeout', {'mode': 'dump', 'connect_timeout': 0}, ['connect_timeout: expected a number of seconds greater than 0']),
    ('invalid-backup-name', {'mode': 'dump', 'backup_name': '../etc'}, ["backup_name: '../etc' is not a valid backup name"]),
    ('latest-as-dump-name', {'mode': 'dump', 'backup_name': 'latest'}, ["backup_name: 'latest' is reserved"]),
    ('prune-missing-dir', {'mode': 'prune', 'backup_dir': '/nonexistent/backups'}, ['backup_dir: /nonexistent/backups does not exist (nothing to prune)']),
    ('bad-partial-age', {'mode': 'dump', 'partial_max_age_hours': 0}, ['partial_max_age_hours: expected a number of hours > 0']),
    ('unknown-option', {'mode': 'dump', 'compresion': 'gzip'}, ['Unsupported parameters', 'compresion']),
    ('bad-on-duplicate', {'mode': 'restore', 'backup_name': 'x', 'on_duplicate': 'overwrite'},
     ['value of on_duplicate must be one of: skip, fail, replace, got: overwrite']),
]


@pytest.mark.parametrize('case_id,args,fragments', BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(root, case_id, args, fragments):
    args = dict(args)
    if args.get('backup_dir') == '<absent>':
        del args['backup_dir']
    else:
        args.setdefault('backup_dir', root)
    args.setdefault('host', '127.0.0.1') if 'uri' not in args else None
    if case_id == 'uri-and-host':
        args['host'] = 'db'
    msg = fail_msg(args)
    for fragment in fragments:
        assert fragment in msg, '%r not in %r' % (fragment, msg)


def test_at_least_twelve_bad_input_cases():
    assert len(BAD_INPUT) >= 12


def test_unreachable_server_fails_within_the_connect_timeout_without_the_password(root):
    port = closed_port()
    start = time.monotonic()
    failed, result = run({'mode': 'dump', 'backup_dir': root, 'connect_timeout': 1,
                          'uri': 'mongodb://backup:Sup3r-S3cret@127.0.0.1:%d/?authSource=admin' % port})
    elapsed = time.monotonic() - start
    assert failed
    assert 'cannot reach MongoDB at mongodb://backup:********@127.0.0.1:%d/?authSource=admin within 1s (connect_timeout)' % port in result['msg']
    assert elapsed < 5
    assert 'Sup3r-S3cret' not in json.dumps(result)


def test_unreachable_server_with_password_option(root):
    port = closed_port()
    failed, result = run({'mode': 'restore', 'backup_dir': root, 'backup_name': 'x', 'host': '127.0.0.1', 'port': port,
                          'username': 'u', 'password': 'Opt-Passw0rd', 'connect_timeout': 0.5})
    assert failed and 'backup_name: no backup x' in result['msg']
    failed, result = run({'mode': 'dump', 'backup_dir': root, 'host': '127.0.0.1', 'port': port, 'username': 'u',
                          'password': 'Opt-Passw0rd', 'connect_timeout': 0.5})
    assert failed and 'cannot reach MongoDB at 127.0.0.1:%d within 0.5s' % port in result['msg']
    assert 'Opt-Passw0rd' not in json.dumps(result)


def test_missing_pymongo_is_reported_with_missing_required_lib(root, monkeypatch):
    monkeypatch.setattr(mongo_common, 'HAS_PYMONGO', False)
    msg = fail_msg({'mode': 'list', 'backup_dir': root})
    assert msg.startswith('Failed to import the required Python library (pymongo)')


def test_missing_zstandard_is_reported_with_missing_required_lib(root, monkeypatch):
    monkeypatch.setattr(mongo_common, 'HAS_ZSTD', False)
    monkeypatch.setattr(mongo_common, 'ZSTD_IMP_ERR', 'ImportError: No module named zstandard')
    msg = fail_msg({'mode': 'dump', 'backup_dir': root, 'compression': 'zstd', 'host': '127.0.0.1'})
    assert msg.startswith('Failed to import the required Python library (zstandard)')


def test_mongodump_method_without_the_tools(root, tmp_path, monkeypatch):
    empty = tmp_path / 'no-tools'
    empty.mkdir()
    monkeypatch.setenv('PATH', str(empty))
    msg = fail_msg({'mode': 'dump', 'backup_dir': str(tmp_path / 'b'), 'method': 'mongodump', 'tools_path': str(empty),
                    'host': '127.0.0.1', 'port': closed_port(), 'connect_timeout': 0.5})
    assert 'method: mongodump needs the MongoDB Database Tools' in msg and 'mongodump was not found in PATH or in tools_path' in msg
    assert not [e for e in (tmp_path / 'b').iterdir() if e.name != '.lock']


def test_list_and_prune_of_an_empty_root(root):
    failed, result = run({'mode': 'list', 'backup_dir': root})
    assert not failed and result['backups'] == [] and result['latest'] is None and not result['changed']
    failed, result = run({'mode': 'prune', 'backup_dir': root}, check_mode=True)
    assert not failed and result['pruned'] == [] and not result['changed']
    failed, result = run({'mode': 'verify', 'backup_dir': root})
    assert not failed and result['verified'] and result['backups'] == []


def test_the_argument_spec_matches_the_documentation():
    import yaml  # pylint: disable=import-outside-toplevel
    from ansible_collections.nodeops.stack.plugins.doc_fragments.mongodb import ModuleDocFragment  # pylint: disable=import-outside-toplevel
    doc = yaml.safe_load(mongo_backup.DOCUMENTATION)
    assert 'nodeops.stack.mongodb' in doc['extends_documentation_fragment']
    shared = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']
    assert sorted(shared) == sorted(mongo_common.mongodb_common_argument_spec())
    assert not set(shared) & set(doc['options'])
    doc['options'].update(shared)
    spec = mongo_backup.argument_spec()
    assert sorted(doc['options']) == sorted(spec)
    for name, option in spec.items():
        documented = doc['options'][name]
        assert documented.get('type', 'str') == option.get('type', 'str'), name
        assert documented.get('required', False) == option.get('required', False), name
        assert documented.get('choices') == option.get('choices'), name
        assert documented.get('elements') == option.get('elements'), name
        assert sorted(documented.get('aliases', [])) == sorted(option.get('aliases', [])), name
        if 'default' in option:
            assert documented.get('default') == option['default'], name
        else:
            assert documented.get('default') is None, name
    assert spec['password'].get('no_log') is True


def test_a_write_error_without_a_file_name_names_the_backup_dir(root, monkeypatch):
    """ENOSPC from a write carries no file name; the message must still say where the disk filled up."""
    import errno  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    from ansible_collections.nodeops.stack.plugins.module_utils import mongo_module  # pylint: disable=import-outside-toplevel

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(mongo_module, 'dump', full_disk)
    assert fail_msg({'mode': 'dump', 'backup_dir': root, 'host': '127.0.0.1'}) == 'OSError: No space left on device (backup_dir %s)' % root
    monkeypatch.setattr(mongo_module, 'dump', lambda *a, **k: open(os.path.join(root, 'missing', 'x')))
    assert fail_msg({'mode': 'dump', 'backup_dir': root, 'host': '127.0.0.1'}) == (
        'FileNotFoundError: No such file or directory (%s)' % os.path.join(root, 'missing', 'x'))
