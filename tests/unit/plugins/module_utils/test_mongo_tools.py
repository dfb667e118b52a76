"""method: mongodump plumbing, with stand-in mongodump/mongorestore programs (the real tools are exercised by the
integration test when they are installed): command lines, the password only in a 0600 --config file, the manifest
built from what the tool wrote, verification, rename and latest."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_dump import dump
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import load_manifest, read_latest
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_module import build_config
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_restore import restore
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_tools import MongoTools, tools_uri
from ansible_collections.nodeops.stack.plugins.modules.mongo_backup import argument_spec

FAKE_MONGODUMP = r'''
import gzip, json, os, stat, sys
import bson
log = os.environ['FAKE_TOOLS_LOG']
args = sys.argv[1:]
config = [a.split('=', 1)[1] for a in args if a.startswith('--config=')][0]
with open(config) as fh:
    config_text = fh.read()
with open(log, 'a') as fh:
    fh.write(json.dumps({'tool': 'mongodump', 'argv': args, 'config': config_text,
                         'config_mode': oct(stat.S_IMODE(os.stat(config).st_mode))}) + '\n')
out = [a.split('=', 1)[1] for a in args if a.startswith('--out=')][0]
gz = '--gzip' in args
def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ('.gz' if gz else ''), 'wb') as fh:
        fh.write(gzip.compress(data) if gz else data)
for db in ('app', 'other'):
    write(os.path.join(out, db, 'items.bson'), b''.join(bson.encode({'_id': i, 'db': db}) for i in range(3)))
    write(os.path.join(out, db, 'items.metadata.json'),
          b'{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],'
          b'"uuid":"00112233445566778899aabbccddeeff","collectionName":"items","type":"collection"}')
write(os.path.join(out, 'app', 'v.metadata.json'),
      b'{"options":{"viewOn":"items","pipeline":[]},"indexes":[],"collectionName":"v","type":"view"}')
print('done dumping')
'''

FAKE_MONGORESTORE = r'''
import json, os, sys
args = sys.argv[1:]
config = [a.split('=', 1)[1] for a in args if a.startswith('--config=')][0]
with open(os.environ['FAKE_TOOLS_LOG'], 'a') as fh:
    fh.write(json.dumps({'tool': 'mongorestore', 'argv': args, 'config': open(config).read()}) + '\n')
sys.stderr.write('2026-11-22T02:00:00.000+0000\t3 document(s) restored successfully. 0 document(s) failed to restore.\n')
'''

PASSWORD = 'T00ls-Passw0rd'


class StubAdmin(object):
    def command(self, name, *args, **kwargs):
        return {'buildInfo': {'version': '7.0.4'}, 'hello': {'isWritablePrimary': True}}[name]


class StubClient(object):
    admin = StubAdmin()

    def close(self):
        pass


@pytest.fixture
def tools(tmp_path, monkeypatch):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for name, body in (('mongodump', FAKE_MONGODUMP), ('mongorestore', FAKE_MONGORESTORE)):
        path = bindir / name
        path.write_text('#!%s\n%s' % (sys.executable, textwrap.dedent(body)))
        path.chmod(0o755)
    log = tmp_path / 'tools.log'
    monkeypatch.setenv('FAKE_TOOLS_LOG', str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return str(bindir), calls


def params(root, bindir, **kwargs):
    values = {name: spec.get('default') for name, spec in argument_spec().items()}
    values.update(mode='dump', backup_dir=str(root), method='mongodump', tools_path=bindir,
                  uri='mongodb://backup:%s@127.0.0.1:27017/?authSource=admin' % PASSWORD)
    values.update(kwargs)
    return values


def make_tools(values):
    def run_command(argv):
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def find_binary(name):
        path = os.path.join(values['tools_path'], name)
        return path if os.access(path, os.X_OK) else None
    return MongoTools(run_command, find_binary, values, StubClient)


def test_dump_through_mongodump(tmp_path, tools):
    bindir, calls = tools
    root = tmp_path / 'backups'
    values = params(root, bindir, databases=['app'], parallel=3, read_preference='secondary')
    result = dump(build_config(values), StubClient, tools=make_tools(values))
    assert result['backup']['status'] == 'verified' and result['backup']['documents'] == 3
    assert read_latest(str(root)) == result['backup']['name']
    (call,) = calls()
    argv = call['argv']
    assert argv[0].startswith('--config=') and '--gzip' in argv and '--numParallelCollections=3' in argv
    assert '--readPreference=secondary' in argv and '--nsInclude=app.*' in argv
    assert {'--nsExclude=admin.*', '--nsExclude=config.*', '--nsExclude=local.*'} <= set(argv)
    assert [a for a in argv if a.startswith('--out=')][0].split('=', 1)[1].startswith(str(root / '.partial-'))
    assert PASSWORD not in ' '.join(argv)
    assert call['config_mode'] == '0o600' and PASSWORD in call['config'] and call['config'].startswith('uri: "mongodb://backup:')
    assert not os.path.exists(argv[0].split('=', 1)[1])  # the config file is gone
    manifest, _digest, problems = load_manifest(str(root / result['backup']['name']))
    assert problems == [] and manifest['method'] == 'mongodump' and manifest['server']['version'] == '7.0.4'
    assert [(c['ns'], c['type'], c['documents']) for c in manifest['collections']] == [('app.items', 'collection', 3), ('app.v', 'view', 0)]
    assert not os.path.exists(str(root / result['backup']['name'] / 'other'))  # what the selection excludes is not kept


def test_restore_through_mongorestore(tmp_path, tools):
    bindir, calls = tools
    root = tmp_path / 'backups'
    values = params(root, bindir, databases=['app'], compression='none')
    dump(build_config(values), StubClient, tools=make_tools(values))
    values = params(root, bindir, mode='restore', backup_name='latest', drop=True, restore_indexes=False, ns_from=['app.*'],
                    ns_to=['copy.*'], on_duplicate='fail')
    result = restore(build_config(values), StubClient, tools=make_tools(values))
    assert result['totals']['inserted'] == 3 and result['backup']['verified'] and 'mongorestore restored 3 documents' in result['msg']
    argv = calls()[-1]['argv']
    assert '--drop' in argv and '--noIndexRestore' in argv and '--stopOnError' in argv and '--gzip' not in argv
    assert '--nsInclude=app.items' in argv and '--nsInclude=app.v' in argv
    assert argv[argv.index('--nsFrom=app.*') + 1] == '--nsTo=copy.*'
    assert [a for a in argv if a.startswith('--dir=')][0].endswith(read_latest(str(root)))
    assert PASSWORD not in ' '.join(argv)


def test_mongodump_failure_is_reported_without_the_password(tmp_path, tools):
    bindir, calls = tools
    with open(os.path.join(bindir, 'mongodump'), 'w') as fh:
        fh.write('#!/bin/sh\necho "Failed: connection to mongodb://backup:%s@127.0.0.1 refused" >&2\nexit 1\n' % PASSWORD)
    os.chmod(os.path.join(bindir, 'mongodump'), stat.S_IRWXU)
    root = tmp_path / 'backups'
    values = params(root, bindir)
    with pytest.raises(MongoBackupError) as info:
        dump(build_config(values), StubClient, tools=make_tools(values))
    assert 'mongodump failed (exit status 1)' in info.value.msg and PASSWORD not in info.value.msg
    assert sorted(os.listdir(str(root))) == ['.lock']  # the partial dir was removed


@pytest.mark.parametrize('kwargs,message', [
    ({'compression': 'zstd'}, 'compression: zstd is not supported by method: mongodump'),
    ({'namespaces': ['app.item?']}, "method: mongodump supports only '*' wildcards"),
])
def test_mongodump_option_limits(tmp_path, tools, kwargs, message, monkeypatch):
    from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(mongo_common, 'HAS_ZSTD', True)
    bindir, _calls = tools
    values = params(tmp_path / 'b', bindir, **kwargs)
    with pytest.raises(MongoBackupError) as info:
        make_tools(values).dump_argv(build_config(values), str(tmp_path))
    assert message in info.value.msg


def test_tools_uri():
    base = {'connect_timeout': 5.0}
    assert tools_uri(dict(base, host='db', port=27018, username='u@x', password='p:w/', auth_source='admin', tls=True)) == (
        'mongodb://u%40x:p%3Aw%2F@db:27018/?authSource=admin&tls=true&serverSelectionTimeoutMS=5000&connectTimeoutMS=5000')
    assert tools_uri(dict(base, uri='mongodb://a,b/?replicaSet=rs0')) == (
        'mongodb://a,b/?replicaSet=rs0&serverSelectionTimeoutMS=5000&connectTimeoutMS=5000')
    assert tools_uri(dict(base, uri='mongodb://a', username='u', password='p')) == (
        'mongodb://u:p@a/?serverSelectionTimeoutMS=5000&connectTimeoutMS=5000')
