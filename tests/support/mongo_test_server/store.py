"""The in-memory catalog and document store.

A :class:`Store` holds :class:`Database` objects, which hold
:class:`Collection` objects (real collections and views). Each collection keeps
its documents as raw BSON in insertion ("natural") order, its creation options,
a stable UUID and its index definitions. Unique indexes (including ``_id_``)
are enforced on insert, update and index creation; query-language validators
are enforced unless ``validationLevel`` is off, ``validationAction`` is warn or
the write bypasses validation. Capped collections evict their oldest documents.
"""

import copy
import itertools
import logging
import uuid

from bson.binary import Binary
from bson.regex import Regex

from . import MAX_BSON_OBJECT_SIZE
from .aggregation import run_pipeline
from .bsonutil import MISSING, Doc, hash_key, is_number, json_repr, number_value, prepare_for_insert, values_equal
from .errors import CommandError, bad_value
from .query import compile_filter, resolve_path, split_path

LOG = logging.getLogger(__name__)

ID_INDEX_NAME = "_id_"
MAX_VIEW_DEPTH = 20
# Index spec fields kept as given (``v``, ``key`` and ``name`` are placed first).
INDEX_OPTIONS = (
    "unique", "sparse", "expireAfterSeconds", "partialFilterExpression", "collation", "hidden",
    "weights", "default_language", "language_override", "textIndexVersion", "2dsphereIndexVersion",
    "bits", "min", "max", "bucketSize", "wildcardProjection", "storageEngine", "prepareUnique", "background",
)
COLLECTION_OPTIONS = (
    "capped", "size", "max", "autoIndexId", "storageEngine", "validator", "validationLevel",
    "validationAction", "indexOptionDefaults", "viewOn", "pipeline", "collation", "changeStreamPreAndPostImages", "flags",
)


def validate_db_name(name):
    """Reject database names a real server refuses."""
    if not isinstance(name, str) or not name or len(name.encode("utf-8")) >= 64:
        raise CommandError(73, "Invalid database name: '%s'" % name)
    for char in '/\\. "$\x00':
        if char in name:
            raise CommandError(73, "Invalid database name: '%s'" % name)


def validate_collection_name(db_name, name):
    """Reject collection names a real server refuses."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith(".") or "$" in name:
        raise CommandError(73, "Invalid collection name: %s.%s" % (db_name, name))


class Record:
    """A stored document plus the unique-index keys it currently holds."""

    __slots__ = ("doc", "id_value", "keys")

    def __init__(self, doc, id_value):
        self.doc = doc
        self.id_value = id_value
        self.keys = {}


class Index:
    """One index definition; unique indexes also map keys to record ids."""

    def __init__(self, spec):
        self.spec = spec
        self.name = spec["name"]
        self.fields = [split_path(path) for path in spec["key"]]
        self.is_id = self.name == ID_INDEX_NAME
        self.unique = self.is_id or bool(spec.get("unique"))
        self.sparse = bool(spec.get("sparse"))
        partial = spec.get("partialFilterExpression")
        self.partial = compile_filter(partial) if partial is not None else None
        self.entries = {}

    def keys_for(self, record):
        """``[(hashable_key, values)]`` for a record, or None when it is not indexed."""
        if self.is_id:
            return [((hash_key(record.id_value),), (record.id_value,))]
        doc = record.doc.doc
        if self.partial is not None and not self.partial(doc):
            return None
        per_field = []
        all_missing = True
        for parts in self.fields:
            values = []
            for value in resolve_path(doc, parts):
                if value is MISSING:
                    values.append(None)
                    continue
                all_missing = False
                if isinstance(value, list):
                    values.extend(value if value else [None])
                else:
                    values.append(value)
            per_field.append(values)
        if self.sparse and all_missing:
            return None
        combos = [()]
        for values in per_field:
            combos = [c + (v,) for c in combos for v in values]
        seen = {}
        for combo in combos:
            seen.setdefault(tuple(hash_key(v) for v in combo), combo)
        return list(seen.items())

    def duplicate_error(self, ns, values):
        """The E11000 error a real server reports for a duplicate key."""
        key_value = dict(zip(self.spec["key"].keys(), values))
        rendered = ", ".join("%s: %s" % (k, json_repr(v)) for k, v in key_value.items())
        return CommandError(11000, "E11000 duplicate key error collection: %s index: %s dup key: { %s }" % (ns, self.name, rendered),
                            keyPattern=dict(self.spec["key"]), keyValue=key_value)


class Collection:
    """A collection (``kind == "collection"``) or a view (``kind == "view"``)."""

    def __init__(self, database, name, options=None, kind="collection"):
        self.database = database
        self.name = name
        self.kind = kind
        self.options = dict(options or {})
        self.uuid = Binary(uuid.uuid4().bytes, 4)
        self.records = {}
        self.next_record_id = 1
        self.data_size = 0
        self.indexes = {}
        self.validator = None
        self.validator_unsupported = False
        if kind == "collection":
            self.indexes[ID_INDEX_NAME] = Index({"v": 2, "key": {"_id": 1}, "name": ID_INDEX_NAME})
            self._compile_validator()

    @property
    def ns(self):
        """The ``db.collection`` namespace string."""
        return "%s.%s" % (self.database.name, self.name)

    @property
    def is_view(self):
        """True for views."""
        return self.kind == "view"

    def _compile_validator(self):
        validator = self.options.get("validator")
        self.validator = None
        self.validator_unsupported = False
        if validator:
            try:
                self.validator = compile_filter(validator)
            except CommandError as exc:
                LOG.info("validator of %s is not enforced: %s", self.ns, exc.errmsg)
                self.validator_unsupported = True

    def set_options(self, **changes):
        """Change collection options (collMod) and recompile the validator."""
        self.options.update(changes)
        self._compile_validator()

    # -- reads --------------------------------------------------------------

    def record_items(self, query, limit=0):
        """``(record_id, record)`` pairs matching ``query`` in natural order (at most ``limit`` if non-zero).

        ``{_id: value}`` queries use the _id index instead of a scan.
        """
        if isinstance(query, dict) and len(query) == 1 and "_id" in query:
            target = query["_id"]
            if not isinstance(target, (dict, list, Regex)) and not hasattr(target, "pattern"):
                record_id = self.indexes[ID_INDEX_NAME].entries.get((hash_key(target),))
                return [(record_id, self.records[record_id])] if record_id is not None else []
        predicate = compile_filter(query)
        items = self.records.items()
        if query:
            items = (item for item in items if predicate(item[1].doc.doc))
        return list(itertools.islice(items, limit)) if limit else list(items)

    def find_records(self, query, limit=0):
        """Records matching ``query`` in natural order (at most ``limit`` if non-zero)."""
        return [record for _record_id, record in self.record_items(query, limit)]

    # -- validation ---------------------------------------------------------

    def _validate(self, doc, bypass, old_doc=None):
        if self.validator is None or bypass:
            return
        level = self.options.get("validationLevel", "strict")
        action = self.options.get("validationAction", "error")
        if level == "off":
            return
        if level == "moderate" and old_doc is not None and not self.validator(old_doc.doc):
            return
        if self.validator(doc.doc):
            return
        if action == "warn":
            LOG.warning("Document would fail validation in %s", self.ns)
            return
        raise CommandError(121, "Document failed validation",
                           errInfo={"failingDocumentId": doc.doc.get("_id"),
                                    "details": {"operatorName": "$and", "note": "details are not computed by the test server"}})

    def _check_unique(self, record, record_id):
        """Compute a record's unique keys; raise E11000 if another record holds one."""
        keys = {}
        for index in self.indexes.values():
            if not index.unique:
                continue
            entries = index.keys_for(record)
            if entries is None:
                continue
            for key, values in entries:
                holder = index.entries.get(key)
                if holder is not None and holder != record_id:
                    raise index.duplicate_error(self.ns, values)
            keys[index.name] = [key for key, _values in entries]
        return keys

    def _add_keys(self, record, record_id, keys):
        record.keys = keys
        for name, index_keys in keys.items():
            entries = self.indexes[name].entries
            for key in index_keys:
                entries[key] = record_id

    def _remove_keys(self, record):
        for name, index_keys in record.keys.items():
            index = self.indexes.get(name)
            if index is None:
                continue
            for key in index_keys:
                index.entries.pop(key, None)
        record.keys = {}

    # -- writes -------------------------------------------------------------

    def insert(self, raw, bypass_validation=False):
        """Insert raw BSON; returns the _id. Raises CommandError for write errors."""
        if self.is_view:
            raise CommandError(166, "Namespace %s is a view, not a collection" % self.ns)
        if len(raw) > MAX_BSON_OBJECT_SIZE:
            raise CommandError(10334, "object to insert too large. size in bytes: %d, max size: %d" % (len(raw), MAX_BSON_OBJECT_SIZE))
        raw, id_value = prepare_for_insert(raw)
        if isinstance(id_value, (list, Regex)):
            raise CommandError(53, "can't use a %s for _id" % ("array" if isinstance(id_value, list) else "regex"))
        record = Record(Doc(raw=raw), id_value)
        self._validate(record.doc, bypass_validation)
        record_id = self.next_record_id
        keys = self._check_unique(record, record_id)
        self.next_record_id += 1
        self.records[record_id] = record
        self._add_keys(record, record_id, keys)
        self.data_size += len(raw)
        self._enforce_cap()
        return id_value

    def _enforce_cap(self):
        if not self.options.get("capped"):
            return
        max_docs = self.options.get("max")
        max_docs = int(number_value(max_docs)) if is_number(max_docs) and number_value(max_docs) > 0 else None
        max_size = self.options.get("size")
        max_size = int(number_value(max_size)) if is_number(max_size) and number_value(max_size) > 0 else None
        while len(self.records) > 1 and ((max_docs and len(self.records) > max_docs) or (max_size and self.data_size > max_size)):
            oldest = next(iter(self.records))
            self.delete(oldest)

    def replace(self, record_id, new_doc, bypass_validation=False):
        """Replace a record's document with a dict or raw bytes; returns True if it changed."""
        record = self.records[record_id]
        raw = new_doc if isinstance(new_doc, bytes) else Doc(doc=new_doc).raw
        if raw == record.doc.raw:
            return False
        if len(raw) > MAX_BSON_OBJECT_SIZE:
            raise CommandError(17419, "Resulting document after update is larger than %d" % MAX_BSON_OBJECT_SIZE)
        raw, id_value = prepare_for_insert(raw)
        if not values_equal(id_value, record.id_value) or type(id_value) is not type(record.id_value):
            raise CommandError(66, "Performing an update on the path '_id' would modify the immutable field '_id'")
        candidate = Record(Doc(raw=raw), record.id_value)
        self._validate(candidate.doc, bypass_validation, old_doc=record.doc)
        keys = self._check_unique(candidate, record_id)
        self._remove_keys(record)
        self.data_size += len(raw) - len(record.doc.raw)
        record.doc = candidate.doc
        self._add_keys(record, record_id, keys)
        return True

    def delete(self, record_id):
        """Remove one record."""
        record = self.records.pop(record_id)
        self._remove_keys(record)
        self.data_size -= len(record.doc.raw)

    # -- indexes ------------------------------------------------------------

    def create_index(self, spec):
        """Add an index from a createIndexes spec; returns False if it already existed."""
        if self.is_view:
            raise CommandError(166, "Namespace %s is a view, not a collection" % self.ns)
        key = spec.get("key")
        name = spec.get("name")
        if not isinstance(key, dict) or not key:
            raise CommandError(67, "Index keys cannot be empty.")
        if not isinstance(name, str) or not name:
            raise CommandError(9, "Error in specification %s :: caused by :: The 'name' field is a required property of an index specification"
                               % json_repr(spec))
        for path, direction in key.items():
            split_path(path)
            if not (is_number(direction) and number_value(direction) != 0) and direction not in ("text", "hashed", "2d", "2dsphere", "geoHaystack"):
                raise CommandError(67, "Values in the index key pattern can't be 0 or a non-numeric type: %s" % json_repr(direction))
        normalized = {"v": 2, "key": key, "name": name}
        for option, value in spec.items():
            if option in ("v", "key", "name", "ns"):
                continue
            if option not in INDEX_OPTIONS:
                raise CommandError(197, "The field '%s' is not valid for an index specification. Specification: %s" % (option, json_repr(spec)),
                                   code_name="InvalidIndexSpecificationOption")
            normalized[option] = value
        if name == ID_INDEX_NAME and list(key) != ["_id"]:
            raise bad_value("The index name '_id_' is reserved for the _id index")
        for existing in self.indexes.values():
            if existing.name == name:
                if _same_index(existing.spec, normalized):
                    return False
                if not values_equal(existing.spec["key"], key):
                    raise CommandError(86, "An existing index has the same name as the requested index. When index names are not specified, they are "
                                       "auto generated and can cause conflicts. Please refer to our documentation. Requested index: %s, existing index: %s"
                                       % (json_repr(normalized), json_repr(existing.spec)))
                raise CommandError(86, "An existing index has the same name as the requested index but different options. Requested index: %s, "
                                   "existing index: %s" % (json_repr(normalized), json_repr(existing.spec)))
            if list(existing.spec["key"].items()) == list(key.items()) and _index_options(existing.spec) == _index_options(normalized):
                if existing.is_id:
                    return False
                raise CommandError(85, "Index already exists with a different name: %s" % existing.name)
        index = Index(normalized)
        if index.unique:
            for record_id, record in self.records.items():
                entries = index.keys_for(record)
                for entry_key, values in entries or ():
                    holder = index.entries.get(entry_key)
                    if holder is not None and holder != record_id:
                        index.entries.clear()
                        error = index.duplicate_error(self.ns, values)
                        error.errmsg = "Index build failed: %s: Collection %s ( %s ) :: caused by :: %s" % (
                            uuid.UUID(bytes=bytes(self.uuid)), self.ns, uuid.UUID(bytes=bytes(self.uuid)), error.errmsg)
                        raise error
                    index.entries[entry_key] = record_id
            for record_id, record in self.records.items():
                entries = index.keys_for(record)
                if entries is not None:
                    record.keys[index.name] = [k for k, _v in entries]
        self.indexes[name] = index
        return True

    def drop_index(self, name):
        """Drop an index by name."""
        if name == ID_INDEX_NAME:
            raise CommandError(72, "cannot drop _id index")
        index = self.indexes.pop(name, None)
        if index is None:
            raise CommandError(27, "index not found with name [%s]" % name)
        for record in self.records.values():
            record.keys.pop(name, None)

    def index_name_for_key(self, key):
        """Name of the index whose key pattern equals ``key``."""
        matches = [i.name for i in self.indexes.values() if list(i.spec["key"].items()) == list(key.items())]
        if not matches:
            raise CommandError(27, "can't find index with key: %s" % json_repr(key))
        return matches[0]

    def index_specs(self):
        """Index definitions as listIndexes reports them."""
        return [copy.deepcopy(i.spec) for i in self.indexes.values()]


def _index_options(spec):
    return {k: v for k, v in spec.items() if k not in ("v", "key", "name", "background")}


def _same_index(left, right):
    return list(left["key"].items()) == list(right["key"].items()) and values_equal(_index_options(left), _index_options(right))


class Database:
    """A named set of collections and views (creation order is kept)."""

    def __init__(self, store, name):
        self.store = store
        self.name = name
        self.collections = {}

    def data_size(self):
        """Total raw BSON bytes of the documents of this database."""
        return sum(c.data_size for c in self.collections.values())


class Store:
    """All databases of the server."""

    def __init__(self):
        self.databases = {}

    def database(self, name, create=False):
        """Get a database (creating the object on demand when ``create``)."""
        db = self.databases.get(name)
        if db is None and create:
            validate_db_name(name)
            db = self.databases[name] = Database(self, name)
        return db

    def collection(self, db_name, name):
        """An existing collection or view, or None."""
        db = self.databases.get(db_name)
        return db.collections.get(name) if db is not None else None

    def collection_for_write(self, db_name, name):
        """An existing collection, or a new one created implicitly (as inserts do)."""
        existing = self.collection(db_name, name)
        if existing is not None:
            if existing.is_view:
                raise CommandError(166, "Namespace %s.%s is a view, not a collection" % (db_name, name))
            return existing, False
        return self.create_collection(db_name, name, {}), True

    def create_collection(self, db_name, name, options):
        """Create a collection (raises NamespaceExists if it exists)."""
        validate_collection_name(db_name, name)
        db = self.database(db_name, create=True)
        if name in db.collections:
            raise CommandError(48, "Collection %s.%s already exists." % (db_name, name))
        collection = db.collections[name] = Collection(db, name, options)
        return collection

    def create_view(self, db_name, name, view_on, pipeline, collation=None):
        """Create a view and mirror its definition into ``system.views``."""
        validate_collection_name(db_name, name)
        if not isinstance(view_on, str) or not view_on:
            raise CommandError(73, "invalid name for 'viewOn': %s" % view_on)
        if not isinstance(pipeline, list):
            raise bad_value("'pipeline' must be an array")
        db = self.database(db_name, create=True)
        if name in db.collections:
            raise CommandError(48, "Collection %s.%s already exists." % (db_name, name))
        options = {"viewOn": view_on, "pipeline": pipeline}
        if collation is not None:
            options["collation"] = collation
        view = Collection(db, name, options, kind="view")
        db.collections[name] = view
        views, _created = self.collection_for_write(db_name, "system.views")
        definition = {"_id": view.ns, "viewOn": view_on, "pipeline": pipeline}
        if collation is not None:
            definition["collation"] = collation
        views.insert(Doc(doc=definition).raw)
        return view

    def drop_collection(self, db_name, name):
        """Drop a collection or view; returns the dropped object or None."""
        db = self.databases.get(db_name)
        if db is None or name not in db.collections:
            return None
        dropped = db.collections.pop(name)
        if dropped.is_view:
            views = db.collections.get("system.views")
            if views is not None:
                for record_id, _record in views.record_items({"_id": dropped.ns}):
                    views.delete(record_id)
        if not db.collections:
            del self.databases[db_name]
        return dropped

    def drop_database(self, db_name):
        """Drop a database; returns True if it existed."""
        return self.databases.pop(db_name, None) is not None

    def rename_collection(self, source_ns, target_ns, drop_target=False):
        """Move a collection to another namespace (renameCollection)."""
        source_db, _sep, source_name = source_ns.partition(".")
        target_db, _sep2, target_name = target_ns.partition(".")
        source = self.collection(source_db, source_name)
        if source is None:
            raise CommandError(26, "Source collection %s does not exist" % source_ns)
        if source.is_view:
            raise CommandError(166, "cannot rename view: %s" % source_ns)
        validate_collection_name(target_db, target_name)
        if self.collection(target_db, target_name) is not None:
            if not drop_target:
                raise CommandError(48, "target namespace exists")
            self.drop_collection(target_db, target_name)
        self.drop_collection(source_db, source_name)
        db = self.database(target_db, create=True)
        source.database = db
        source.name = target_name
        db.collections[target_name] = source

    def resolve_view(self, view):
        """Return ``(base_collection_or_None, full_pipeline)`` for a view chain."""
        pipeline = []
        current = view
        for _depth in range(MAX_VIEW_DEPTH):
            pipeline = list(current.options.get("pipeline") or []) + pipeline
            target = self.collection(current.database.name, current.options["viewOn"])
            if target is None or not target.is_view:
                return target, pipeline
            current = target
        raise CommandError(2, "View depth too deep or view cycle detected; maximum depth is %d" % MAX_VIEW_DEPTH)

    def view_docs(self, view, extra_pipeline=()):
        """Documents of a view after its pipeline and ``extra_pipeline``."""
        base, pipeline = self.resolve_view(view)
        docs = [r.doc for r in base.records.values()] if base is not None else []
        return run_pipeline(docs, pipeline + list(extra_pipeline))
