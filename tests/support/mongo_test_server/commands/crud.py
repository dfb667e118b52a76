"""Read and write commands: find, getMore, count, distinct, aggregate, insert, update, delete, findAndModify."""


from bson.objectid import ObjectId

from .. import MAX_WRITE_BATCH_SIZE
from ..aggregation import run_pipeline, validate_pipeline
from ..bsonutil import MISSING, Doc, first_element, hash_key, id_element, is_number, number_value, utc_now, with_id
from ..errors import COMMAND_NOT_SUPPORTED, FAILED_TO_PARSE, CommandError, bad_value, unsupported
from ..query import compile_filter, compile_projection, resolve_path, sort_docs
from ..update import apply_update, compile_update, is_operator_update, upsert_seed, validate_replacement
from .base import command, cursor_batch_size


def _query_docs(ctx, collection, query, sort=None, skip=0, limit=0, projection=None):
    """Run a find-style query on a collection or view; returns a list of Doc."""
    if collection is None:
        compile_filter(query)
        compile_projection(projection)
        return []
    if collection.is_view:
        pipeline = []
        if query:
            pipeline.append({"$match": query})
        if sort:
            pipeline.append({"$sort": sort})
        if skip:
            pipeline.append({"$skip": skip})
        if limit:
            pipeline.append({"$limit": limit})
        docs = ctx.store.view_docs(collection, pipeline)
    else:
        docs = [r.doc for r in collection.find_records(query, 0 if sort or not limit else skip + limit)]
        if sort:
            docs = sort_docs(docs, sort)
        if skip:
            docs = docs[skip:]
        if limit:
            docs = docs[:limit]
    compiled = compile_projection(projection)
    if compiled is not None:
        docs = [Doc(doc=compiled.apply(d.doc)) for d in docs]
    return docs


_FIND_UNSUPPORTED = ("min", "max", "returnKey", "showRecordId", "tailable", "awaitData", "oplogReplay")


@command("find")
def cmd_find(ctx):
    """find with filter, projection, sort, skip, limit, batchSize and singleBatch."""
    for option in _FIND_UNSUPPORTED:
        if ctx.cmd.get(option):
            raise CommandError(COMMAND_NOT_SUPPORTED, "find option '%s' is not supported by the nodeops MongoDB test server" % option)
    ctx.state.opcounters["query"] += 1
    collection = ctx.store.collection(ctx.db, ctx.target())
    query = ctx.option("filter", {})
    if not isinstance(query, dict):
        raise CommandError(14, "BSON field 'FindCommandRequest.filter' is the wrong type, expected type 'object'", code_name="TypeMismatch")
    docs = _query_docs(ctx, collection, query, ctx.option("sort"), ctx.int_option("skip", 0), ctx.int_option("limit", 0), ctx.option("projection"))
    batch_size = ctx.int_option("batchSize")
    return {"cursor": ctx.state.cursors.open(ctx.ns(), docs, batch_size, single_batch=bool(ctx.cmd.get("singleBatch")))}


@command("getMore")
def cmd_get_more(ctx):
    """Next batch of a cursor (the cursor id is 0 once it is exhausted)."""
    ctx.state.opcounters["getmore"] += 1
    cursor_id = ctx.cmd["getMore"]
    if not isinstance(cursor_id, int) or isinstance(cursor_id, bool):
        raise CommandError(14, "Field 'getMore' must be of type long", code_name="TypeMismatch")
    collection = ctx.cmd.get("collection")
    if not isinstance(collection, str):
        raise CommandError(14, "Field 'collection' must be of type string", code_name="TypeMismatch")
    batch_size = ctx.int_option("batchSize")
    return {"cursor": ctx.state.cursors.get_more(int(cursor_id), "%s.%s" % (ctx.db, collection), batch_size or None)}


@command("killCursors")
def cmd_kill_cursors(ctx):
    """Kill cursors by id."""
    ids = ctx.cmd.get("cursors")
    if not isinstance(ids, list):
        raise bad_value("killCursors needs a 'cursors' array")
    killed, not_found = ctx.state.cursors.kill(ctx.ns(), [int(i) for i in ids])
    return {"cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [], "cursorsUnknown": []}


@command("count")
def cmd_count(ctx):
    """Count documents matching ``query`` (with skip/limit)."""
    ctx.state.opcounters["query"] += 1
    collection = ctx.store.collection(ctx.db, ctx.target())
    query = ctx.option("query", {})
    limit = ctx.cmd.get("limit")
    limit = abs(int(number_value(limit))) if is_number(limit) else 0
    skip = ctx.int_option("skip", 0)
    if collection is not None and not collection.is_view and not query:
        total = len(collection.records)
    else:
        total = len(_query_docs(ctx, collection, query))
    total = max(0, total - skip)
    if limit:
        total = min(total, limit)
    return {"n": total}


@command("distinct")
def cmd_distinct(ctx):
    """Distinct values of a field (array values are unwound)."""
    ctx.state.opcounters["query"] += 1
    key = ctx.cmd.get("key")
    if not isinstance(key, str):
        raise CommandError(14, "BSON field 'distinct.key' is missing or not a string", code_name="TypeMismatch")
    collection = ctx.store.collection(ctx.db, ctx.target())
    docs = _query_docs(ctx, collection, ctx.option("query", {}))
    values = {}
    parts = key.split(".")
    for d in docs:
        for value in resolve_path(d.doc, parts):
            for item in (value if isinstance(value, list) else [value]):
                if item is not MISSING:
                    values.setdefault(hash_key(item), item)
    return {"values": list(values.values())}


def _coll_stats_doc(ctx, collection, spec):
    doc = {"ns": ctx.ns(), "host": ctx.state.address, "localTime": utc_now()}
    records = len(collection.records) if collection is not None and not collection.is_view else 0
    size = collection.data_size if collection is not None and not collection.is_view else 0
    if not isinstance(spec, dict):
        raise bad_value("$collStats must take a nested object")
    if "count" in spec:
        doc["count"] = records
    if "storageStats" in spec:
        indexes = len(collection.indexes) if collection is not None else 0
        doc["storageStats"] = {
            "size": size, "count": records, "avgObjSize": size // records if records else 0, "storageSize": size,
            "nindexes": indexes, "totalIndexSize": 4096 * indexes, "capped": bool(collection is not None and collection.options.get("capped")),
        }
    return Doc(doc=doc)


@command("aggregate")
def cmd_aggregate(ctx):
    """Aggregation on a collection or view (see :mod:`.aggregation` for stages)."""
    ctx.state.opcounters["query"] += 1
    pipeline = ctx.cmd.get("pipeline")
    if not isinstance(pipeline, list):
        raise CommandError(14, "'pipeline' option must be specified as an array", code_name="TypeMismatch")
    if ctx.cmd.get("explain"):
        raise CommandError(COMMAND_NOT_SUPPORTED, "explain is not supported by the nodeops MongoDB test server")
    if "cursor" not in ctx.cmd:
        raise CommandError(9, "The 'cursor' option is required, except for aggregate with the explain argument")
    target = ctx.cmd["aggregate"]
    if not isinstance(target, str):
        raise CommandError(COMMAND_NOT_SUPPORTED, "database-level aggregation is not supported by the nodeops MongoDB test server")
    collection = ctx.store.collection(ctx.db, target)
    if pipeline and isinstance(pipeline[0], dict) and "$collStats" in pipeline[0]:
        docs = run_pipeline([_coll_stats_doc(ctx, collection, pipeline[0]["$collStats"])], pipeline[1:])
    elif collection is None:
        docs = run_pipeline([], pipeline)
    elif collection.is_view:
        validate_pipeline(pipeline)
        docs = ctx.store.view_docs(collection, pipeline)
    else:
        docs = run_pipeline([r.doc for r in collection.records.values()], pipeline)
    return {"cursor": ctx.state.cursors.open(ctx.ns(target), docs, cursor_batch_size(ctx))}


# ---------------------------------------------------------------------------
# Writes

def _write_statements(ctx, field):
    raw = ctx.request.raw_documents(field)
    if not raw:
        raise CommandError(16, "Write batch sizes must be between 1 and %d. Got 0 operations." % MAX_WRITE_BATCH_SIZE)
    if len(raw) > MAX_WRITE_BATCH_SIZE:
        raise CommandError(16, "Write batch sizes must be between 1 and %d. Got %d operations." % (MAX_WRITE_BATCH_SIZE, len(raw)))
    return raw


def _write_reply(n, errors, **extra):
    reply = {"n": n}
    reply.update(extra)
    if errors:
        reply["writeErrors"] = errors
    return reply


@command("insert")
def cmd_insert(ctx):
    """Insert documents (ordered or unordered), reporting writeErrors like mongod."""
    docs = _write_statements(ctx, "documents")
    ctx.state.opcounters["insert"] += len(docs)
    collection, _created = ctx.store.collection_for_write(ctx.db, ctx.target())
    bypass = bool(ctx.cmd.get("bypassDocumentValidation"))
    ordered = ctx.cmd.get("ordered", True) is not False
    inserted = 0
    errors = []
    for index, doc in enumerate(docs):
        try:
            collection.insert(doc.raw, bypass)
            inserted += 1
        except CommandError as exc:
            errors.append(exc.to_write_error(index))
            if ordered:
                break
    return _write_reply(inserted, errors)


def _update_one(ctx, statement, raw_statement, bypass):
    """Apply one update statement; returns ``(matched, modified, upserted_id)``."""
    query = statement.get("q") or {}
    update = statement.get("u")
    multi = bool(statement.get("multi"))
    if statement.get("arrayFilters"):
        raise unsupported("arrayFilters")
    if isinstance(update, list):
        raise unsupported("pipeline-style updates")
    if not isinstance(update, dict):
        raise CommandError(FAILED_TO_PARSE, "Update argument must be either an object or an array")
    operators = None
    replacement = None
    if is_operator_update(update):
        operators = compile_update(update)
    else:
        validate_replacement(update)
        if multi:
            raise CommandError(FAILED_TO_PARSE, "multi update is not supported for replacement-style update")
        replacement = raw_statement["u"].raw
    compile_filter(query)
    collection = ctx.store.collection(ctx.db, ctx.target())
    if collection is not None and collection.is_view:
        raise CommandError(166, "Namespace %s is a view, not a collection" % ctx.ns())
    matches = collection.record_items(query, 0 if multi else 1) if collection is not None else []
    modified = 0
    for record_id, record in matches:
        if replacement is not None:
            new_doc = with_id(replacement, first_element(record.doc.raw))
        else:
            new_doc = apply_update(record.doc.copy(), operators)
        if collection.replace(record_id, new_doc, bypass):
            modified += 1
    if matches or not statement.get("upsert"):
        return len(matches), modified, None
    collection, _created = ctx.store.collection_for_write(ctx.db, ctx.target())
    seed = upsert_seed(query)
    if replacement is not None:
        raw = replacement if "_id" not in seed else with_id(replacement, id_element(seed["_id"]))
    else:
        doc = apply_update(seed, operators, inserting=True)
        if "_id" not in doc:
            doc = dict([("_id", ObjectId())] + list(doc.items()))
        raw = Doc(doc=doc).raw
    return 1, 0, collection.insert(raw, bypass)


@command("update")
def cmd_update(ctx):
    """update statements (operators or replacement, multi, upsert)."""
    raw_statements = _write_statements(ctx, "updates")
    statements = ctx.request.documents("updates")
    ctx.state.opcounters["update"] += len(statements)
    bypass = bool(ctx.cmd.get("bypassDocumentValidation"))
    ordered = ctx.cmd.get("ordered", True) is not False
    matched = modified = 0
    upserted = []
    errors = []
    for index, (statement, raw_statement) in enumerate(zip(statements, raw_statements)):
        try:
            n, n_modified, upserted_id = _update_one(ctx, statement, raw_statement, bypass)
        except CommandError as exc:
            errors.append(exc.to_write_error(index))
            if ordered:
                break
            continue
        matched += n
        modified += n_modified
        if upserted_id is not None:
            upserted.append({"index": index, "_id": upserted_id})
    extra = {"nModified": modified}
    if upserted:
        extra["upserted"] = upserted
    return _write_reply(matched, errors, **extra)


@command("delete")
def cmd_delete(ctx):
    """delete statements (``limit`` 0 = all matches, 1 = first match)."""
    _write_statements(ctx, "deletes")
    statements = ctx.request.documents("deletes")
    ctx.state.opcounters["delete"] += len(statements)
    ordered = ctx.cmd.get("ordered", True) is not False
    deleted = 0
    errors = []
    for index, statement in enumerate(statements):
        try:
            query = statement.get("q")
            if not isinstance(query, dict):
                raise CommandError(FAILED_TO_PARSE, "BSON field 'delete.deletes.q' is missing but a required field")
            limit = statement.get("limit", 0)
            if limit not in (0, 1):
                raise CommandError(FAILED_TO_PARSE, "The limit field in delete objects must be 0 or 1. Got %s" % limit)
            compile_filter(query)
            collection = ctx.store.collection(ctx.db, ctx.target())
            if collection is None:
                continue
            if collection.is_view:
                raise CommandError(166, "Namespace %s is a view, not a collection" % ctx.ns())
            matches = collection.record_items(query, limit)
            for record_id, _record in matches:
                collection.delete(record_id)
            deleted += len(matches)
        except CommandError as exc:
            errors.append(exc.to_write_error(index))
            if ordered:
                break
    return _write_reply(deleted, errors)


@command("findAndModify", "findandmodify")
def cmd_find_and_modify(ctx):
    """Atomically update/replace/remove one document and return it (before or after)."""
    query = ctx.option("query", {})
    remove = bool(ctx.cmd.get("remove"))
    update = ctx.cmd.get("update")
    if remove and update is not None:
        raise CommandError(FAILED_TO_PARSE, "Cannot specify both an update and remove=true")
    if not remove and update is None:
        raise CommandError(FAILED_TO_PARSE, "Either an update or remove=true must be specified")
    if remove and ctx.cmd.get("upsert"):
        raise CommandError(FAILED_TO_PARSE, "Cannot specify both upsert=true and remove=true")
    projection = compile_projection(ctx.option("fields"))
    compile_filter(query)
    collection = ctx.store.collection(ctx.db, ctx.target())
    if collection is not None and collection.is_view:
        raise CommandError(166, "Namespace %s is a view, not a collection" % ctx.ns())
    items = collection.record_items(query) if collection is not None else []
    sort = ctx.option("sort")
    if sort and items:
        by_doc = {id(record.doc): (record_id, record) for record_id, record in items}
        items = [by_doc[id(d)] for d in sort_docs([r.doc for _rid, r in items], sort)]

    def render(doc):
        if doc is None:
            return None
        if projection is None:
            return doc.as_raw_document()
        return projection.apply(doc.doc)

    if remove:
        if not items:
            return {"lastErrorObject": {"n": 0}, "value": None}
        record_id, record = items[0]
        collection.delete(record_id)
        ctx.state.opcounters["delete"] += 1
        return {"lastErrorObject": {"n": 1}, "value": render(record.doc)}
    ctx.state.opcounters["update"] += 1
    raw_update = ctx.request.raw_command.get("update")
    statement = {"q": query, "u": update, "upsert": bool(ctx.cmd.get("upsert")), "multi": False}
    if items:
        record_id, record = items[0]
        before = record.doc
        statement["q"] = {"_id": record.id_value}
        _update_one(ctx, statement, {"u": raw_update}, bool(ctx.cmd.get("bypassDocumentValidation")))
        after = collection.records[record_id].doc
        return {"lastErrorObject": {"n": 1, "updatedExisting": True}, "value": render(after if ctx.cmd.get("new") else before)}
    if not statement["upsert"]:
        return {"lastErrorObject": {"n": 0, "updatedExisting": False}, "value": None}
    _n, _modified, upserted_id = _update_one(ctx, statement, {"u": raw_update}, bool(ctx.cmd.get("bypassDocumentValidation")))
    collection = ctx.store.collection(ctx.db, ctx.target())
    value = None
    if ctx.cmd.get("new"):
        value = render(collection.find_records({"_id": upserted_id})[0].doc)
    return {"lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": upserted_id}, "value": value}
