"""Catalog commands: databases, collections, views, indexes and statistics."""


from bson.int64 import Int64

from ..aggregation import validate_pipeline
from ..bsonutil import Doc, is_number
from ..errors import COMMAND_NOT_SUPPORTED, CommandError, bad_value
from ..query import compile_filter
from ..store import COLLECTION_OPTIONS
from .base import GENERIC_FIELDS, command, cursor_batch_size, require_collection


@command("listDatabases")
def cmd_list_databases(ctx):
    """Databases holding at least one collection, sorted by name."""
    entries = []
    total = 0
    for name in sorted(ctx.store.databases):
        db = ctx.store.databases[name]
        size = db.data_size() + 4096 * sum(1 + len(c.indexes) for c in db.collections.values())
        total += size
        entries.append({"name": name, "sizeOnDisk": Int64(size), "empty": False})
    query = ctx.cmd.get("filter")
    if query:
        predicate = compile_filter(query)
        entries = [e for e in entries if predicate(e)]
    if ctx.cmd.get("nameOnly"):
        return {"databases": [{"name": e["name"]} for e in entries]}
    return {"databases": entries, "totalSize": Int64(total), "totalSizeMb": Int64(total // (1024 * 1024))}


def _collection_info(collection):
    if collection.is_view:
        return {"name": collection.name, "type": "view", "options": dict(collection.options), "info": {"readOnly": True}}
    return {
        "name": collection.name,
        "type": "collection",
        "options": dict(collection.options),
        "info": {"readOnly": False, "uuid": collection.uuid},
        "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    }


@command("listCollections")
def cmd_list_collections(ctx):
    """Collections and views with options, info (readOnly, uuid) and idIndex."""
    db = ctx.store.database(ctx.db)
    entries = [_collection_info(c) for c in db.collections.values()] if db is not None else []
    name_only = bool(ctx.cmd.get("nameOnly"))
    if name_only:
        entries = [{"name": e["name"], "type": e["type"]} for e in entries]
    query = ctx.cmd.get("filter")
    if query:
        predicate = compile_filter(query)
        entries = [e for e in entries if predicate(e)]
    ns = "%s.$cmd.listCollections" % ctx.db
    return {"cursor": ctx.state.cursors.open(ns, [Doc(doc=e) for e in entries], cursor_batch_size(ctx))}


@command("listIndexes")
def cmd_list_indexes(ctx):
    """Index definitions of a collection."""
    collection = require_collection(ctx)
    docs = [Doc(doc=spec) for spec in collection.index_specs()]
    return {"cursor": ctx.state.cursors.open(ctx.ns(), docs, cursor_batch_size(ctx))}


_CREATE_UNSUPPORTED = ("timeseries", "clusteredIndex", "encryptedFields", "expireAfterSeconds")


@command("create")
def cmd_create(ctx):
    """Create a collection (capped, validator, collation ...) or a view (viewOn + pipeline)."""
    name = ctx.target()
    options = {}
    for key, value in ctx.cmd.items():
        if key == "create" or key in GENERIC_FIELDS:
            continue
        if key in _CREATE_UNSUPPORTED:
            raise CommandError(COMMAND_NOT_SUPPORTED, "create option '%s' is not supported by the nodeops MongoDB test server" % key)
        if key in ("idIndex", "temp"):
            continue
        if key not in COLLECTION_OPTIONS:
            raise CommandError(40415, "BSON field 'create.%s' is an unknown field." % key)
        options[key] = value
    if "viewOn" in options:
        pipeline = options.get("pipeline", [])
        validate_pipeline(pipeline)
        for key in options:
            if key not in ("viewOn", "pipeline", "collation"):
                raise CommandError(72, "option '%s' is not supported when creating a view" % key)
        existing = ctx.store.collection(ctx.db, name)
        if existing is not None and existing.is_view and existing.options.get("viewOn") == options["viewOn"] and existing.options.get("pipeline") == pipeline:
            return {}
        ctx.store.create_view(ctx.db, name, options["viewOn"], pipeline, options.get("collation"))
        return {}
    if "pipeline" in options:
        raise CommandError(9, "'pipeline' requires 'viewOn' to also be specified")
    if options.get("capped"):
        if not is_number(options.get("size")):
            raise CommandError(72, "the 'size' field is required when 'capped' is true")
    if "validator" in options and not isinstance(options["validator"], dict):
        raise CommandError(14, "'validator' option must be an object", code_name="TypeMismatch")
    if options.get("validationLevel", "strict") not in ("off", "strict", "moderate"):
        raise bad_value("Enumeration value '%s' for field 'validationLevel' is not a valid value." % options["validationLevel"])
    if options.get("validationAction", "error") not in ("error", "warn"):
        raise bad_value("Enumeration value '%s' for field 'validationAction' is not a valid value." % options["validationAction"])
    existing = ctx.store.collection(ctx.db, name)
    if existing is not None and not existing.is_view and existing.options == options:
        return {}
    ctx.store.create_collection(ctx.db, name, options)
    return {}


@command("collMod")
def cmd_coll_mod(ctx):
    """Change validator / validation settings, a view definition or an index's TTL/hidden flag."""
    collection = require_collection(ctx, allow_view=True)
    reply = {}
    for key, value in ctx.cmd.items():
        if key == "collMod" or key in GENERIC_FIELDS:
            continue
        if collection.is_view:
            if key not in ("viewOn", "pipeline"):
                raise CommandError(72, "option not supported on a view: %s" % key)
            if key == "pipeline":
                validate_pipeline(value)
            collection.set_options(**{key: value})
        elif key in ("validator", "validationLevel", "validationAction"):
            collection.set_options(**{key: value})
        elif key == "index":
            if "name" in value:
                index = collection.indexes.get(value["name"])
            else:
                index = collection.indexes.get(collection.index_name_for_key(value.get("keyPattern") or {}))
            if index is None:
                raise CommandError(27, "cannot find index %s for ns %s" % (value, collection.ns))
            for option in ("expireAfterSeconds", "hidden"):
                if option in value:
                    reply[option + "_old"] = index.spec.get(option)
                    index.spec[option] = value[option]
                    reply[option + "_new"] = value[option]
        else:
            raise CommandError(40415, "BSON field 'collMod.%s' is an unknown field." % key)
    return reply


@command("createIndexes")
def cmd_create_indexes(ctx):
    """Create indexes (unique ones are checked against existing documents)."""
    specs = ctx.cmd.get("indexes")
    if not isinstance(specs, list) or not specs:
        raise bad_value("Must specify at least one index to create")
    collection, created = ctx.store.collection_for_write(ctx.db, ctx.target())
    before = len(collection.indexes)
    built = 0
    for spec in specs:
        if not isinstance(spec, dict):
            raise CommandError(14, "index specification must be an object", code_name="TypeMismatch")
        if collection.create_index(spec):
            built += 1
    reply = {"numIndexesBefore": before, "numIndexesAfter": len(collection.indexes), "createdCollectionAutomatically": created}
    if not built:
        reply["note"] = "all indexes already exist"
    return reply


@command("dropIndexes", "deleteIndexes")
def cmd_drop_indexes(ctx):
    """Drop indexes by name, key pattern, list of names or ``"*"``."""
    collection = require_collection(ctx)
    before = len(collection.indexes)
    spec = ctx.cmd.get("index")
    if spec == "*":
        names = [n for n in collection.indexes if n != "_id_"]
    elif isinstance(spec, str):
        names = [spec]
    elif isinstance(spec, list):
        names = spec
    elif isinstance(spec, dict):
        names = [collection.index_name_for_key(spec)]
    else:
        raise bad_value("invalid index specification for dropIndexes")
    for name in names:
        if name not in collection.indexes and name != "_id_":
            raise CommandError(27, "index not found with name [%s]" % name)
    for name in names:
        collection.drop_index(name)
    return {"nIndexesWas": before}


@command("drop")
def cmd_drop(ctx):
    """Drop a collection or view (a missing one is not an error, as in 7.0)."""
    name = ctx.target()
    dropped = ctx.store.drop_collection(ctx.db, name)
    ctx.state.cursors.drop_namespace(ctx.db, name)
    if dropped is None:
        return {}
    if dropped.is_view:
        return {"ns": ctx.ns()}
    return {"nIndexesWas": len(dropped.indexes), "ns": ctx.ns()}


@command("dropDatabase")
def cmd_drop_database(ctx):
    """Drop the database the command runs on."""
    ctx.store.drop_database(ctx.db)
    ctx.state.cursors.drop_namespace(ctx.db)
    return {}


@command("renameCollection")
def cmd_rename_collection(ctx):
    """Rename a collection (admin command, full namespaces)."""
    if ctx.db != "admin":
        raise CommandError(13, "renameCollection may only be run against the admin database.")
    source = ctx.target()
    target = ctx.cmd.get("to")
    if not isinstance(target, str) or "." not in target or "." not in source:
        raise CommandError(73, "Invalid target namespace: %s" % target)
    ctx.store.rename_collection(source, target, bool(ctx.cmd.get("dropTarget")))
    ctx.state.cursors.drop_namespace(*source.split(".", 1))
    return {}


@command("dbStats")
def cmd_db_stats(ctx):
    """Sizes and counts of one database."""
    db = ctx.store.database(ctx.db)
    collections = [c for c in db.collections.values() if not c.is_view] if db is not None else []
    views = len(db.collections) - len(collections) if db is not None else 0
    objects = sum(len(c.records) for c in collections)
    data_size = sum(c.data_size for c in collections)
    indexes = sum(len(c.indexes) for c in collections)
    return {
        "db": ctx.db, "collections": len(collections), "views": views, "objects": objects,
        "avgObjSize": float(data_size) / objects if objects else 0.0, "dataSize": float(data_size),
        "storageSize": float(data_size), "indexes": indexes, "indexSize": float(4096 * indexes),
        "totalSize": float(data_size + 4096 * indexes), "scaleFactor": 1.0, "fsUsedSize": 0.0, "fsTotalSize": 0.0,
    }


@command("collStats")
def cmd_coll_stats(ctx):
    """Sizes and counts of one collection."""
    collection = require_collection(ctx)
    count = len(collection.records)
    reply = {
        "ns": collection.ns, "size": collection.data_size, "count": count,
        "avgObjSize": collection.data_size // count if count else 0, "storageSize": collection.data_size,
        "capped": bool(collection.options.get("capped")), "nindexes": len(collection.indexes),
        "totalIndexSize": 4096 * len(collection.indexes), "indexSizes": {name: 4096 for name in collection.indexes},
    }
    if reply["capped"]:
        reply["max"] = collection.options.get("max", 0)
        reply["maxSize"] = collection.options.get("size")
    return reply
