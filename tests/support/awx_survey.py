"""AWX survey specs (awx/surveys/*.json) checked the way AWX checks them, turned into the extra vars
AWX would send, and compared with the argument specs of the roles the job template's playbook runs.

- ``survey_errors``: AWX's survey_spec validation (JobTemplateSurveySpec._validate_spec_data) plus
  this project's stricter rules (a description per question, bounds on text answers).
- ``survey_extravars``: AWX's launch behaviour (survey defaults applied when they validate, answers
  checked against type, bounds and choices, multiselect answers as lists, integers as int).
- ``playbook_specs`` / ``argspec_errors``: follow a playbook (and import_playbook, also of a
  collection playbook) to the role entry points and inline ``validate_argument_spec`` tasks it
  runs, and check each survey variable against those specs with Ansible's own validator. A
  playbook-level variable that no spec documents must be guarded by an ``assert`` of the playbook,
  which is evaluated with Ansible's templar for every value the survey can send.
"""

import functools
import json
import os
import re

import yaml

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION = "nodeops.stack"

# AWX's JobTemplateSurveySpec.ALLOWED_TYPES: question type -> Python type of a default/answer.
ALLOWED_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (float, int),
}
CHOICE_TYPES = ("multiplechoice", "multiselect")
TEXT_TYPES = ("text", "textarea", "password")


def load_survey(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def choices_of(question):
    """AWX accepts choices as a list or a newline-separated string."""
    choices = question.get("choices", [])
    if isinstance(choices, str):
        return [c for c in choices.splitlines() if c.strip()]
    return list(choices)


def survey_errors(survey):
    """Problems AWX (or this project's rules) would reject the survey for; [] when valid."""
    errors = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if not isinstance(survey.get(field), kind):
            errors.append("field %r missing or not a %s" % (field, kind.__name__))
    if errors:
        return errors
    if not survey["spec"]:
        return ["'spec' holds no question"]
    seen = set()
    for idx, item in enumerate(survey["spec"]):
        where = "question %d (%s)" % (idx, item.get("variable", "?") if isinstance(item, dict) else "?")
        if not isinstance(item, dict):
            errors.append("%s: not an object" % where)
            continue
        for key, kind in (("type", str), ("question_name", str), ("variable", str), ("required", bool),
                          ("question_description", str)):
            if not isinstance(item.get(key), kind):
                errors.append("%s: %r missing or not a %s" % (where, key, kind.__name__))
        qtype = item.get("type")
        if qtype not in ALLOWED_TYPES:
            errors.append("%s: type %r not one of %s" % (where, qtype, ", ".join(ALLOWED_TYPES)))
            continue
        if item.get("variable") in seen:
            errors.append("%s: variable duplicated" % where)
        seen.add(item.get("variable"))
        default = item.get("default", "")
        if default != "" and not (isinstance(default, ALLOWED_TYPES[qtype]) and not isinstance(default, bool)):
            errors.append("%s: default %r is not a %s" % (where, default, qtype))
        for key in ("min", "max"):
            if key in item and item[key] is not None and (not isinstance(item[key], int) or isinstance(item[key], bool)):
                errors.append("%s: %s must be an integer" % (where, key))
        if qtype in CHOICE_TYPES:
            choices = choices_of(item)
            if not choices:
                errors.append("%s: %s needs choices" % (where, qtype))
            defaults = default.splitlines() if isinstance(default, str) else list(default)
            defaults = [d for d in defaults if d.strip()]
            if qtype == "multiplechoice" and len(defaults) > 1:
                errors.append("%s: multiplechoice has one default at most" % where)
            if any(d not in choices for d in defaults):
                errors.append("%s: default %r not among the choices %s" % (where, default, choices))
        elif "choices" in item and choices_of(item):
            errors.append("%s: choices given for a %s question" % (where, qtype))
        if qtype in TEXT_TYPES + ("integer", "float"):
            if not isinstance(item.get("min"), int) or not isinstance(item.get("max"), int):
                errors.append("%s: %s question needs integer min and max" % (where, qtype))
            elif item["min"] > item["max"]:
                errors.append("%s: min %d > max %d" % (where, item["min"], item["max"]))
        if qtype == "password" and default not in ("", None):
            errors.append("%s: a password question must not carry a default in the repository" % where)
    return errors


def answer_errors(item, value):
    """AWX's per-answer validation (SurveyJobTemplateMixin._survey_element_validation), in short."""
    qtype, var = item["type"], item["variable"]
    if qtype in TEXT_TYPES:
        if not isinstance(value, str):
            return ["%s: expected a string, got %r" % (var, value)]
        if "min" in item and len(value) < item["min"] or "max" in item and len(value) > item["max"]:
            return ["%s: length %d outside %s..%s" % (var, len(value), item.get("min"), item.get("max"))]
    elif qtype in ("integer", "float"):
        kind = int if qtype == "integer" else (int, float)
        if not isinstance(value, kind) or isinstance(value, bool):
            return ["%s: expected %s, got %r" % (var, qtype, value)]
        if "min" in item and value < item["min"] or "max" in item and value > item["max"]:
            return ["%s: %r outside %s..%s" % (var, value, item.get("min"), item.get("max"))]
    elif qtype == "multiplechoice":
        if value not in choices_of(item):
            return ["%s: %r is not one of %s" % (var, value, choices_of(item))]
    elif qtype == "multiselect":
        values = value.splitlines() if isinstance(value, str) else value
        if any(v not in choices_of(item) for v in values):
            return ["%s: %r not all among %s" % (var, value, choices_of(item))]
    return []


def survey_extravars(survey, answers):
    """The extra vars AWX sends for these answers: valid defaults, then the answers.

    Raises ValueError naming every problem (unknown variable, missing required answer, bad answer).
    """
    by_var = {item["variable"]: item for item in survey["spec"]}
    problems = ["%s: not a question of survey %r" % (var, survey["name"]) for var in answers if var not in by_var]
    extravars = {}
    for var, item in by_var.items():
        default = item.get("default")
        if item["type"] == "multiselect" and isinstance(default, str):
            default = [d for d in default.splitlines() if d.strip()]
        if default is not None and item["type"] != "password" and not answer_errors(item, default):
            extravars[var] = default
        if var in answers:
            value = answers[var]
            if item["type"] == "multiselect" and isinstance(value, str):
                value = [v for v in value.splitlines() if v.strip()]
            problems.extend(answer_errors(item, value))
            extravars[var] = value
        elif item["required"] and var not in extravars:
            problems.append("%s: required and not answered" % var)
    if problems:
        raise ValueError("; ".join(problems))
    return extravars


# ------------------------------------------------------------------------- playbooks -> argument specs

@functools.lru_cache(maxsize=None)
def _load_yaml(path):
    """Parsed YAML, once per file (argument specs are large; callers do not modify the result)."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _resolve_playbook(ref, base_dir):
    """A playbook path relative to the importing playbook, or a collection playbook name."""
    if ref.startswith(COLLECTION + "."):
        return os.path.join(REPO, "playbooks", ref[len(COLLECTION) + 1:] + ".yml")
    return os.path.normpath(os.path.join(base_dir, ref))


def _role_dir(name):
    short = name[len(COLLECTION) + 1:] if name.startswith(COLLECTION + ".") else name
    return os.path.join(REPO, "roles", short)


# A play's hosts: "{{ backup_hosts | default('backup') }}" - a host pattern the operator may narrow.
HOSTS_VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*default\(")


def _walk_tasks(tasks, found, play_vars):
    for task in tasks or []:
        for key in ("block", "rescue", "always"):
            _walk_tasks(task.get(key), found, play_vars)
        for action in ("ansible.builtin.assert", "assert"):
            if action in task:
                that = task[action]["that"]
                found["asserts"].append({"that": [that] if isinstance(that, str) else list(that),
                                         "vars": dict(play_vars, **(task.get("vars") or {}))})
        for action in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
            if action in task:
                args = task[action]
                found["roles"].append((args["name"], args.get("tasks_from", "main")))
        for action in ("ansible.builtin.validate_argument_spec", "validate_argument_spec"):
            if action in task and isinstance(task[action].get("argument_spec"), dict):
                found["inline"].append(task[action]["argument_spec"])


def playbook_specs(path, _found=None):
    """What a playbook runs: {"roles": [(role, entry point)], "inline": [argument_spec], "asserts": [{that, vars}],
    "host_vars": {names used in the plays' host patterns}, "playbooks": [paths]}."""
    found = _found or {"roles": [], "inline": [], "asserts": [], "host_vars": set(), "playbooks": []}
    if not os.path.isfile(path):
        raise FileNotFoundError("playbook %s does not exist" % path)
    found["playbooks"].append(path)
    plays = _load_yaml(path) or []
    for play in plays:
        for key in ("ansible.builtin.import_playbook", "import_playbook"):
            if key in play:
                playbook_specs(_resolve_playbook(play[key], os.path.dirname(path)), found)
        found["host_vars"].update(HOSTS_VAR_RE.findall(str(play.get("hosts", ""))))
        for role in play.get("roles", []) or []:
            found["roles"].append((role["role"] if isinstance(role, dict) else role, "main"))
        for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            _walk_tasks(play.get(key), found, play.get("vars") or {})
    return found


def playbook_options(path):
    """Every variable the playbook's role entry points and inline specs document: {var: (option, source)}.

    Under the key None: the playbook's asserts and host pattern variables, for variables no spec documents.
    """
    found = playbook_specs(path)
    options = {None: {"asserts": found["asserts"], "host_vars": found["host_vars"]}}
    for role, entry in found["roles"]:
        specs = _load_yaml(os.path.join(_role_dir(role), "meta", "argument_specs.yml"))["argument_specs"]
        for var, option in (specs.get(entry, {}).get("options") or {}).items():
            options.setdefault(var, (option, "%s (%s)" % (role, entry)))
    for spec in found["inline"]:
        for var, option in spec.items():
            options.setdefault(var, (option, "validate_argument_spec in the playbook"))
    return options


def _validator_spec(option):
    """The option as Ansible validates it, without its (templated) default and the prose."""
    spec = {k: v for k, v in option.items() if k not in ("default", "description", "version_added")}
    if "options" in spec:
        spec["options"] = {k: _validator_spec(v) for k, v in spec["options"].items()}
    return spec


def _typed(item, raw):
    if item["type"] == "multiselect":
        return raw.splitlines() if isinstance(raw, str) else list(raw)
    return raw


def candidate_values(item):
    """The values an AWX launch can send for a question: every choice, the default, bounds of numbers."""
    values = []
    if item["type"] in CHOICE_TYPES:
        choices = choices_of(item)
        values.extend([[c] for c in choices] if item["type"] == "multiselect" else choices)
    elif item["type"] in ("integer", "float"):
        values.extend([item["min"], item["max"]])
    if item.get("default") not in (None, "") and item["type"] != "password":
        values.append(_typed(item, item["default"]))
    if not values:
        values.append("x" * max(item.get("min", 1), 1))
    return values


INVALID_VALUE = "nodeops-not-a-valid-answer"


def _mentions(text, names):
    return any(re.search(r"\b%s\b" % re.escape(name), str(text)) for name in names)


def _assert_verdict(guard, var, value):
    """Whether every condition of an assert holds with var=value and the play's variables."""
    variables = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in guard["vars"].items()}
    variables[var] = value
    templar = Templar(loader=DataLoader(), variables=variables)
    return all(templar.evaluate_conditional(trust_as_template(str(cond))) for cond in guard["that"])


def assert_errors(item, asserts):
    """A playbook-level variable: the playbook's asserts that use it must accept every value the survey
    can send and, for a choice question, refuse a value outside the choices."""
    var = item["variable"]
    guards = []
    for guard in asserts:
        names = {var} | {k for k, v in guard["vars"].items() if _mentions(v, {var})}
        if any(_mentions(cond, names) for cond in guard["that"]):
            guards.append(guard)
    if not guards:
        return ["%s: not an option of any role entry point or inline spec the playbook runs, and no assert of the "
                "playbook checks it" % var]
    errors = []
    for value in candidate_values(item):
        if not all(_assert_verdict(guard, var, value) for guard in guards):
            errors.append("%s=%r refused by the playbook's assert" % (var, value))
    if item["type"] in CHOICE_TYPES and all(_assert_verdict(guard, var, INVALID_VALUE) for guard in guards):
        errors.append("%s: the playbook's asserts accept %r too, so they do not guard the choices %s"
                      % (var, INVALID_VALUE, choices_of(item)))
    return errors


def argspec_errors(survey, options):
    """Survey variables the playbook's specs do not accept: unknown names, values refused, choices that differ."""
    errors = []
    for item in survey["spec"]:
        var = item["variable"]
        if var not in options:
            playbook_level = options.get(None) or {"asserts": [], "host_vars": set()}
            if var in playbook_level["host_vars"]:
                if item["type"] != "text":
                    errors.append("%s: a host pattern of the playbook's plays, so a text question, not %s" % (var, item["type"]))
                continue
            errors.extend(assert_errors(item, playbook_level["asserts"]))
            continue
        option, source = options[var]
        spec_choices = option.get("choices")
        if spec_choices and item["type"] not in CHOICE_TYPES:
            errors.append("%s: %s has choices %s but the question is free %s" % (var, source, spec_choices, item["type"]))
        if spec_choices and item["type"] in CHOICE_TYPES and set(choices_of(item)) - set(str(c) for c in spec_choices):
            errors.append("%s: choices %s are not all among %s's %s" % (var, choices_of(item), source, spec_choices))
        validator = ArgumentSpecValidator({var: _validator_spec(option)})
        for value in candidate_values(item):
            result = validator.validate({var: value})
            if result.error_messages:
                errors.append("%s=%r refused by %s: %s" % (var, value, source, "; ".join(result.error_messages)))
    return errors
