"""Update operators applied to decoded documents.

Supported: ``$set $unset $inc $mul $min $max $rename $setOnInsert
$currentDate $push ($each $position $slice $sort) $addToSet ($each) $pop
$pull $pullAll $bit``. Like MongoDB 5.0+, fields are processed in
lexicographic order of their paths. Positional operators (``$``, ``$[]``,
``$[id]``) and pipeline-style updates are rejected with BadValue.
"""

import copy
import decimal
import functools
import operator

from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64
from bson.timestamp import Timestamp

from .bsonutil import MISSING, Doc, compare, hash_key, is_number, json_repr, type_name, utc_now, values_equal
from .errors import CommandError, FAILED_TO_PARSE, TYPE_MISMATCH, bad_value, unsupported
from .query import compile_operators, is_operator_dict, compile_filter, sort_docs, split_path

UPDATE_OPERATORS = (
    "$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$setOnInsert",
    "$currentDate", "$push", "$addToSet", "$pop", "$pull", "$pullAll", "$bit",
)


def is_operator_update(spec):
    """True when ``spec`` is an operator update rather than a replacement document."""
    return isinstance(spec, dict) and bool(spec) and next(iter(spec)).startswith("$")


def validate_replacement(spec):
    """Reject replacement documents containing top-level ``$`` fields."""
    for key in spec:
        if key.startswith("$"):
            raise CommandError(FAILED_TO_PARSE, "The dollar ($) prefixed field '%s' in '%s' is not allowed in the context of an update's replacement document."
                               % (key, key))


def _update_path(path):
    parts = split_path(path)
    for part in parts:
        if part == "$" or part.startswith("$["):
            raise unsupported("the positional update operator in '%s'" % path)
    return parts


def compile_update(spec):
    """Validate an operator update and return its statements sorted by path."""
    if isinstance(spec, list):
        raise unsupported("pipeline-style updates")
    if not isinstance(spec, dict):
        raise CommandError(FAILED_TO_PARSE, "Update argument must be either an object or an array")
    statements = []
    for op, fields in spec.items():
        if op not in UPDATE_OPERATORS:
            raise CommandError(FAILED_TO_PARSE, "Unknown modifier: %s. Expected a valid update modifier or pipeline-style update specified as an array" % op)
        if not isinstance(fields, dict):
            raise CommandError(FAILED_TO_PARSE, "Modifiers operate on fields but we found type %s instead. For example: {$mod: {<field>: ...}} not {%s: %s}"
                               % (type_name(fields), op, json_repr(fields)))
        for path, arg in fields.items():
            parts = _update_path(path)
            statements.append((parts, op, arg))
            if op == "$rename":
                if not isinstance(arg, str):
                    raise bad_value("The 'to' field for $rename must be a string: %s: %s" % (path, json_repr(arg)))
                statements.append((_update_path(arg), "$rename-target", path))
    paths = [parts for parts, _op, _arg in statements]
    for i, left in enumerate(paths):
        for right in paths[i + 1:]:
            shorter = min(len(left), len(right))
            if left[:shorter] == right[:shorter]:
                raise CommandError(40, "Updating the path '%s' would create a conflict at '%s'" % (".".join(right), ".".join(left[:shorter])))
    statements = [s for s in statements if s[1] != "$rename-target"]
    statements.sort(key=lambda s: s[0])
    return statements


def get_path(doc, parts):
    """Value at ``parts`` (numeric parts index arrays), or MISSING."""
    value = doc
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _container(doc, parts, create):
    """Return the dict/list holding the last path component (creating parents)."""
    node = doc
    for index, part in enumerate(parts[:-1]):
        if isinstance(node, dict):
            child = node.get(part, MISSING)
            if child is MISSING:
                if not create:
                    return None
                child = node[part] = {}
        elif isinstance(node, list) and part.isdigit():
            position = int(part)
            if position >= len(node):
                if not create:
                    return None
                node.extend([None] * (position + 1 - len(node)))
                node[position] = {}
            child = node[position]
            if child is None and create:
                child = node[position] = {}
        else:
            if not create:
                return None
            raise CommandError(28, "Cannot create field '%s' in element {%s: %s}" % (part, parts[index - 1] if index else "", json_repr(node)))
        if not isinstance(child, (dict, list)):
            if not create:
                return None
            raise CommandError(28, "Cannot create field '%s' in element {%s: %s}" % (parts[index + 1], part, json_repr(child)))
        node = child
    return node


def set_path(doc, parts, value):
    """Set ``value`` at ``parts``, creating intermediate documents."""
    node = _container(doc, parts, True)
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
    elif last.isdigit():
        position = int(last)
        if position >= len(node):
            node.extend([None] * (position + 1 - len(node)))
        node[position] = value
    else:
        raise CommandError(28, "Cannot create field '%s' in element {%s}" % (last, json_repr(node)))


def unset_path(doc, parts):
    """Remove the field at ``parts`` (array elements become null)."""
    node = _container(doc, parts, False)
    last = parts[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = None


def _to_decimal(value):
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    return decimal.Decimal(int(value))


def arithmetic(a, b, func):
    """Apply ``func`` to two BSON numbers with MongoDB's type promotion rules."""
    if isinstance(a, Decimal128) or isinstance(b, Decimal128):
        with decimal.localcontext(create_decimal128_context()) as ctx:
            return Decimal128(ctx.create_decimal(func(_to_decimal(a), _to_decimal(b))))
    if isinstance(a, float) or isinstance(b, float):
        return float(func(float(a), float(b)))
    result = func(int(a), int(b))
    if not -2 ** 63 <= result < 2 ** 63:
        raise bad_value("integer overflow")
    if isinstance(a, Int64) or isinstance(b, Int64) or not -2 ** 31 <= result < 2 ** 31:
        return Int64(result)
    return result


def _zero_like(value):
    if isinstance(value, Decimal128):
        return Decimal128("0")
    if isinstance(value, float):
        return 0.0
    if isinstance(value, Int64):
        return Int64(0)
    return 0


def _field(parts):
    return ".".join(parts)


def _require_array(doc, parts, current):
    if not isinstance(current, list):
        raise bad_value("The field '%s' must be an array but is of type %s in document {_id: %s}"
                        % (_field(parts), type_name(current), json_repr(doc.get("_id"))))


def apply_update(doc, statements, inserting=False):
    """Apply compiled update ``statements`` to the mutable dict ``doc`` in place."""
    for parts, op, arg in statements:
        current = get_path(doc, parts)
        if op == "$set" or (op == "$setOnInsert" and inserting):
            set_path(doc, parts, copy.deepcopy(arg))
        elif op == "$setOnInsert":
            continue
        elif op == "$unset":
            unset_path(doc, parts)
        elif op in ("$inc", "$mul"):
            if not is_number(arg):
                verb = "increment" if op == "$inc" else "multiply"
                raise CommandError(TYPE_MISMATCH, "Cannot %s with non-numeric argument: {%s: %s}" % (verb, _field(parts), json_repr(arg)))
            if current is MISSING:
                set_path(doc, parts, arg if op == "$inc" else _zero_like(arg))
            elif not is_number(current):
                raise CommandError(TYPE_MISMATCH, "Cannot apply %s to a value of non-numeric type. {_id: %s} has the field '%s' of non-numeric type %s"
                                   % (op, json_repr(doc.get("_id")), parts[-1], type_name(current)))
            else:
                set_path(doc, parts, arithmetic(current, arg, operator.add if op == "$inc" else operator.mul))
        elif op in ("$min", "$max"):
            if current is MISSING or (compare(arg, current) < 0 if op == "$min" else compare(arg, current) > 0):
                set_path(doc, parts, copy.deepcopy(arg))
        elif op == "$rename":
            if current is not MISSING:
                unset_path(doc, parts)
                set_path(doc, _update_path(arg), current)
        elif op == "$currentDate":
            set_path(doc, parts, _current_date(arg))
        elif op == "$push":
            _push(doc, parts, current, arg)
        elif op == "$addToSet":
            _add_to_set(doc, parts, current, arg)
        elif op == "$pop":
            if arg not in (1, -1):
                raise bad_value("$pop expects 1 or -1, found: %s" % json_repr(arg))
            if current is not MISSING:
                _require_array(doc, parts, current)
                if current:
                    current.pop(-1 if arg == 1 else 0)
        elif op in ("$pull", "$pullAll"):
            if current is not MISSING:
                _require_array(doc, parts, current)
                keep = _pull_filter(arg, op)
                current[:] = [v for v in current if keep(v)]
        elif op == "$bit":
            _bit(doc, parts, current, arg)
    return doc


def _current_date(arg):
    if arg is True:
        return utc_now()
    if isinstance(arg, dict) and arg.get("$type") in ("date", "timestamp") and len(arg) == 1:
        if arg["$type"] == "date":
            return utc_now()
        return Timestamp(int(utc_now().timestamp()), 1)
    raise bad_value("$currentDate expects true or {$type: 'date'|'timestamp'}")


def _push(doc, parts, current, arg):
    if current is MISSING:
        current = []
        set_path(doc, parts, current)
    _require_array(doc, parts, current)
    if isinstance(arg, dict) and "$each" in arg:
        for key in arg:
            if key not in ("$each", "$position", "$slice", "$sort"):
                raise bad_value("Unrecognized clause in $push: %s" % key)
        items = arg["$each"]
        if not isinstance(items, list):
            raise bad_value("The argument to $each in $push must be an array")
        items = copy.deepcopy(items)
        position = arg.get("$position")
        if position is None:
            current.extend(items)
        else:
            position = int(position)
            if position < 0:
                position = max(0, len(current) + position)
            current[position:position] = items
        if "$sort" in arg:
            _push_sort(current, arg["$sort"])
        if "$slice" in arg:
            limit = int(arg["$slice"])
            current[:] = current[:limit] if limit >= 0 else current[limit:]
    else:
        current.append(copy.deepcopy(arg))


def _push_sort(values, spec):
    if isinstance(spec, dict):
        wrapped = [Doc(doc=v if isinstance(v, dict) else {}) for v in values]
        order = sort_docs(wrapped, spec)
        values[:] = [w.doc for w in order]
    elif spec in (1, -1):
        values.sort(key=functools.cmp_to_key(lambda a, b: compare(a, b) * spec))
    else:
        raise bad_value("The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields")


def _add_to_set(doc, parts, current, arg):
    if current is MISSING:
        current = []
        set_path(doc, parts, current)
    _require_array(doc, parts, current)
    if isinstance(arg, dict) and "$each" in arg:
        items = arg["$each"]
        if not isinstance(items, list):
            raise bad_value("The argument to $each in $addToSet must be an array")
    else:
        items = [arg]
    present = {hash_key(v) for v in current}
    for item in items:
        key = hash_key(item)
        if key not in present:
            present.add(key)
            current.append(copy.deepcopy(item))


def _pull_filter(arg, op):
    """Return ``keep(value)`` for $pull / $pullAll."""
    if op == "$pullAll":
        if not isinstance(arg, list):
            raise bad_value("$pullAll requires an array argument")
        return lambda value: not any(values_equal(value, target) for target in arg)
    if is_operator_dict(arg):
        ops = compile_operators(arg)
        return lambda value: not ops([value])
    if isinstance(arg, dict):
        sub = compile_filter(arg)
        return lambda value: not (isinstance(value, dict) and sub(value))
    return lambda value: not values_equal(value, arg)


def _bit(doc, parts, current, arg):
    if not isinstance(arg, dict) or not arg:
        raise bad_value("$bit expects an object of {and|or|xor: <int>}")
    value = 0 if current is MISSING else current
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_value("Cannot apply $bit to a value of non-integral type")
    functions = {"and": operator.and_, "or": operator.or_, "xor": operator.xor}
    for name, operand in arg.items():
        if name not in functions or not isinstance(operand, int):
            raise bad_value("$bit: unsupported operation or non-integer operand: %s" % name)
        value = arithmetic(value, operand, functions[name])
    set_path(doc, parts, value)


def upsert_seed(query):
    """The document an upsert starts from: the equality conditions of ``query``."""
    seed = {}

    def visit(spec):
        for key, cond in spec.items():
            if key == "$and" and isinstance(cond, list):
                for sub in cond:
                    if isinstance(sub, dict):
                        visit(sub)
            elif key.startswith("$"):
                continue
            elif is_operator_dict(cond):
                if "$eq" in cond:
                    set_path(seed, split_path(key), copy.deepcopy(cond["$eq"]))
            elif not hasattr(cond, "pattern"):
                set_path(seed, split_path(key), copy.deepcopy(cond))

    visit(query or {})
    return seed
