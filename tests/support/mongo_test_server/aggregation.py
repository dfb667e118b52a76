"""Aggregation pipelines over lists of :class:`~.bsonutil.Doc`.

Implemented natively (raw documents pass through filtering stages untouched):
``$match $sort $skip $limit $count $project/$unset`` (inclusion/exclusion)
and ``$group`` with field-path/literal ``_id`` and the accumulators ``$sum
$avg $min $max $first $last $push $addToSet $count``. Other computing stages
(``$addFields/$set $unwind $replaceRoot $replaceWith $sortByCount $bucket
$sample $facet`` and ``$project``/``$group`` with expressions) are delegated
to mongomock when it is installed. Stages that read or write other
collections (``$lookup $out $merge $unionWith`` ...) are refused with
CommandNotSupported (115).
"""

import decimal

from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64

from .bsonutil import MISSING, Doc, compare, hash_key, is_number, number_value
from .errors import COMMAND_NOT_SUPPORTED, CommandError, bad_value
from .query import compile_filter, compile_projection, sort_docs, split_path

_MONGOMOCK_STAGES = {
    "$addFields", "$set", "$unwind", "$replaceRoot", "$replaceWith", "$sortByCount", "$bucket", "$sample", "$facet", "$project", "$group",
}
_REFUSED_STAGES = {
    "$lookup", "$graphLookup", "$out", "$merge", "$unionWith", "$geoNear", "$search", "$searchMeta", "$changeStream",
    "$currentOp", "$listSessions", "$listLocalSessions", "$indexStats", "$planCacheStats", "$bucketAuto", "$redact",
    "$densify", "$fill", "$setWindowFields", "$documents", "$changeStreamSplitLargeEvent", "$listSearchIndexes",
    "$collStats",
}
_ACCUMULATORS = {"$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet", "$count"}


class _NeedsFallback(Exception):
    """Raised when a stage uses expressions the native implementation lacks."""


def stage_name(stage):
    """Validate a pipeline stage object and return its single key."""
    if not isinstance(stage, dict) or len(stage) != 1:
        raise CommandError(40323, "A pipeline stage specification object must contain exactly one field.")
    return next(iter(stage))


def validate_pipeline(pipeline):
    """Check the pipeline shape and stage names before running it."""
    if not isinstance(pipeline, list):
        raise CommandError(14, "'pipeline' option must be specified as an array")
    for stage in pipeline:
        name = stage_name(stage)
        if name in _REFUSED_STAGES:
            raise CommandError(COMMAND_NOT_SUPPORTED, "%s is not supported by the nodeops MongoDB test server" % name)
        if name not in _NATIVE_STAGES and name not in _MONGOMOCK_STAGES:
            raise CommandError(40324, "Unrecognized pipeline stage name: '%s'" % name)


def run_pipeline(docs, pipeline):
    """Run ``pipeline`` over ``docs`` (a list of Doc) and return the resulting Docs."""
    validate_pipeline(pipeline)
    for stage in pipeline:
        name = stage_name(stage)
        spec = stage[name]
        handler = _NATIVE_STAGES.get(name)
        if handler is not None:
            try:
                docs = handler(docs, spec)
                continue
            except _NeedsFallback:
                pass
        docs = _mongomock_stage(docs, name, spec)
    return docs


def _match(docs, spec):
    predicate = compile_filter(spec)
    return [d for d in docs if predicate(d.doc)]


def _non_negative_int(name, value, positive=False):
    if not is_number(value) or number_value(value) != int(number_value(value)):
        raise bad_value("invalid argument to %s stage: expected a number" % name)
    value = int(number_value(value))
    if value < 0 or (positive and value == 0):
        raise bad_value("invalid argument to %s stage: %s" % (name, "the limit must be positive" if positive else "cannot be negative"))
    return value


def _skip(docs, spec):
    return docs[_non_negative_int("$skip", spec):]


def _limit(docs, spec):
    return docs[:_non_negative_int("$limit", spec, positive=True)]


def _sort(docs, spec):
    if not spec:
        raise bad_value("$sort stage must have at least one sort key")
    return sort_docs(docs, spec)


def _count(docs, spec):
    if not isinstance(spec, str) or not spec or spec.startswith("$") or "." in spec:
        raise bad_value("the count field must be a non-empty string that does not start with $ or contain .")
    if not docs:
        return []
    return [Doc(doc={spec: len(docs)})]


def _project(docs, spec):
    if not isinstance(spec, dict) or not spec:
        raise bad_value("$project specification must be an object with at least one field")
    try:
        projection = compile_projection(spec)
    except CommandError:
        raise _NeedsFallback() from None
    return [Doc(doc=projection.apply(d.doc)) for d in docs]


def _unset(docs, spec):
    fields = [spec] if isinstance(spec, str) else spec
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise bad_value("$unset specification must be a string or an array of strings")
    projection = compile_projection({f: 0 for f in fields})
    return [Doc(doc=projection.apply(d.doc)) for d in docs]


# ---------------------------------------------------------------------------
# $group

def _agg_path(value, parts):
    for index, part in enumerate(parts):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list):
            values = [_agg_path(v, parts[index:]) for v in value if isinstance(v, (dict, list))]
            return [v for v in values if v is not MISSING]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _compile_expression(expr):
    """Compile a field path / literal / object expression, or ask for fallback."""
    if isinstance(expr, str) and expr.startswith("$"):
        if expr.startswith("$$"):
            raise _NeedsFallback()
        parts = split_path(expr[1:])
        return lambda doc: _agg_path(doc, parts)
    if isinstance(expr, dict):
        if len(expr) == 1 and "$literal" in expr:
            value = expr["$literal"]
            return lambda doc: value
        if any(k.startswith("$") for k in expr):
            raise _NeedsFallback()
        compiled = [(k, _compile_expression(v)) for k, v in expr.items()]
        return lambda doc: {k: v for k, v in ((k, f(doc)) for k, f in compiled) if v is not MISSING}
    if isinstance(expr, list):
        raise _NeedsFallback()
    return lambda doc: expr


def _sum(values):
    total = 0
    for value in values:
        if not is_number(value):
            continue
        if isinstance(total, Decimal128) or isinstance(value, Decimal128):
            with decimal.localcontext(create_decimal128_context()) as ctx:
                total = Decimal128(ctx.create_decimal(number_value(total) + number_value(value)))
        elif isinstance(total, float) or isinstance(value, float):
            total = float(total) + float(value)
        else:
            result = int(total) + int(value)
            if not -2 ** 63 <= result < 2 ** 63:
                total = float(result)
            elif isinstance(total, Int64) or isinstance(value, Int64) or not -2 ** 31 <= result < 2 ** 31:
                total = Int64(result)
            else:
                total = result
    return total


def _accumulate(op, values):
    if op in ("$sum", "$count"):
        return _sum(values)
    if op == "$avg":
        numbers = [number_value(v) for v in values if is_number(v)]
        if not numbers:
            return None
        if any(isinstance(n, decimal.Decimal) for n in numbers):
            return Decimal128(sum(decimal.Decimal(n) if not isinstance(n, float) else decimal.Decimal(repr(n)) for n in numbers) / len(numbers))
        return float(sum(numbers)) / len(numbers)
    if op in ("$min", "$max"):
        present = [v for v in values if v is not MISSING and v is not None]
        if not present:
            return None
        best = present[0]
        for value in present[1:]:
            result = compare(value, best)
            if (op == "$min" and result < 0) or (op == "$max" and result > 0):
                best = value
        return best
    if op in ("$first", "$last"):
        if not values:
            return None
        value = values[0] if op == "$first" else values[-1]
        return None if value is MISSING else value
    if op == "$push":
        return [v for v in values if v is not MISSING]
    if op == "$addToSet":
        seen = {}
        for value in values:
            if value is not MISSING:
                seen.setdefault(hash_key(value), value)
        return list(seen.values())
    raise _NeedsFallback()


def _group(docs, spec):
    if not isinstance(spec, dict) or "_id" not in spec:
        raise CommandError(15955, "a group specification must include an _id")
    id_expr = _compile_expression(spec["_id"])
    accumulators = []
    for name, acc in spec.items():
        if name == "_id":
            continue
        if not isinstance(acc, dict) or len(acc) != 1:
            raise CommandError(40238, "The field '%s' must specify one accumulator" % name)
        op, arg = next(iter(acc.items()))
        if op not in _ACCUMULATORS:
            raise _NeedsFallback()
        if op == "$count":
            if arg != {}:
                raise bad_value("$count takes no arguments, i.e. $count:{}")
            arg = 1
        accumulators.append((name, op, _compile_expression(arg)))
    groups = {}
    for d in docs:
        doc = d.doc
        group_id = id_expr(doc)
        if group_id is MISSING:
            group_id = None
        key = hash_key(group_id)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = (group_id, [[] for _acc in accumulators])
        for (_name, _op, expr), bucket in zip(accumulators, entry[1]):
            bucket.append(expr(doc))
    out = []
    for group_id, buckets in groups.values():
        result = {"_id": group_id}
        for (name, op, _expr), bucket in zip(accumulators, buckets):
            result[name] = _accumulate(op, bucket)
        out.append(Doc(doc=result))
    return out


def _mongomock_stage(docs, name, spec):
    """Run one stage with mongomock's aggregation implementation."""
    try:
        import mongomock
        from mongomock.aggregate import process_pipeline
    except ImportError:
        raise CommandError(COMMAND_NOT_SUPPORTED, "%s with expressions needs mongomock, which is not installed" % name) from None
    try:
        result = list(process_pipeline([d.copy() for d in docs], None, [{name: spec}], None))
    except NotImplementedError as exc:
        raise CommandError(COMMAND_NOT_SUPPORTED, "%s: %s" % (name, exc)) from exc
    except mongomock.OperationFailure as exc:
        raise CommandError(exc.code or 2, "%s: %s" % (name, exc)) from exc
    except Exception as exc:  # mongomock can fail in many ways on odd input
        raise CommandError(2, "%s failed: %s" % (name, exc)) from exc
    return [Doc(doc=d) for d in result]


_NATIVE_STAGES = {
    "$match": _match,
    "$sort": _sort,
    "$skip": _skip,
    "$limit": _limit,
    "$count": _count,
    "$project": _project,
    "$unset": _unset,
    "$group": _group,
}
