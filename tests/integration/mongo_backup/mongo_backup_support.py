"""Helpers for the mongo_backup integration tests: running the operations, the dataset, snapshots to compare."""

import datetime
import hashlib
import json
import os
import struct
import subprocess
import sys
import uuid

import bson
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.timestamp import Timestamp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
COLLECTIONS = os.path.join(REPO, '.cache', 'collections')
MODULE_PATH = os.path.join(COLLECTIONS, 'ansible_collections', 'nodeops', 'stack', 'plugins', 'modules', 'mongo_backup.py')
PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.nodeops.stack.plugins.modules.mongo_backup import argument_spec  # noqa: E402
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_backup_ops import run_list, run_prune, run_verify  # noqa: E402
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import connect  # noqa: E402
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_dump import dump  # noqa: E402
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_module import build_config  # noqa: E402
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_restore import restore  # noqa: E402

RAW = CodecOptions(document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
UTC = datetime.timezone.utc


def default_params():
    return {name: spec.get('default') for name, spec in argument_spec().items()}


class Ops(object):
    """Call the module's operations in-process; parameters as the module would receive them."""

    def __init__(self, uri, root):
        self.uri = uri
        self.root = root

    def params(self, mode, **kwargs):
        params = default_params()
        params.update(mode=mode, uri=self.uri, backup_dir=self.root, connect_timeout=10.0)
        params.update(kwargs)
        return params

    def _connect(self, params):
        return lambda: connect(params)

    def dump(self, check_mode=False, hooks=None, **kwargs):
        params = self.params('dump', **kwargs)
        return dump(build_config(params), self._connect(params), check_mode=check_mode, hooks=hooks)

    def restore(self, check_mode=False, **kwargs):
        params = self.params('restore', **kwargs)
        return restore(build_config(params), self._connect(params), check_mode=check_mode)

    def verify(self, check_mode=False, **kwargs):
        return run_verify(build_config(self.params('verify', **kwargs)), check_mode=check_mode)

    def list(self, **kwargs):
        return run_list(build_config(self.params('list', **kwargs)))

    def prune(self, check_mode=False, **kwargs):
        return run_prune(build_config(self.params('prune', **kwargs)), check_mode=check_mode)

    def path(self, *parts):
        return os.path.join(self.root, *parts)


def run_module_process(args, timeout=120, env=None):
    """Run plugins/modules/mongo_backup.py as a real module process (args file); returns (rc, result dict or None, output)."""
    import tempfile
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as fh:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, fh)
        args_path = fh.name
    try:
        proc = subprocess.run([PYTHON, MODULE_PATH, args_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              env=dict(os.environ, PYTHONPATH=COLLECTIONS, **(env or {})), check=False)
    finally:
        os.unlink(args_path)
    out = proc.stdout.decode('utf-8', 'replace')
    try:
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    except ValueError:
        result = None
    return proc.returncode, result, out + proc.stderr.decode('utf-8', 'replace')


# --------------------------------------------------------------------------- dataset

def _raw_deprecated_types_doc():
    """Raw BSON with the deprecated types pymongo cannot create: undefined (0x06), DBPointer (0x0C), symbol (0x0E)."""
    def cstring(text):
        return text.encode('utf-8') + b'\x00'

    def string(text):
        data = text.encode('utf-8') + b'\x00'
        return struct.pack('<i', len(data)) + data
    oid = ObjectId('5f1e2d3c4b5a697887766554')
    elements = b''.join([
        b'\x07' + cstring('_id') + oid.binary,
        b'\x06' + cstring('undefined_value'),
        b'\x0c' + cstring('db_pointer') + string('other.collection') + ObjectId('5f1e2d3c4b5a697887766555').binary,
        b'\x0e' + cstring('symbol') + string('a symbol'),
        b'\x02' + cstring('after') + string('still here'),
    ])
    return RawBSONDocument(struct.pack('<i', len(elements) + 5) + elements + b'\x00')


def nested(depth):
    leaf = [1, 'two', {'three': 3.0}]
    doc = {'leaf': leaf, 'ts0': Timestamp(0, 0)}
    for level in range(depth):
        doc = {'level': level, 'child': doc, 'list': [leaf if level % 2 else [], {'n': level}]}
    return doc


def all_types_documents():
    """Documents covering every BSON type (and some edge values) pymongo can encode, plus a raw one with the deprecated types."""
    when = datetime.datetime(2024, 2, 29, 23, 59, 58, 789000, tzinfo=UTC)
    the_uuid = uuid.UUID('12345678-1234-5678-1234-567812345678')
    docs = [
        {'_id': ObjectId('650000000000000000000001'), 'kind': 'scalars', 'double': 3.141592653589793, 'neg_zero': -0.0,
         'nan': float('nan'), 'inf': float('inf'), 'ninf': float('-inf'), 'string': 'plain', 'bool_t': True, 'bool_f': False,
         'null': None, 'int32': 2147483647, 'int32_min': -2147483648, 'int64': Int64(2 ** 62), 'int64_small': Int64(1),
         'int64_min': Int64(-2 ** 63)},
        {'_id': ObjectId('650000000000000000000002'), 'kind': 'decimal', 'd1': Decimal128('1234.5678901234567890123456789012'),
         'd_nan': Decimal128('NaN'), 'd_inf': Decimal128('-Infinity'), 'd_neg_zero': Decimal128('-0.00'),
         'd_big': Decimal128('9.999999999999999999999999999999999E+6144'), 'd_small': Decimal128('1E-6176')},
        {'_id': ObjectId('650000000000000000000003'), 'kind': 'dates', 'ms': when, 'epoch': datetime.datetime(1970, 1, 1, tzinfo=UTC),
         'before_epoch': datetime.datetime(1969, 7, 20, 20, 17, 40, 1000, tzinfo=UTC),
         'far_future': DatetimeMS(253402300800000 + 123), 'far_past': DatetimeMS(-62135596800000 - 1)},
        {'_id': ObjectId('650000000000000000000004'), 'kind': 'binary', 'generic': Binary(b'\x00\x01\x02\xff' * 8, 0),
         'function': Binary(b'fn', 1), 'old_binary': Binary(struct.pack('<i', 3) + b'abc', 2),
         'uuid_legacy': Binary(the_uuid.bytes, 3), 'uuid': Binary.from_uuid(the_uuid, UuidRepresentation.STANDARD),
         'md5': Binary(hashlib.md5(b'x').digest(), 5), 'user_defined': Binary(b'custom', 0x80),
         'user_defined_2': Binary(b'\x00' * 3, 0xff), 'empty': Binary(b'', 0)},
        {'_id': ObjectId('650000000000000000000005'), 'kind': 'special', 'regex': Regex('^a.*b$', 'imsux'),
         'regex_plain': Regex('x+', ''), 'ts': Timestamp(1700000000, 7), 'min': MinKey(), 'max': MaxKey(),
         'code': Code('function () { return 1; }'), 'code_scope': Code('function () { return x; }', {'x': 42, 'nested': {'y': [1]}}),
         'dbref': DBRef('other', ObjectId('650000000000000000000099'), 'otherdb', extra='field'), 'object_id': ObjectId()},
        {'_id': ObjectId('650000000000000000000006'), 'kind': 'nesting', 'deep': nested(40), 'empty_doc': {}, 'empty_list': [],
         'matrix': [[[1, 2], [3, [4, [5, [6]]]]], [], [[]]], 'mixed': [None, 1, 'a', {'b': [Int64(2), Decimal128('3')]}, [MinKey(), MaxKey()]]},
        {'_id': 'string-id', 'kind': 'unicode', 'ключ': 'значение', '名前': '値', 'emoji 🎉': '✓ ünïcödé', 'mixed\tkey': 'tab',
         'ar': 'مرحبا', 'zw': 'a\u200bb', 'nested': {'ßtraße': {'çà': [1, 2]}}},
        {'_id': {'compound': 1, 'id': [1, 2]}, 'kind': 'doc-id'},
        {'_id': Int64(7), 'kind': 'int64-id'},
        {'_id': Decimal128('7.50'), 'kind': 'decimal-id'},
        {'_id': Binary.from_uuid(the_uuid, UuidRepresentation.STANDARD), 'kind': 'uuid-id'},
        {'_id': datetime.datetime(2020, 1, 1, tzinfo=UTC), 'kind': 'date-id'},
        {'_id': MinKey(), 'kind': 'minkey-id'},
        {'_id': MaxKey(), 'kind': 'maxkey-id'},
        {'_id': None, 'kind': 'null-id'},
    ]
    return docs


def near_limit_document(limit=16 * 1024 * 1024):
    """A document of exactly ``limit - 64`` bytes (just below maxBsonObjectSize)."""
    target = limit - 64
    probe = bson.encode({'_id': 'big', 'payload': Binary(b'', 0)})
    payload = Binary(os.urandom(64) * ((target - len(probe)) // 64) + b'\x00' * ((target - len(probe)) % 64), 0)
    doc = {'_id': 'big', 'payload': payload}
    assert len(bson.encode(doc)) == target
    return doc


def build_dataset(make_db, big=True):
    """Three databases (one with a unicode name) covering types, indexes, collection options and views; returns their names."""
    db1 = make_db('_types')
    db2 = make_db('_dätä')
    db3 = make_db('_shop')
    coll = db1.get_collection('alltypes')
    coll.insert_many(all_types_documents())
    db1.get_collection('alltypes', codec_options=RAW).insert_one(_raw_deprecated_types_doc())
    if big:
        db1.big.insert_one(near_limit_document())
    db1.command('create', 'capped', capped=True, size=65536, max=20)
    db1.capped.insert_many([{'_id': i, 'n': i, 'pad': 'x' * (i % 7)} for i in range(30)])
    db2['cølléctiøn ✓'].insert_many([{'_id': i, 'ключ': 'значение %d' % i, 'emoji': '🎉' * (i % 3)} for i in range(50)])
    db2['with.dots.and-dash'].insert_one({'_id': 1})
    people = db3.people
    people.insert_many([{'_id': i, 'email': 'user%d@example.com' % i, 'a': i % 5, 'b': i, 'qty': i % 20,
                         'expireAt': datetime.datetime(2100, 1, 1, tzinfo=UTC), **({'nick': 'n%d' % i} if i % 3 else {})}
                        for i in range(200)])
    people.create_index('email', unique=True, name='email_unique')
    people.create_index([('a', 1), ('b', -1)], name='a_b_compound')
    people.create_index('expireAt', expireAfterSeconds=3600, name='ttl_expireAt')
    people.create_index('qty', partialFilterExpression={'qty': {'$gt': 10}}, name='qty_partial')
    people.create_index('nick', sparse=True, name='nick_sparse')
    db3.command('create', 'orders', validator={'qty': {'$gte': 0}}, validationLevel='strict', validationAction='error')
    db3.orders.insert_many([{'_id': i, 'qty': i, 'sku': 'SKU-%03d' % (i % 17)} for i in range(300)])
    db3.command('create', 'big_orders', viewOn='orders', pipeline=[{'$match': {'qty': {'$gte': 100}}}])
    db3.command('create', 'bigger_orders', viewOn='big_orders', pipeline=[{'$match': {'qty': {'$gte': 200}}}])
    db3.command('create', 'empty')
    return [db1.name, db2.name, db3.name]


# --------------------------------------------------------------------------- snapshots

def _id_key(raw_doc):
    return bson.encode({'_id': raw_doc['_id']}, codec_options=RAW)


def collection_hashes(client, db_name, coll_name, natural=False):
    """sha256 of the raw BSON of each document, sorted by _id (by natural order when ``natural``)."""
    coll = client.get_database(db_name, codec_options=RAW).get_collection(coll_name)
    rows = [(_id_key(doc), hashlib.sha256(doc.raw).hexdigest()) for doc in coll.find({}, batch_size=500)]
    if natural:
        return [h for _key, h in rows]
    return [h for _key, h in sorted(rows)]


def snapshot(client, db_names, rename=None):
    """Everything a restore must bring back: per namespace the document hashes, options, indexes and view definitions."""
    rename = rename or (lambda db: db)
    snap = {}
    for db_name in db_names:
        for info in client[db_name].list_collections():
            name = info['name']
            if name.startswith('system.'):
                continue
            key = '%s.%s' % (rename(db_name), name)
            entry = {'type': info.get('type', 'collection'), 'options': dict(info.get('options') or {})}
            if entry['type'] == 'collection':
                capped = bool(entry['options'].get('capped'))
                entry['documents'] = collection_hashes(client, db_name, name, natural=capped)
                entry['indexes'] = sorted(
                    ({k: v for k, v in ix.items() if k != 'ns'} for ix in client[db_name][name].list_indexes()),
                    key=lambda ix: ix['name'])
            snap[key] = entry
    return snap


def total_documents(snap):
    return sum(len(e.get('documents', [])) for e in snap.values())
