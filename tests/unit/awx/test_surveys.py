"""The AWX survey specs (awx/surveys/*.json) are valid AWX surveys and cannot drift from the roles.

Each survey belongs to the project wrapper playbook of the same name (awx/project/playbooks/), which
imports the collection playbook. Every survey variable must be accepted by what that playbook runs:
an option of a role entry point it includes (names, types and choices checked with Ansible's own
argument spec validator, for every value the survey can send), or a playbook-level variable guarded
by the playbook's own assert (evaluated with Ansible's templar).
"""

import copy
import json
import pathlib

import pytest
import yaml

import awx_survey  # tests/support, put on sys.path by tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[3]
SURVEYS = ROOT / "awx" / "surveys"
WRAPPERS = ROOT / "awx" / "project" / "playbooks"
JOB_TEMPLATES = ["deploy", "rollback", "backup", "restore", "maintenance"]


def survey(name):
    return awx_survey.load_survey(SURVEYS / ("%s.json" % name))


def options(name):
    return awx_survey.playbook_options(str(WRAPPERS / ("%s.yml" % name)))


def test_every_job_template_has_a_survey_and_a_wrapper():
    surveys = sorted(p.stem for p in SURVEYS.glob("*.json"))
    assert surveys == sorted(JOB_TEMPLATES)
    for name in JOB_TEMPLATES:
        wrapper = yaml.safe_load((WRAPPERS / ("%s.yml" % name)).read_text())
        assert wrapper == [{"name": "Run nodeops.stack.%s" % name, "ansible.builtin.import_playbook": "nodeops.stack.%s" % name}]


@pytest.mark.parametrize("name", JOB_TEMPLATES)
def test_survey_is_a_valid_awx_survey(name):
    assert awx_survey.survey_errors(survey(name)) == []


@pytest.mark.parametrize("name", JOB_TEMPLATES)
def test_survey_variables_are_accepted_by_the_playbook(name):
    opts = options(name)
    assert len(opts) > 1, "found no argument spec for %s" % name
    assert awx_survey.argspec_errors(survey(name), opts) == []


def test_wrappers_reach_the_collection_playbooks():
    found = awx_survey.playbook_specs(str(WRAPPERS / "deploy.yml"))
    assert found["playbooks"] == [str(WRAPPERS / "deploy.yml"), str(ROOT / "playbooks" / "deploy.yml")]
    assert set(found["roles"]) == {("nodeops.stack.rolling_update", "main")}


# ------------------------------------------------------------------ the checks catch drift

def _with(name, var, **changes):
    data = copy.deepcopy(survey(name))
    item = next(q for q in data["spec"] if q["variable"] == var)
    item.update(changes)
    return data


def test_unknown_variable_is_reported():
    data = _with("deploy", "rolling_update_artifact_sha256", variable="rolling_update_artefact_sha256")
    errors = awx_survey.argspec_errors(data, options("deploy"))
    assert len(errors) == 1 and errors[0].startswith("rolling_update_artefact_sha256: not an option"), errors


def test_choices_outside_the_role_choices_are_reported():
    data = survey("deploy")
    data["spec"] = [{"question_name": "scheme", "question_description": "x", "required": True, "type": "multiplechoice",
                     "variable": "rolling_update_lb_gate_scheme", "choices": ["https", "http", "gopher"], "default": "https"}]
    errors = awx_survey.argspec_errors(data, options("deploy"))
    assert any("gopher" in e for e in errors), errors
    data["spec"][0].update(type="text", min=0, max=10)
    del data["spec"][0]["choices"]
    assert any("free text" in e for e in awx_survey.argspec_errors(data, options("deploy")))


def test_values_the_role_refuses_are_reported():
    data = _with("deploy", "rolling_update_release_lock", choices=["false", "true", "maybe"])
    assert any("maybe" in e for e in awx_survey.argspec_errors(data, options("deploy")))
    data = _with("deploy", "rolling_update_keep_releases", type="text", min=0, max=4, default="five")
    assert any("five" in e for e in awx_survey.argspec_errors(data, options("deploy")))


def test_playbook_level_variable_is_checked_by_the_playbooks_assert():
    data = _with("maintenance", "maintenance_state", choices=["on", "off", "maybe"])
    errors = awx_survey.argspec_errors(data, options("maintenance"))
    assert errors == ["maintenance_state='maybe' refused by the playbook's assert"]
    data = _with("maintenance", "maintenance_state", variable="maintenance_mode")
    assert "no assert of the playbook checks it" in " ".join(awx_survey.argspec_errors(data, options("maintenance")))


def test_host_pattern_variable_must_be_text():
    assert awx_survey.argspec_errors(survey("backup"), options("backup")) == []
    data = _with("backup", "backup_hosts", type="integer", min=0, max=9, default=1)
    assert awx_survey.argspec_errors(data, options("backup")) == [
        "backup_hosts: a host pattern of the playbook's plays, so a text question, not integer"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s.pop("description"), "'description' missing"),
    (lambda s: s.update(spec=[]), "no question"),
    (lambda s: s["spec"][0].update(type="boolean"), "not one of"),
    (lambda s: s["spec"][0].pop("required"), "'required' missing"),
    (lambda s: s["spec"].append(copy.deepcopy(s["spec"][0])), "duplicated"),
    (lambda s: s["spec"][4].update(choices=[]), "needs choices"),
    (lambda s: s["spec"][4].update(default="yes"), "not among the choices"),
    (lambda s: s["spec"][3].update(default="0"), "is not a integer"),
    (lambda s: s["spec"][3].pop("max"), "needs integer min and max"),
])
def test_invalid_survey_shapes_are_reported(mutate, expected):
    data = survey("deploy")
    mutate(data)
    assert expected in " | ".join(awx_survey.survey_errors(data))


# ------------------------------------------------------------------ extra vars as AWX sends them

def test_deploy_answers_become_typed_extra_vars_with_defaults():
    extravars = awx_survey.survey_extravars(survey("deploy"), {
        "rolling_update_artifact_url": "https://artifacts.example.com/shop-2.0.0.tgz",
        "rolling_update_artifact_sha256": "a" * 64, "rolling_update_lock_wait": 60})
    assert extravars == {
        "rolling_update_artifact_url": "https://artifacts.example.com/shop-2.0.0.tgz",
        "rolling_update_artifact": "",
        "rolling_update_artifact_sha256": "a" * 64,
        "rolling_update_lock_wait": 60,
        "rolling_update_release_lock": "false",
        "rolling_update_allow_failed_release": "false",
        "rolling_update_rollback_fleet_on_failure": "true",
        "rolling_update_keep_releases": 5,
    }


@pytest.mark.parametrize("answers, expected", [
    ({}, "rolling_update_artifact_sha256: required and not answered"),
    ({"rolling_update_artifact_sha256": "abc"}, "length 3 outside 64..64"),
    ({"rolling_update_artifact_sha256": "a" * 64, "rolling_update_lock_wait": 7200}, "7200 outside 0..3600"),
    ({"rolling_update_artifact_sha256": "a" * 64, "rolling_update_release_lock": "yes"}, "'yes' is not one of"),
    ({"rolling_update_artifact_sha256": "a" * 64, "rolling_update_serial": "2"}, "not a question"),
])
def test_bad_answers_are_refused(answers, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        awx_survey.survey_extravars(survey("deploy"), answers)


def test_restore_needs_a_typed_confirmation():
    """The survey can never confirm a restore on its own: no default, and the answer is free text."""
    with pytest.raises(ValueError, match="restore_confirm: required and not answered"):
        awx_survey.survey_extravars(survey("restore"), {})
    extravars = awx_survey.survey_extravars(survey("restore"), {"restore_confirm": "yes-restore-production"})
    assert extravars == {"restore_confirm": "yes-restore-production", "backup_restore_set": "latest",
                         "backup_restore_mongo": "true"}


def test_maintenance_has_no_default_state():
    """Switching the site off must be a choice, never a default."""
    with pytest.raises(ValueError, match="maintenance_state: required"):
        awx_survey.survey_extravars(survey("maintenance"), {})
    assert awx_survey.survey_extravars(survey("maintenance"), {"maintenance_state": "on"}) == {"maintenance_state": "on"}


# ------------------------------------------------------------------ the project

def test_project_collection_requirements_match_galaxy_yml():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    reqs = yaml.safe_load((ROOT / "awx" / "project" / "collections" / "requirements.yml").read_text())["collections"]
    by_name = {r["name"]: r.get("version") for r in reqs}
    assert by_name.pop("nodeops.stack") == "==%s" % galaxy["version"]
    assert by_name == galaxy["dependencies"]


def test_webhook_credential_type_injects_a_secret_role_option():
    cred = json.loads((ROOT / "awx" / "credential_types" / "deploy_webhook.json").read_text())
    assert cred["kind"] == "cloud" and set(cred) == {"name", "description", "kind", "inputs", "injectors"}
    fields = {f["id"]: f for f in cred["inputs"]["fields"]}
    assert fields["url"]["secret"] is True and cred["inputs"]["required"] == ["url"]
    injected = cred["injectors"]["extra_vars"]
    assert injected == {"rolling_update_notify_url": "{{ url }}"}
    for name in ("deploy", "rollback"):
        assert set(injected) <= set(options(name)), "not an option of the %s playbook's roles" % name
