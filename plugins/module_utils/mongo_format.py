# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-disk format of a backup: mongodump's directory layout, compression, BSON framing, metadata files.

* ``<db>/<escaped collection>.bson[.gz|.zst]``: the collection's documents as a
  plain concatenation of BSON documents (what ``mongodump`` writes).
* ``<db>/<escaped collection>.metadata.json[.gz]``: ``{"options", "indexes",
  "uuid", "collectionName", "type"}`` in canonical Extended JSON, the fields and
  field order of mongodump's ``Metadata`` struct. With gzip the metadata file
  is gzipped too and named ``.metadata.json.gz``, exactly as ``mongodump --gzip``
  does, so that ``mongorestore --gzip`` reads the directory as is.
* Collection names are escaped for file names as mongodump does (Go's
  ``url.PathEscape``; names longer than 238 escaped bytes are truncated and
  suffixed with ``%24`` + base64url(sha1(name))).

Everything streams: writers hash and count as bytes go by, readers never hold
more than one document (at most 16 MiB) in memory.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import base64
import gzip
import hashlib
import io
import json
import os
import struct
import zlib

from urllib.parse import quote

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import (
    HAS_PYMONGO, MongoBackupError, require_zstd, zstandard,
)

if HAS_PYMONGO:
    from bson import json_util
    from bson.json_util import JSONOptions, JSONMode
else:  # pragma: no cover
    json_util = JSONOptions = JSONMode = None

COMPRESSIONS = ('gzip', 'zstd', 'none')
EXTENSIONS = {'gzip': '.gz', 'zstd': '.zst', 'none': ''}
# A BSON document is at most 16 MiB; oplog entries may exceed that by up to 16 KiB.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 + 16 * 1024
CHUNK = 1024 * 1024


# --------------------------------------------------------------------------- file names

def escape_collection_name(name):
    """mongodump's file name for a collection (Go ``url.PathEscape`` + truncation of long names)."""
    escaped = quote(name, safe="$&+:=@")
    if len(escaped) > 238:
        digest = base64.urlsafe_b64encode(hashlib.sha1(name.encode('utf-8')).digest()).decode('ascii').rstrip('=')
        escaped = escaped[:208] + '%24' + digest
    return escaped


def data_file_name(db, collection, compression):
    """Relative path of a collection's data file."""
    return '%s/%s.bson%s' % (db, escape_collection_name(collection), EXTENSIONS[compression])


def metadata_file_name(db, collection, compression):
    """Relative path of a collection's metadata file (gzipped like mongodump --gzip when compression is gzip)."""
    return '%s/%s.metadata.json%s' % (db, escape_collection_name(collection), '.gz' if compression == 'gzip' else '')


# --------------------------------------------------------------------------- hashing writer/reader

class HashingWriter(object):
    """File-like sink that hashes and counts the bytes written to the underlying file."""

    def __init__(self, fileobj):
        self._fh = fileobj
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        if self._fh is None:  # discarded (aborted writer): the compressor's tail goes nowhere
            return len(data)
        self.sha256.update(data)
        self.size += len(data)
        self._fh.write(data)
        return len(data)

    def flush(self):
        if self._fh is not None:
            self._fh.flush()

    def discard(self):
        """Drop every later write (the file is being abandoned)."""
        self._fh = None

    def writable(self):
        return True


class HashingReader(io.RawIOBase):
    """File-like source that hashes and counts the bytes read from the underlying file."""

    def __init__(self, fileobj):
        super(HashingReader, self).__init__()
        self._fh = fileobj
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._fh.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.sha256.update(data)
        self.size += size
        return size

    def drain(self):
        """Read (and hash) whatever the decompressor left unread."""
        while True:
            data = self._fh.read(CHUNK)
            if not data:
                return
            self.sha256.update(data)
            self.size += len(data)


# --------------------------------------------------------------------------- compressed streams

class DataFileWriter(object):
    """Writes a (compressed) BSON stream; tracks documents, BSON bytes/sha256 and file bytes/sha256.

    Documents are appended as raw bytes (never re-encoded) through a 1 MiB
    buffer so compression works on large blocks.
    """

    def __init__(self, path, compression='gzip', level=6, buffer_size=CHUNK):
        self.path = path
        self.compression = compression
        if compression == 'zstd':
            require_zstd()
        self._raw = open(path, 'wb')
        self._hashing = HashingWriter(self._raw)
        if compression == 'gzip':
            self._stream = gzip.GzipFile(filename='', mode='wb', compresslevel=level, fileobj=self._hashing, mtime=0)
        elif compression == 'zstd':
            self._stream = zstandard.ZstdCompressor(level=level).stream_writer(self._hashing, closefd=False)
        else:
            self._stream = self._hashing
        self._buffer = bytearray()
        self._buffer_size = buffer_size
        self.documents = 0
        self.bson_bytes = 0
        self._bson_sha256 = hashlib.sha256()
        self.closed = False

    def write_document(self, raw):
        """Append one raw BSON document."""
        self._buffer += raw
        self.documents += 1
        if len(self._buffer) >= self._buffer_size:
            self._flush_buffer()

    def write_raw(self, data, documents):
        """Append a block of concatenated raw documents (``documents`` of them)."""
        self._buffer += data
        self.documents += documents
        if len(self._buffer) >= self._buffer_size:
            self._flush_buffer()

    def _flush_buffer(self):
        if self._buffer:
            data = bytes(self._buffer)
            self._bson_sha256.update(data)
            self.bson_bytes += len(data)
            self._stream.write(data)
            self._buffer = bytearray()

    def close(self):
        """Flush, finish the compressed stream, fsync and close; returns the manifest figures."""
        if self.closed:
            return self.figures()
        try:
            self._flush_buffer()
            if self._stream is not self._hashing:
                self._stream.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        except BaseException:
            self.abort()  # a full disk fails here too; leave nothing half-open behind
            raise
        self.closed = True
        return self.figures()

    def abort(self):
        """Close without caring about the content (error path)."""
        self.closed = True
        # Close the compressor too, writing into nothing: left open, it flushes into the closed file when garbage-collected
        # and prints a traceback (or, on a full disk, fails again).
        self._hashing.discard()
        if self._stream is not self._hashing:
            try:
                self._stream.close()
            except (OSError, ValueError):
                pass
        try:
            self._raw.close()
        except OSError:
            pass

    def figures(self):
        return {
            'documents': self.documents,
            'bson_bytes': self.bson_bytes,
            'bson_sha256': self._bson_sha256.hexdigest(),
            'file_bytes': self._hashing.size,
            'sha256': self._hashing.sha256.hexdigest(),
        }


def open_decompressed(fileobj, compression):
    """A readable stream of the uncompressed content of ``fileobj``."""
    if compression == 'gzip':
        return gzip.GzipFile(fileobj=fileobj, mode='rb')
    if compression == 'zstd':
        require_zstd()
        return zstandard.ZstdDecompressor().stream_reader(fileobj, closefd=False)
    return fileobj


def write_small_file(path, data, compression='none'):
    """Write a small file (metadata, manifest) in one go, fsync it; returns (size, sha256) of the file."""
    if compression == 'gzip':
        buf = io.BytesIO()
        with gzip.GzipFile(filename='', mode='wb', fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    with open(path, 'wb') as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data), hashlib.sha256(data).hexdigest()


def read_small_file(path):
    """Content of a small file, gunzipped when its name ends with .gz."""
    with open(path, 'rb') as fh:
        data = fh.read()
    if path.endswith('.gz'):
        data = gzip.decompress(data)
    return data


# --------------------------------------------------------------------------- BSON framing

class BSONStreamCounter(object):
    """Counts the documents of a BSON stream fed in arbitrary chunks, checking the framing.

    Each document must start with a little-endian int32 length between 5 and
    MAX_DOCUMENT_BYTES and end with a NUL byte. Errors name the byte offset.
    """

    def __init__(self):
        self.documents = 0
        self.offset = 0          # uncompressed bytes consumed
        self.sha256 = hashlib.sha256()
        self._header = b''
        self._remaining = 0
        self._last = None
        self.error = None

    def feed(self, data):
        if self.error:
            return
        self.sha256.update(data)
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    if view[pos - 1] != 0:
                        self.error = 'document %d (ending at byte %d) does not end with a NUL byte' % (self.documents + 1, self.offset + pos)
                        return
                    self.documents += 1
                continue
            need = 4 - len(self._header)
            piece = bytes(view[pos:pos + need])
            self._header += piece
            pos += len(piece)
            if len(self._header) == 4:
                size = struct.unpack('<i', self._header)[0]
                if size < 5 or size > MAX_DOCUMENT_BYTES:
                    self.error = 'document %d at byte %d has an invalid length %d' % (self.documents + 1, self.offset + pos - 4, size)
                    return
                self._header = b''
                self._remaining = size - 4
        self.offset += end

    def finish(self):
        """Call at the end of the stream; returns the error text or None."""
        if not self.error and (self._remaining or self._header):
            self.error = 'truncated: the stream ends inside document %d (%d bytes missing)' % (
                self.documents + 1, self._remaining or (4 - len(self._header)))
        return self.error


def scan_data_file(path, compression):
    """Read a data file once: file size/sha256, uncompressed size/sha256, document count, framing errors.

    Returns a dict; ``error`` is None when the stream decompressed and framed cleanly.
    """
    result = {'file_bytes': 0, 'sha256': None, 'bson_bytes': 0, 'bson_sha256': None, 'documents': 0, 'error': None}
    counter = BSONStreamCounter()
    with open(path, 'rb') as raw:
        hashing = HashingReader(raw)
        try:
            if compression == 'gzip':
                _feed_gzip(hashing, counter)
            else:
                stream = open_decompressed(io.BufferedReader(hashing, CHUNK), compression)
                while True:
                    data = stream.read(CHUNK)
                    if not data:
                        break
                    counter.feed(data)
                    if counter.error:
                        break
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            counter.error = counter.error or 'cannot decompress (%s): %s' % (compression, exc)
        except Exception as exc:  # pylint: disable=broad-except  # zstd raises its own ZstdError
            counter.error = counter.error or 'cannot decompress (%s): %s' % (compression, exc)
        hashing.drain()
    counter.finish()
    result.update(file_bytes=hashing.size, sha256=hashing.sha256.hexdigest(), bson_bytes=counter.offset,
                  bson_sha256=counter.sha256.hexdigest(), documents=counter.documents, error=counter.error)
    return result


def _feed_gzip(hashing, counter):
    """Decompress a gzip stream (one or more members) with zlib, feeding the counter; strict about the end."""
    decomp = zlib.decompressobj(wbits=31)
    saw_data = False
    while True:
        chunk = hashing.read(CHUNK)
        if not chunk:
            break
        saw_data = True
        while chunk:
            data = decomp.decompress(chunk, CHUNK * 4)
            if data:
                counter.feed(data)
            chunk = decomp.unconsumed_tail
            if decomp.eof:
                rest = decomp.unused_data + chunk
                if rest.strip(b'\x00'):
                    decomp = zlib.decompressobj(wbits=31)
                    chunk = rest
                else:
                    chunk = b''
        if counter.error:
            return
    if not saw_data:
        raise EOFError('empty file, not a gzip stream')
    tail = decomp.flush()
    if tail:
        counter.feed(tail)
    if not decomp.eof:
        raise EOFError('compressed stream ends before its end-of-stream marker (truncated)')


def iter_raw_documents(stream, name):
    """Yield the raw bytes of each document of an uncompressed BSON stream; MongoBackupError on bad framing."""
    index = 0
    offset = 0
    while True:
        header = _read_exact(stream, 4)
        if not header:
            return
        if len(header) < 4:
            raise MongoBackupError('%s: truncated at byte %d (document %d header)' % (name, offset, index + 1))
        size = struct.unpack('<i', header)[0]
        if size < 5 or size > MAX_DOCUMENT_BYTES:
            raise MongoBackupError('%s: document %d at byte %d has an invalid length %d' % (name, index + 1, offset, size))
        body = _read_exact(stream, size - 4)
        if len(body) < size - 4 or body[-1:] != b'\x00':
            raise MongoBackupError('%s: truncated or corrupt document %d at byte %d' % (name, index + 1, offset))
        index += 1
        offset += size
        yield header + body


def _read_exact(stream, size):
    chunks = []
    left = size
    while left:
        data = stream.read(left)
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b''.join(chunks)


# --------------------------------------------------------------------------- Extended JSON

def _json_options(mode):
    return JSONOptions(json_mode=mode, tz_aware=True)


def ext_json_dumps(doc, canonical=True):
    """Extended JSON text (canonical by default, compact separators, UTF-8 kept) as mongodump writes it."""
    mode = JSONMode.CANONICAL if canonical else JSONMode.RELAXED
    return json_util.dumps(doc, json_options=_json_options(mode), separators=(',', ':'), ensure_ascii=False)


def ext_json_loads(text):
    """Parse canonical or relaxed Extended JSON, keeping key order and BSON types (Int64, Decimal128 ...)."""
    return json_util.loads(text, json_options=_json_options(JSONMode.CANONICAL))


def build_metadata(name, kind, options, indexes, uuid_hex):
    """mongodump's metadata document: options (omitted when empty), indexes, uuid (when known), collectionName, type."""
    meta = {}
    if options:
        meta['options'] = options
    meta['indexes'] = list(indexes or [])
    if uuid_hex:
        meta['uuid'] = uuid_hex
    meta['collectionName'] = name
    meta['type'] = kind
    return meta


def metadata_bytes(meta):
    """Serialized metadata file content."""
    return ext_json_dumps(meta).encode('utf-8')


def parse_metadata(data, name):
    """Parse a metadata file's content; MongoBackupError naming the file when it is not valid."""
    try:
        meta = ext_json_loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MongoBackupError('%s: not valid Extended JSON: %s' % (name, exc))
    if not isinstance(meta, dict) or not isinstance(meta.get('indexes', []), list):
        raise MongoBackupError('%s: expected a metadata document with an "indexes" list' % name)
    return meta


def canonical_json(obj):
    """Deterministic plain JSON text (manifest)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + '\n'
