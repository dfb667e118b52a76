"""On-disk format helpers: mongodump file names, streaming writers, BSON framing checks, Extended JSON metadata."""

import gzip
import hashlib
import os

import bson
import pytest
from bson.int64 import Int64

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError
from ansible_collections.nodeops.stack.plugins.module_utils.mongo_format import (
    BSONStreamCounter, DataFileWriter, build_metadata, data_file_name, escape_collection_name, ext_json_loads, iter_raw_documents,
    metadata_bytes, metadata_file_name, parse_metadata, scan_data_file,
)


@pytest.mark.parametrize('name,escaped', [
    ('orders', 'orders'),
    ('with.dots-and_under~tilde', 'with.dots-and_under~tilde'),
    ('a/b', 'a%2Fb'),
    ('semi;colon,comma?q', 'semi%3Bcolon%2Ccomma%3Fq'),
    ('keep$&+:=@', 'keep$&+:=@'),
    ('space here', 'space%20here'),
    ('100%', '100%25'),
    ('cølléctiøn ✓', 'c%C3%B8ll%C3%A9cti%C3%B8n%20%E2%9C%93'),
])
def test_collection_names_are_escaped_like_go_url_pathescape(name, escaped):
    assert escape_collection_name(name) == escaped


def test_long_collection_names_are_truncated_with_a_hash():
    name = 'x' * 300
    escaped = escape_collection_name(name)
    assert len(escaped) == 238 and escaped.startswith('x' * 208 + '%24')
    assert escape_collection_name('x' * 238) == 'x' * 238
    assert escape_collection_name('x' * 300) != escape_collection_name('x' * 301)


def test_file_names():
    assert data_file_name('shop', 'orders', 'gzip') == 'shop/orders.bson.gz'
    assert data_file_name('shop', 'orders', 'zstd') == 'shop/orders.bson.zst'
    assert data_file_name('shop', 'orders', 'none') == 'shop/orders.bson'
    assert metadata_file_name('shop', 'orders', 'gzip') == 'shop/orders.metadata.json.gz'
    assert metadata_file_name('shop', 'orders', 'zstd') == 'shop/orders.metadata.json'


def docs(count, size=100):
    return [bson.encode({'_id': i, 'pad': 'p' * (size + i % 17)}) for i in range(count)]


@pytest.mark.parametrize('compression', ['gzip', 'none'])
def test_writer_figures_match_a_rescan(tmp_path, compression):
    raws = docs(3000)
    path = str(tmp_path / ('c.bson' + ('.gz' if compression == 'gzip' else '')))
    writer = DataFileWriter(path, compression, 6, buffer_size=4096)
    for raw in raws:
        writer.write_document(raw)
    figures = writer.close()
    stream = b''.join(raws)
    assert figures['documents'] == 3000 and figures['bson_bytes'] == len(stream)
    assert figures['bson_sha256'] == hashlib.sha256(stream).hexdigest()
    with open(path, 'rb') as fh:
        on_disk = fh.read()
    assert figures['file_bytes'] == len(on_disk) and figures['sha256'] == hashlib.sha256(on_disk).hexdigest()
    if compression == 'gzip':
        assert gzip.decompress(on_disk) == stream
        assert on_disk[4:8] == b'\x00\x00\x00\x00'  # mtime 0: the same data gives the same file
    scan = scan_data_file(path, compression)
    assert scan['error'] is None
    assert {k: scan[k] for k in figures} == figures


def test_empty_collection_files(tmp_path):
    for compression in ('gzip', 'none'):
        path = str(tmp_path / ('e' + compression))
        figures = DataFileWriter(path, compression).close()
        scan = scan_data_file(path, compression)
        assert scan['error'] is None and scan['documents'] == 0 == figures['documents']


def test_counter_handles_documents_split_across_chunks():
    stream = b''.join(docs(50, 30))
    for chunk in (1, 3, 4, 5, 7, 64, len(stream)):
        counter = BSONStreamCounter()
        for pos in range(0, len(stream), chunk):
            counter.feed(stream[pos:pos + chunk])
        assert counter.finish() is None and counter.documents == 50 and counter.offset == len(stream)


@pytest.mark.parametrize('mangle,phrase', [
    (lambda s: s[:-10], 'truncated: the stream ends inside document 50'),
    (lambda s: s[:-1] + b'\x01', 'does not end with a NUL byte'),
    (lambda s: b'\xff\xff\xff\x7f' + s[4:], 'invalid length'),
    (lambda s: b'\x03\x00\x00\x00' + s[4:], 'invalid length 3'),
    (lambda s: s + b'\x05\x00', 'truncated'),
])
def test_counter_detects_bad_framing(mangle, phrase):
    counter = BSONStreamCounter()
    counter.feed(mangle(b''.join(docs(50, 30))))
    assert phrase in counter.finish()


def test_scan_detects_gzip_damage(tmp_path):
    path = str(tmp_path / 'c.bson.gz')
    writer = DataFileWriter(path, 'gzip', 6)
    for raw in docs(2000):
        writer.write_document(raw)
    good = writer.close()
    with open(path, 'rb') as fh:
        data = fh.read()
    for name, damaged, phrase in [
        ('truncated', data[:-50], 'truncated'),
        ('flipped', data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:], 'cannot decompress'),
        ('garbage', data + b'garbage!', 'cannot decompress'),
        ('empty', b'', 'cannot decompress'),
    ]:
        with open(path, 'wb') as fh:
            fh.write(damaged)
        scan = scan_data_file(path, 'gzip')
        assert scan['error'] and phrase in scan['error'], (name, scan['error'])
        assert scan['sha256'] != good['sha256'] and scan['file_bytes'] == len(damaged)
    with open(path, 'wb') as fh:
        fh.write(data + b'\x00' * 16)  # zero padding after the member is tolerated (the sha256 still catches it)
    assert scan_data_file(path, 'gzip')['error'] is None


def test_iter_raw_documents_and_errors(tmp_path):
    stream = b''.join(docs(10))
    import io  # pylint: disable=import-outside-toplevel
    assert list(iter_raw_documents(io.BytesIO(stream), 'x')) == docs(10)
    with pytest.raises(MongoBackupError) as info:
        list(iter_raw_documents(io.BytesIO(stream[:-3]), 'db/c.bson'))
    assert info.value.msg.startswith('db/c.bson: truncated or corrupt document 10')
    with pytest.raises(MongoBackupError) as info:
        list(iter_raw_documents(io.BytesIO(stream + b'\x01\x00'), 'db/c.bson'))
    assert 'truncated at byte' in info.value.msg


def test_metadata_document_shape():
    meta = build_metadata('orders', 'collection', {'capped': True, 'size': Int64(4096)},
                          [{'v': 2, 'key': {'_id': 1}, 'name': '_id_'}], 'ab' * 16)
    assert list(meta) == ['options', 'indexes', 'uuid', 'collectionName', 'type']
    text = metadata_bytes(meta).decode()
    assert text == ('{"options":{"capped":true,"size":{"$numberLong":"4096"}},"indexes":[{"v":{"$numberInt":"2"},'
                    '"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"uuid":"' + 'ab' * 16 + '","collectionName":"orders",'
                    '"type":"collection"}')
    assert parse_metadata(text.encode(), 'x')['options']['size'] == Int64(4096)
    assert isinstance(parse_metadata(text.encode(), 'x')['options']['size'], Int64)
    view = build_metadata('v', 'view', {'viewOn': 'orders', 'pipeline': []}, [], None)
    assert list(view) == ['options', 'indexes', 'collectionName', 'type']
    assert list(build_metadata('c', 'collection', {}, [], None)) == ['indexes', 'collectionName', 'type']


def test_metadata_parses_relaxed_json_from_older_tools():
    meta = ext_json_loads('{"options":{"capped":true,"size":4096},"indexes":[{"v":2,"key":{"a":1},"name":"a_1","ns":"db.c"}]}')
    assert meta['indexes'][0]['key'] == {'a': 1}
    with pytest.raises(MongoBackupError) as info:
        parse_metadata(b'{"indexes": 5}', 'db/c.metadata.json')
    assert 'db/c.metadata.json: expected a metadata document' in info.value.msg
    with pytest.raises(MongoBackupError):
        parse_metadata(b'not json', 'db/c.metadata.json')


def test_zstd_is_optional(tmp_path, monkeypatch):
    from ansible_collections.nodeops.stack.plugins.module_utils import mongo_common  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(mongo_common, 'HAS_ZSTD', False)
    with pytest.raises(MongoBackupError) as info:
        DataFileWriter(str(tmp_path / 'x.bson.zst'), 'zstd', 3)
    assert info.value.details['missing_lib'] == 'zstandard'
    assert not os.path.exists(str(tmp_path / 'x.bson.zst'))


@pytest.mark.parametrize('compression', ['gzip', 'none'])
def test_an_aborted_writer_leaves_no_unraisable_error_behind(tmp_path, compression, monkeypatch):
    """A dump that fails mid-collection aborts its writer; the compressor must not write its tail into the closed file later.

    (It did: the garbage-collected GzipFile flushed into the closed file and printed a traceback on every failed dump.)
    """
    import gc  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    unraisable = []
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)
    path = str(tmp_path / 'c.bson')
    writer = DataFileWriter(path, compression, 1, buffer_size=1024)
    for raw in docs(200):
        writer.write_document(raw)
    writer.abort()
    size = os.path.getsize(path)
    del writer
    gc.collect()
    assert [repr(u.exc_value) for u in unraisable] == []
    assert os.path.getsize(path) == size  # nothing written after the abort


@pytest.mark.parametrize('compression', ['gzip', 'none'])
def test_a_writer_whose_close_fails_on_a_full_disk_aborts_itself(tmp_path, compression, monkeypatch):
    """ENOSPC in the final flush of close(): the writer must end closed, with no compressor left to flush at gc time."""
    import errno  # pylint: disable=import-outside-toplevel
    import gc  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    unraisable = []
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)

    class FullDisk(object):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    writer = DataFileWriter(str(tmp_path / 'c.bson'), compression, 1)
    writer._hashing._fh = FullDisk()  # pylint: disable=protected-access
    for raw in docs(3000):  # ~350 KB: all of it still in the writer's 1 MiB buffer
        writer.write_document(raw)
    with pytest.raises(OSError) as info:
        writer.close()
    assert info.value.errno == errno.ENOSPC
    assert writer.closed and writer._raw.closed  # pylint: disable=protected-access
    del writer
    gc.collect()
    assert [repr(u.exc_value) for u in unraisable] == []
