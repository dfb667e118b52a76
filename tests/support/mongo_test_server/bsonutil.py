"""BSON helpers: codec options, raw documents, comparison order and hashable keys.

Documents are kept as the raw bytes a client sent. They are decoded (with
options that keep every BSON type distinguishable) only when a filter, sort,
projection or update needs to look inside them.
"""

import calendar
import datetime
import decimal
import functools
import math
import re
import struct

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

from .errors import CommandError

# Decoding into plain dicts: UUIDs stay Binary (subtype 3 and 4 both survive),
# int64 stays Int64, out-of-range dates become DatetimeMS. Re-encoding a value
# decoded with these options gives the same bytes (except the deprecated
# symbol/undefined/DBPointer types).
CODEC = CodecOptions(
    document_class=dict,
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)
RAW_CODEC = CodecOptions(
    document_class=RawBSONDocument,
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

_INT32 = struct.Struct("<i")


class _Missing:
    """Marker for a field that is absent (distinct from BSON null)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "MISSING"

    def __bool__(self):
        return False


MISSING = _Missing()


def encode(doc):
    """Encode a decoded document (a dict) back to BSON bytes."""
    try:
        return bson.encode(doc, codec_options=CODEC)
    except (TypeError, bson.errors.InvalidDocument) as exc:
        raise CommandError(2, "cannot encode document: %s" % exc) from exc


def decode(raw):
    """Decode raw BSON bytes into a dict with :data:`CODEC`."""
    return bson.decode(raw, codec_options=CODEC)


def _cstring_end(data, pos):
    end = data.index(b"\x00", pos)
    return end


def element_size(data, type_byte, pos):
    """Return the size in bytes of a BSON element value of ``type_byte`` at ``pos``."""
    if type_byte in (0x01, 0x09, 0x11, 0x12):
        return 8
    if type_byte in (0x02, 0x0D, 0x0E):
        return 4 + _INT32.unpack_from(data, pos)[0]
    if type_byte in (0x03, 0x04, 0x0F):
        return _INT32.unpack_from(data, pos)[0]
    if type_byte == 0x05:
        return 5 + _INT32.unpack_from(data, pos)[0]
    if type_byte in (0x06, 0x0A, 0xFF, 0x7F):
        return 0
    if type_byte == 0x07:
        return 12
    if type_byte == 0x08:
        return 1
    if type_byte == 0x0B:
        end = _cstring_end(data, _cstring_end(data, pos) + 1)
        return end + 1 - pos
    if type_byte == 0x0C:
        return 4 + _INT32.unpack_from(data, pos)[0] + 12
    if type_byte == 0x10:
        return 4
    if type_byte == 0x13:
        return 16
    raise CommandError(2, "invalid BSON type 0x%02x" % type_byte)


def iter_raw_elements(raw):
    """Yield ``(name, element_bytes)`` for each top-level element of raw BSON."""
    pos = 4
    end = len(raw) - 1
    while pos < end:
        start = pos
        type_byte = raw[pos]
        name_end = _cstring_end(raw, pos + 1)
        name = raw[pos + 1:name_end].decode("utf-8")
        value_start = name_end + 1
        pos = value_start + element_size(raw, type_byte, value_start)
        yield name, raw[start:pos]


def first_field_name(raw):
    """Return the name of the first field of raw BSON, or None if it is empty."""
    if len(raw) <= 5 or raw[4] == 0:
        return None
    return raw[5:_cstring_end(raw, 5)].decode("utf-8")


def build_raw(elements):
    """Assemble raw BSON from a sequence of element byte strings."""
    body = b"".join(elements)
    return _INT32.pack(len(body) + 5) + body + b"\x00"


def raw_id_value(raw):
    """Return ``(value, present)`` for the ``_id`` of raw BSON without decoding the rest."""
    if first_field_name(raw) == "_id":
        name_end = 8
        size = element_size(raw, raw[4], name_end + 1)
        elem = raw[4:name_end + 1 + size]
        return decode(build_raw([elem]))["_id"], True
    for name, elem in iter_raw_elements(raw):
        if name == "_id":
            return decode(build_raw([elem]))["_id"], True
    return None, False


def first_element(raw):
    """Bytes of the first element of raw BSON (the ``_id`` of a stored document)."""
    name_end = _cstring_end(raw, 5)
    return raw[4:name_end + 1 + element_size(raw, raw[4], name_end + 1)]


def id_element(id_value):
    """Encoded ``_id`` element for a decoded value."""
    return bson.encode({"_id": id_value}, codec_options=CODEC)[4:-1]


def with_id(raw, id_elem):
    """Raw BSON that has an ``_id``: unchanged if it has one, else ``id_elem`` is prepended."""
    elements = list(iter_raw_elements(raw))
    if any(name == "_id" for name, _elem in elements):
        return raw
    return build_raw([id_elem] + [elem for _name, elem in elements])


def prepare_for_insert(raw):
    """Make ``_id`` the first field (generating an ObjectId if absent), as mongod does.

    Returns ``(raw, _id)``; ``raw`` is unchanged when ``_id`` already comes first.
    """
    if first_field_name(raw) == "_id":
        return raw, raw_id_value(raw)[0]
    id_elem = None
    others = []
    for name, elem in iter_raw_elements(raw):
        if name == "_id" and id_elem is None:
            id_elem = elem
        else:
            others.append(elem)
    if id_elem is None:
        oid = ObjectId()
        id_elem = bson.encode({"_id": oid})[4:-1]
        return build_raw([id_elem] + others), oid
    new_raw = build_raw([id_elem] + others)
    return new_raw, raw_id_value(new_raw)[0]


class Doc:
    """A document held as raw BSON and/or a decoded dict, converting lazily.

    Stored documents always have ``raw``; the decoded form is cached and must
    be treated as read-only (updates work on a fresh :meth:`copy`).
    """

    __slots__ = ("_raw", "_doc")

    def __init__(self, raw=None, doc=None):
        if raw is None and doc is None:
            raise ValueError("Doc needs raw bytes or a dict")
        self._raw = raw
        self._doc = doc

    @property
    def raw(self):
        """The BSON bytes of this document."""
        if self._raw is None:
            self._raw = encode(self._doc)
        return self._raw

    @property
    def doc(self):
        """The decoded (read-only) dict of this document."""
        if self._doc is None:
            self._doc = decode(self._raw)
        return self._doc

    def copy(self):
        """Return a freshly decoded, mutable dict of this document."""
        return decode(self.raw)

    def as_raw_document(self):
        """Return a RawBSONDocument that encodes to exactly :attr:`raw`."""
        return RawBSONDocument(self.raw, RAW_CODEC)

    def size(self):
        """Size of the document in bytes."""
        return len(self.raw)


# ---------------------------------------------------------------------------
# Comparison order (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/)

def datetime_to_ms(value):
    """Milliseconds since the epoch for a datetime or DatetimeMS."""
    if isinstance(value, DatetimeMS):
        return int(value)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


def is_number(value):
    """True for BSON numeric values (int32, int64, double, decimal128)."""
    return isinstance(value, (int, float, Decimal128)) and not isinstance(value, bool)


def number_value(value):
    """Python number for a BSON numeric value (Decimal for Decimal128)."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return value


def _is_nan(num):
    if isinstance(num, float):
        return math.isnan(num)
    if isinstance(num, decimal.Decimal):
        return num.is_nan()
    return False


def canonical_type(value):
    """MongoDB's canonical type rank used for cross-type comparison."""
    if value is MISSING:
        return 0
    if isinstance(value, MinKey):
        return -1
    if isinstance(value, MaxKey):
        return 127
    if value is None:
        return 5
    if isinstance(value, bool):
        return 40
    if isinstance(value, (int, float, Decimal128)):
        return 10
    if isinstance(value, Code):
        return 60 if value.scope is None else 65
    if isinstance(value, str):
        return 15
    if isinstance(value, (dict, DBRef, RawBSONDocument)):
        return 20
    if isinstance(value, (list, tuple)):
        return 25
    if isinstance(value, (bytes, Binary)):
        return 30
    if isinstance(value, ObjectId):
        return 35
    if isinstance(value, (datetime.datetime, DatetimeMS)):
        return 45
    if isinstance(value, Timestamp):
        return 47
    if isinstance(value, (Regex, re.Pattern)):
        return 50
    return 100


_FAST_TYPES = (int, str)


def _cmp(a, b):
    return (a > b) - (a < b)


def _as_mapping(value):
    if isinstance(value, DBRef):
        return value.as_doc()
    if isinstance(value, RawBSONDocument):
        return decode(value.raw)
    return value


def _regex_parts(value):
    if isinstance(value, re.Pattern):
        value = Regex.from_native(value)
    flags = value.flags
    if isinstance(flags, int):
        flags = "".join(sorted(ch for ch, bit in (("i", re.I), ("l", re.L), ("m", re.M), ("s", re.S), ("u", re.U), ("x", re.X)) if flags & bit))
    return value.pattern, flags


def compare(a, b):
    """Compare two BSON values in MongoDB order; returns -1, 0 or 1."""
    if type(a) is type(b) and type(a) in _FAST_TYPES:
        return (a > b) - (a < b)
    ta, tb = canonical_type(a), canonical_type(b)
    if ta != tb:
        return _cmp(ta, tb)
    if ta in (-1, 0, 5, 127, 100):
        return 0
    if ta == 10:
        na, nb = number_value(a), number_value(b)
        nan_a, nan_b = _is_nan(na), _is_nan(nb)
        if nan_a or nan_b:
            return _cmp(not nan_a, not nan_b)
        return _cmp(na, nb)
    if ta == 15:
        return _cmp(a, b)
    if ta == 20:
        a, b = _as_mapping(a), _as_mapping(b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            result = _cmp(canonical_type(va), canonical_type(vb)) or _cmp(ka, kb) or compare(va, vb)
            if result:
                return result
        return _cmp(len(a), len(b))
    if ta == 25:
        for va, vb in zip(a, b):
            result = compare(va, vb)
            if result:
                return result
        return _cmp(len(a), len(b))
    if ta == 30:
        sa = a.subtype if isinstance(a, Binary) else 0
        sb = b.subtype if isinstance(b, Binary) else 0
        return _cmp(len(a), len(b)) or _cmp(sa, sb) or _cmp(bytes(a), bytes(b))
    if ta == 35:
        return _cmp(a.binary, b.binary)
    if ta == 40:
        return _cmp(a, b)
    if ta == 45:
        return _cmp(datetime_to_ms(a), datetime_to_ms(b))
    if ta == 47:
        return _cmp((a.time, a.inc), (b.time, b.inc))
    if ta == 50:
        return _cmp(_regex_parts(a), _regex_parts(b))
    if ta in (60, 65):
        result = _cmp(str(a), str(b))
        if result or ta == 60:
            return result
        return compare(a.scope, b.scope)
    return 0


def values_equal(a, b):
    """BSON equality (numbers compare by value across int/long/double/decimal)."""
    return compare(a, b) == 0


sort_key = functools.cmp_to_key(compare)


def hash_key(value):
    """A hashable key such that ``hash_key(a) == hash_key(b)`` iff ``values_equal(a, b)``."""
    ctype = canonical_type(value)
    if ctype == 10:
        num = number_value(value)
        if _is_nan(num):
            return (10, "nan")
        return (10, num)
    if ctype == 20:
        mapping = _as_mapping(value)
        return (20, tuple((k, hash_key(v)) for k, v in mapping.items()))
    if ctype == 25:
        return (25, tuple(hash_key(v) for v in value))
    if ctype == 30:
        return (30, value.subtype if isinstance(value, Binary) else 0, bytes(value))
    if ctype == 35:
        return (35, value.binary)
    if ctype == 45:
        return (45, datetime_to_ms(value))
    if ctype == 47:
        return (47, value.time, value.inc)
    if ctype == 50:
        return (50,) + _regex_parts(value)
    if ctype in (60, 65):
        return (ctype, str(value), hash_key(value.scope) if value.scope is not None else None)
    if ctype in (15, 40):
        return (ctype, value)
    return (ctype,)


# ---------------------------------------------------------------------------
# Type numbers and names (for $type)

TYPE_ALIASES = {
    "double": 1, "string": 2, "object": 3, "array": 4, "binData": 5, "undefined": 6,
    "objectId": 7, "bool": 8, "date": 9, "null": 10, "regex": 11, "dbPointer": 12,
    "javascript": 13, "symbol": 14, "javascriptWithScope": 15, "int": 16,
    "timestamp": 17, "long": 18, "decimal": 19, "minKey": -1, "maxKey": 127,
}
TYPE_NAMES = {number: name for name, number in TYPE_ALIASES.items()}


def bson_type_number(value):
    """The BSON type number of a decoded value."""
    if value is None:
        return 10
    if isinstance(value, bool):
        return 8
    if isinstance(value, Int64):
        return 18
    if isinstance(value, int):
        return 16 if -2 ** 31 <= value < 2 ** 31 else 18
    if isinstance(value, float):
        return 1
    if isinstance(value, Decimal128):
        return 19
    if isinstance(value, Code):
        return 13 if value.scope is None else 15
    if isinstance(value, str):
        return 2
    if isinstance(value, (dict, DBRef, RawBSONDocument)):
        return 3
    if isinstance(value, (list, tuple)):
        return 4
    if isinstance(value, (bytes, Binary)):
        return 5
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, (datetime.datetime, DatetimeMS)):
        return 9
    if isinstance(value, (Regex, re.Pattern)):
        return 11
    if isinstance(value, Timestamp):
        return 17
    if isinstance(value, MinKey):
        return -1
    if isinstance(value, MaxKey):
        return 127
    return 0


def type_name(value):
    """Human readable BSON type name of a decoded value."""
    return TYPE_NAMES.get(bson_type_number(value), "unknown")


def utc_now():
    """Current UTC time truncated to milliseconds (BSON date precision)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def json_repr(value):
    """Short shell-like rendering of a value for error messages."""
    if isinstance(value, str):
        return '"%s"' % value
    if isinstance(value, dict):
        return "{ %s }" % ", ".join("%s: %s" % (k, json_repr(v)) for k, v in value.items())
    if isinstance(value, list):
        return "[ %s ]" % ", ".join(json_repr(v) for v in value)
    if isinstance(value, ObjectId):
        return "ObjectId('%s')" % value
    return repr(value)
