"""Query matching, sorting and projection with MongoDB semantics.

Filters are compiled once into predicates over decoded documents, so an
invalid or unsupported operator is reported even when nothing would match.
Supported query operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $type
$size $all $elemMatch $regex/$options $not $mod $and $or $nor $comment
$alwaysTrue $alwaysFalse`` and ``$expr`` (evaluated by mongomock when it is
installed). ``$where``, ``$text``, ``$jsonSchema``, geo and bitwise operators
are rejected with BadValue.
"""

import functools
import operator
import re

from bson.regex import Regex

from .bsonutil import MISSING, TYPE_ALIASES, bson_type_number, canonical_type, compare, is_number, number_value, values_equal
from .errors import CommandError, bad_value, unsupported

_UNSUPPORTED_OPERATORS = {
    "$bitsAllClear", "$bitsAllSet", "$bitsAnyClear", "$bitsAnySet", "$geoIntersects", "$geoWithin",
    "$near", "$nearSphere", "$maxDistance", "$minDistance", "$center", "$centerSphere", "$box", "$polygon",
}
_UNSUPPORTED_TOP_LEVEL = {"$where", "$text", "$jsonSchema", "$sampleRate"}
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def split_path(path):
    """Split a dotted field path, rejecting empty components."""
    if not isinstance(path, str) or not path:
        raise bad_value("field path must be a non-empty string")
    parts = path.split(".")
    if any(part == "" for part in parts):
        raise bad_value("FieldPath field names may not be empty strings: '%s'" % path)
    return parts


def resolve_path(value, parts):
    """All values reached by a dotted path, traversing arrays; MISSING where absent."""
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        if head in value:
            return resolve_path(value[head], rest)
        return [MISSING]
    if isinstance(value, list):
        out = []
        if head.isdigit():
            index = int(head)
            if index < len(value):
                out.extend(resolve_path(value[index], rest))
        for element in value:
            if isinstance(element, dict):
                out.extend(resolve_path(element, parts))
        return out or [MISSING]
    return [MISSING]


def _expand(candidates):
    for value in candidates:
        yield value
        if isinstance(value, list):
            yield from value


# ---------------------------------------------------------------------------
# Filters

def _always_true(_doc):
    return True


def compile_filter(spec):
    """Compile a query filter into a predicate ``f(decoded_doc) -> bool``."""
    if spec is None:
        return _always_true
    if not isinstance(spec, dict):
        raise bad_value("the match filter must be an expression in an object")
    predicates = []
    for key, cond in spec.items():
        if key.startswith("$"):
            predicate = _compile_top_level(key, cond)
            if predicate is not None:
                predicates.append(predicate)
        else:
            predicates.append(_compile_field(key, cond))
    if not predicates:
        return _always_true
    if len(predicates) == 1:
        return predicates[0]
    return lambda doc: all(p(doc) for p in predicates)


def _compile_top_level(key, cond):
    if key in ("$and", "$or", "$nor"):
        if not isinstance(cond, list) or not cond:
            raise bad_value("%s argument must be a non-empty array" % key)
        subs = []
        for sub in cond:
            if not isinstance(sub, dict):
                raise bad_value("%s argument's entries must be objects" % key)
            subs.append(compile_filter(sub))
        if key == "$and":
            return lambda doc: all(p(doc) for p in subs)
        if key == "$or":
            return lambda doc: any(p(doc) for p in subs)
        return lambda doc: not any(p(doc) for p in subs)
    if key == "$comment":
        return None
    if key == "$alwaysTrue":
        return _always_true
    if key == "$alwaysFalse":
        return lambda doc: False
    if key == "$expr":
        return _compile_expr(cond)
    if key in _UNSUPPORTED_TOP_LEVEL:
        raise unsupported("the %s query operator" % key)
    raise bad_value("unknown top level operator: %s" % key)


def _compile_expr(expr):
    """``$expr`` is evaluated with mongomock's aggregation expression parser."""
    try:
        from mongomock import filtering
    except ImportError:
        raise unsupported("$expr (mongomock is not installed)") from None

    def predicate(doc):
        try:
            return filtering.filter_applies({"$expr": expr}, doc)
        except Exception as exc:  # mongomock raises a variety of errors
            raise CommandError(2, "cannot evaluate $expr: %s" % exc) from exc
    return predicate


def is_operator_dict(cond):
    """True for ``{$op: ...}`` condition documents (the first key decides, as in MongoDB)."""
    return isinstance(cond, dict) and bool(cond) and next(iter(cond)).startswith("$")


def _compile_field(path, cond):
    parts = split_path(path)
    if is_operator_dict(cond):
        value_predicate = compile_operators(cond)
    elif isinstance(cond, (Regex, re.Pattern)):
        value_predicate = _regex_predicate(cond, None)
    else:
        value_predicate = _eq_predicate(cond)
    return lambda doc: value_predicate(resolve_path(doc, parts))


def compile_operators(cond):
    """Compile ``{$op: arg, ...}`` into a predicate over path candidates."""
    predicates = []
    if "$options" in cond and "$regex" not in cond:
        raise bad_value("$options needs a $regex")
    for op, arg in cond.items():
        if op == "$options":
            continue
        if op == "$regex":
            predicates.append(_regex_predicate(arg, cond.get("$options")))
        else:
            predicates.append(_compile_operator(op, arg))
    if len(predicates) == 1:
        return predicates[0]
    return lambda candidates: all(p(candidates) for p in predicates)


def _compile_operator(op, arg):
    if op == "$eq":
        return _eq_predicate(arg)
    if op == "$ne":
        eq = _eq_predicate(arg)
        return lambda candidates: not eq(candidates)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _comparison_predicate(op, arg)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise bad_value("%s needs an array" % op)
        preds = [_regex_predicate(v, None) if isinstance(v, (Regex, re.Pattern)) else _eq_predicate(v) for v in arg]
        if op == "$in":
            return lambda candidates: any(p(candidates) for p in preds)
        return lambda candidates: not any(p(candidates) for p in preds)
    if op == "$exists":
        wanted = bool(arg)
        return lambda candidates: any(v is not MISSING for v in candidates) == wanted
    if op == "$type":
        return _type_predicate(arg)
    if op == "$size":
        if not is_number(arg) or int(number_value(arg)) != number_value(arg):
            raise bad_value("$size needs a number")
        size = int(number_value(arg))
        return lambda candidates: any(isinstance(v, list) and len(v) == size for v in candidates)
    if op == "$all":
        return _all_predicate(arg)
    if op == "$elemMatch":
        return _elem_match_predicate(arg)
    if op == "$not":
        if isinstance(arg, (Regex, re.Pattern)):
            inner = _regex_predicate(arg, None)
        elif isinstance(arg, dict) and arg:
            if not is_operator_dict(arg):
                raise bad_value("$not cannot have a non-operator expression")
            inner = compile_operators(arg)
        else:
            raise bad_value("$not needs a regex or a document")
        return lambda candidates: not inner(candidates)
    if op == "$mod":
        return _mod_predicate(arg)
    if op == "$comment":
        return lambda candidates: True
    if op in _UNSUPPORTED_OPERATORS:
        raise unsupported("the %s query operator" % op)
    raise bad_value("unknown operator: %s" % op)


def _eq_predicate(target):
    if target is None:
        return lambda candidates: any(v is MISSING or v is None for v in _expand(candidates))
    return lambda candidates: any(v is not MISSING and values_equal(v, target) for v in _expand(candidates))


_COMPARATORS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _comparison_predicate(op, target):
    cmp_op = _COMPARATORS[op]
    if target is None:
        if op in ("$gte", "$lte"):
            return _eq_predicate(None)
        return lambda candidates: False
    target_type = canonical_type(target)
    if target_type in (-1, 127):  # MinKey / MaxKey compare against every type
        return lambda candidates: any(v is not MISSING and cmp_op(compare(v, target), 0) for v in _expand(candidates))
    return lambda candidates: any(canonical_type(v) == target_type and cmp_op(compare(v, target), 0) for v in _expand(candidates))


def _compile_regex(pattern, options):
    flags_text = ""
    if isinstance(pattern, re.Pattern):
        return re.compile(pattern.pattern, pattern.flags | _flags_from_text(options or ""))
    if isinstance(pattern, Regex):
        flags = pattern.flags
        if isinstance(flags, str):
            flags_text = flags
            flags = 0
        return _compile_regex_text(pattern.pattern, flags_text + (options or ""), flags)
    if not isinstance(pattern, str):
        raise bad_value("$regex has to be a string")
    return _compile_regex_text(pattern, options or "", 0)


def _flags_from_text(text):
    flags = 0
    for char in text:
        flags |= _REGEX_FLAGS.get(char, 0)
    return flags


def _compile_regex_text(pattern, options, extra_flags):
    if not isinstance(options, str):
        raise bad_value("$options has to be a string")
    for char in options:
        if char not in "imsxlu":
            raise bad_value("invalid flag in regex options: %s" % char)
    try:
        return re.compile(pattern, (extra_flags & ~re.UNICODE & ~re.LOCALE) | _flags_from_text(options))
    except re.error as exc:
        raise bad_value("Regular expression is invalid: %s" % exc) from exc


def _regex_predicate(pattern, options):
    regex = _compile_regex(pattern, options)
    return lambda candidates: any(isinstance(v, str) and regex.search(v) is not None for v in _expand(candidates))


def _type_predicate(arg):
    wanted = arg if isinstance(arg, list) else [arg]
    numbers = set()
    match_number = False
    for item in wanted:
        if isinstance(item, str):
            if item == "number":
                match_number = True
            elif item in TYPE_ALIASES:
                numbers.add(TYPE_ALIASES[item])
            else:
                raise bad_value("Unknown type name alias: %s" % item)
        elif is_number(item):
            numbers.add(int(number_value(item)))
        else:
            raise bad_value("type must be represented as a number or a string")

    def matches(value):
        if value is MISSING:
            return False
        if match_number and is_number(value):
            return True
        return bson_type_number(value) in numbers

    return lambda candidates: any(matches(v) for v in _expand(candidates))


def _all_predicate(arg):
    if not isinstance(arg, list):
        raise bad_value("$all needs an array")
    if not arg:
        return lambda candidates: False
    preds = []
    for item in arg:
        if isinstance(item, dict) and "$elemMatch" in item:
            preds.append(_elem_match_predicate(item["$elemMatch"]))
        elif isinstance(item, (Regex, re.Pattern)):
            preds.append(_regex_predicate(item, None))
        else:
            preds.append(_eq_predicate(item))
    return lambda candidates: all(p(candidates) for p in preds)


def _elem_match_predicate(arg):
    if not isinstance(arg, dict):
        raise bad_value("$elemMatch needs an Object")
    if is_operator_dict(arg) and next(iter(arg)) not in ("$and", "$or", "$nor", "$expr"):
        ops = compile_operators(arg)

        def element_matches(element):
            return ops([element])
    else:
        sub = compile_filter(arg)

        def element_matches(element):
            return isinstance(element, dict) and sub(element)

    return lambda candidates: any(isinstance(v, list) and any(element_matches(e) for e in v) for v in candidates)


def _mod_predicate(arg):
    if not isinstance(arg, list) or len(arg) != 2 or not all(is_number(v) for v in arg):
        raise bad_value("malformed mod, needs to be an array of two numbers")
    divisor, remainder = (int(number_value(v)) for v in arg)
    if divisor == 0:
        raise bad_value("divisor cannot be 0")

    def matches(value):
        if not is_number(value):
            return False
        number = int(number_value(value))
        result = abs(number) % abs(divisor)
        if number < 0:
            result = -result
        return result == remainder

    return lambda candidates: any(matches(v) for v in _expand(candidates))


# ---------------------------------------------------------------------------
# Sorting

def compile_sort(spec):
    """Validate a sort spec; returns ``[(parts, direction)]`` (empty for no sort)."""
    if not spec:
        return []
    if not isinstance(spec, dict):
        raise bad_value("sort must be an object")
    fields = []
    for path, direction in spec.items():
        if isinstance(direction, dict):
            raise unsupported("sorting by %s" % list(direction))
        if not is_number(direction) or number_value(direction) not in (1, -1):
            raise bad_value("$sort key ordering must be 1 (for ascending) or -1 (for descending)")
        fields.append((split_path(path), int(number_value(direction))))
    return fields


def _sort_value(doc, parts, direction):
    values = []
    for value in resolve_path(doc, parts):
        if isinstance(value, list):
            values.extend(value if value else [MISSING])
        elif value is MISSING:
            values.append(None)
        else:
            values.append(value)
    if len(values) == 1:
        return values[0]
    key = functools.cmp_to_key(compare)
    return min(values, key=key) if direction == 1 else max(values, key=key)


def sort_docs(docs, spec):
    """Sort :class:`~.bsonutil.Doc` objects by a sort spec (stable for ties)."""
    fields = compile_sort(spec)
    if not fields:
        return list(docs)
    if len(fields) == 1 and fields[0][0] == ["$natural"]:
        return list(docs) if fields[0][1] == 1 else list(reversed(docs))
    keyed = [([_sort_value(d.doc, parts, direction) for parts, direction in fields], d) for d in docs]

    def cmp(left, right):
        for (_parts, direction), a, b in zip(fields, left[0], right[0]):
            result = compare(a, b)
            if result:
                return result * direction
        return 0

    keyed.sort(key=functools.cmp_to_key(cmp))
    return [d for _keys, d in keyed]


# ---------------------------------------------------------------------------
# Projection

class Projection:
    """A compiled inclusion or exclusion projection (no projection operators)."""

    def __init__(self, spec):
        self.include_id = True
        tree = {}
        include_fields = []
        exclude_fields = []
        for path, value in _flatten_projection(spec):
            if path.endswith(".$") or "$" in path.split(".")[-1]:
                raise unsupported("positional projection (%s)" % path)
            if isinstance(value, bool) or is_number(value):
                included = bool(number_value(value))
            else:
                raise unsupported("projection expressions (%s)" % path)
            if path == "_id":
                self.include_id = included
                if not included:
                    continue
            (include_fields if included else exclude_fields).append(path)
        non_id_includes = [p for p in include_fields if p != "_id"]
        if non_id_includes and exclude_fields:
            raise CommandError(31254, "Cannot do exclusion on field %s in inclusion projection" % exclude_fields[0])
        if non_id_includes or (include_fields and not exclude_fields):
            self.inclusive = True
            paths = include_fields
        else:
            self.inclusive = False
            paths = exclude_fields + ([] if self.include_id else ["_id"])
        for path in paths:
            _add_tree_path(tree, split_path(path), path)
        self.tree = tree

    def apply(self, doc):
        """Return the projected copy of a decoded document."""
        if self.inclusive:
            out = {}
            for key, value in doc.items():
                if key == "_id" and self.include_id and "_id" not in self.tree:
                    out[key] = value
                elif key in self.tree:
                    projected = _include_value(value, self.tree[key])
                    if projected is not MISSING:
                        out[key] = projected
            return out
        return _exclude_doc(doc, self.tree)


def _flatten_projection(spec, prefix=""):
    for key, value in spec.items():
        path = prefix + key
        if isinstance(value, dict):
            if is_operator_dict(value):
                raise unsupported("the projection operator %s" % list(value)[0])
            yield from _flatten_projection(value, path + ".")
        else:
            yield path, value


def _add_tree_path(tree, parts, full_path):
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if child is True:
            raise CommandError(31250, "Path collision at %s" % full_path)
        node = child
    if parts[-1] in node:
        raise CommandError(31250, "Path collision at %s" % full_path)
    node[parts[-1]] = True


def _include_value(value, subtree):
    if subtree is True:
        return value
    if isinstance(value, dict):
        out = {}
        for key, sub_value in value.items():
            if key in subtree:
                projected = _include_value(sub_value, subtree[key])
                if projected is not MISSING:
                    out[key] = projected
        return out
    if isinstance(value, list):
        return [p for p in (_include_value(v, subtree) for v in value if isinstance(v, (dict, list))) if p is not MISSING]
    return MISSING


def _exclude_doc(doc, tree):
    out = {}
    for key, value in doc.items():
        if key not in tree:
            out[key] = value
        elif tree[key] is not True:
            out[key] = _exclude_value(value, tree[key])
    return out


def _exclude_value(value, subtree):
    if isinstance(value, dict):
        return _exclude_doc(value, subtree)
    if isinstance(value, list):
        return [_exclude_value(v, subtree) for v in value]
    return value


def compile_projection(spec):
    """Return a :class:`Projection`, or None when ``spec`` is empty."""
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise bad_value("projection must be an object")
    return Projection(spec)
