"""MongoDB wire-protocol framing: OP_MSG (2013), OP_QUERY (2004) and OP_REPLY (1).

Every message starts with a 16-byte header ``messageLength, requestID,
responseTo, opCode`` (little-endian int32). OP_MSG carries flag bits and
sections: kind 0 is the command body, kind 1 a named document sequence (used
by insert/update/delete for their statements). The ``checksumPresent`` flag
appends a CRC-32C, which is skipped (not verified); ``moreToCome`` means the
client expects no reply. OP_COMPRESSED is not supported and compression is
never advertised.
"""

import struct

import bson
from bson.raw_bson import RawBSONDocument

from .bsonutil import CODEC, RAW_CODEC
from .errors import CommandError

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")

FLAG_CHECKSUM_PRESENT = 1 << 0
FLAG_MORE_TO_COME = 1 << 1
FLAG_EXHAUST_ALLOWED = 1 << 16
# Bits 0-15 are "required": an unknown one set there must be rejected.
_KNOWN_REQUIRED_FLAGS = FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME


class ProtocolError(Exception):
    """A malformed message; the connection is closed."""


class Request:
    """A decoded command request from either OP_MSG or OP_QUERY."""

    def __init__(self, request_id, opcode, body, sequences=None, more_to_come=False, db=None):
        self.request_id = request_id
        self.opcode = opcode
        self.body = body
        self.sequences = sequences or {}
        self.more_to_come = more_to_come
        self._command = None
        self._raw_command = None
        self._db = db

    @property
    def command(self):
        """The command document decoded into a dict."""
        if self._command is None:
            self._command = bson.decode(self.body, codec_options=CODEC)
        return self._command

    @property
    def raw_command(self):
        """The command document as a RawBSONDocument (nested documents stay raw)."""
        if self._raw_command is None:
            self._raw_command = RawBSONDocument(self.body, RAW_CODEC)
        return self._raw_command

    @property
    def db(self):
        """Target database: ``$db`` for OP_MSG, the namespace for OP_QUERY."""
        if self._db is not None:
            return self._db
        db = self.command.get("$db")
        if not isinstance(db, str):
            raise CommandError(40571, "OP_MSG requests require a $db argument", code_name="Location40571")
        return db

    def raw_documents(self, field):
        """Documents of array field ``field`` as RawBSONDocuments, from a kind-1 sequence or the body."""
        if field in self.sequences:
            return [RawBSONDocument(raw, RAW_CODEC) for raw in self.sequences[field]]
        value = self.raw_command.get(field)
        if value is None:
            return None
        if not isinstance(value, list):
            raise CommandError(14, "BSON field '%s' is the wrong type, expected type 'array'" % field, code_name="TypeMismatch")
        return value

    def documents(self, field):
        """Documents of array field ``field`` decoded into dicts."""
        if field in self.sequences:
            return [bson.decode(raw, codec_options=CODEC) for raw in self.sequences[field]]
        return self.command.get(field)


def parse_header(data):
    """``(length, request_id, response_to, opcode)`` of a 16-byte header."""
    return HEADER.unpack(data)


def _read_cstring(data, pos):
    end = data.index(b"\x00", pos)
    return data[pos:end].decode("utf-8"), end + 1


def _split_documents(data, pos, end):
    docs = []
    while pos < end:
        size = _INT32.unpack_from(data, pos)[0]
        if size < 5 or pos + size > end:
            raise ProtocolError("invalid document length in document sequence")
        docs.append(data[pos:pos + size])
        pos += size
    return docs


def parse_op_msg(request_id, payload):
    """Parse an OP_MSG payload (everything after the header)."""
    if len(payload) < 5:
        raise ProtocolError("OP_MSG too short")
    flags = _UINT32.unpack_from(payload, 0)[0]
    if flags & 0xFFFF & ~_KNOWN_REQUIRED_FLAGS:
        raise ProtocolError("unknown required OP_MSG flag bits 0x%x" % flags)
    end = len(payload) - (4 if flags & FLAG_CHECKSUM_PRESENT else 0)
    pos = 4
    body = None
    sequences = {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        size = _INT32.unpack_from(payload, pos)[0]
        if size < 5 or pos + size > end:
            raise ProtocolError("invalid OP_MSG section length")
        if kind == 0:
            if body is not None:
                raise ProtocolError("OP_MSG with more than one body section")
            body = payload[pos:pos + size]
        elif kind == 1:
            identifier, docs_start = _read_cstring(payload, pos + 4)
            sequences.setdefault(identifier, []).extend(_split_documents(payload, docs_start, pos + size))
        else:
            raise ProtocolError("unknown OP_MSG section kind %d" % kind)
        pos += size
    if body is None:
        raise ProtocolError("OP_MSG without a body section")
    return Request(request_id, OP_MSG, body, sequences, more_to_come=bool(flags & FLAG_MORE_TO_COME))


def parse_op_query(request_id, payload):
    """Parse a legacy OP_QUERY; returns ``(request, collection_name)``.

    Commands (``db.$cmd``) may be wrapped as ``{$query: {...}, $readPreference: ...}``.
    """
    full_name, pos = _read_cstring(payload, 4)
    pos += 8  # numberToSkip, numberToReturn
    size = _INT32.unpack_from(payload, pos)[0]
    query = payload[pos:pos + size]
    db, _sep, collection = full_name.partition(".")
    decoded = bson.decode(query, codec_options=CODEC)
    for wrapper in ("$query", "query"):
        if wrapper in decoded and isinstance(decoded[wrapper], dict) and len(decoded) <= 4:
            query = bson.encode(decoded[wrapper], codec_options=CODEC)
            break
    return Request(request_id, OP_QUERY, query, db=db), collection


def _header(length, request_id, response_to, opcode):
    return HEADER.pack(length, request_id, response_to, opcode)


def encode_op_msg(request_id, response_to, reply):
    """An OP_MSG reply with one body section."""
    body = bson.encode(reply, codec_options=CODEC)
    payload_size = 16 + 4 + 1 + len(body)
    return b"".join((_header(payload_size, request_id, response_to, OP_MSG), b"\x00\x00\x00\x00\x00", body))


def encode_op_reply(request_id, response_to, reply, query_failure=False):
    """An OP_REPLY with one document (for the legacy OP_QUERY handshake)."""
    body = bson.encode(reply, codec_options=CODEC)
    flags = 2 if query_failure else 0
    payload = struct.pack("<iqii", flags, 0, 0, 1) + body
    return _header(16 + len(payload), request_id, response_to, OP_REPLY) + payload
