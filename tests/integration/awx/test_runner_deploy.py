"""The deploy job template as AWX runs it: ansible-runner's Python API (the engine AWX jobs run on),
the project wrapper playbook (awx/project/playbooks/deploy.yml, which imports nodeops.stack.deploy),
extra vars built from answers to awx/surveys/deploy.json exactly as AWX builds them (survey defaults
plus answers, typed per question) and the AWX job variables (awx_user_name, ...).

It does not build a fleet of its own (CI time): point it at one that the node and nginx_tls roles
built, such as molecule scenario `rolling` after converge, from that scenario's verify step:

    NODEOPS_RUNNER_INVENTORY=$MOLECULE_EPHEMERAL_DIRECTORY/inventory \\
    NODEOPS_RUNNER_ARTIFACT=$MOLECULE_EPHEMERAL_DIRECTORY/releases/nodeops-sample-app-2.0.0.tgz \\
    NODEOPS_RUNNER_ARTIFACT_SHA256=<its sha256> \\
    .venv/bin/python -m pytest tests/integration/awx/test_runner_deploy.py

Optional: NODEOPS_RUNNER_EXTRA_VARS, a JSON object of job template extra variables (AWX puts them
under the survey answers), e.g. '{"rolling_update_serial": [1, 2]}'.

The fleet ends on the given artifact. Checks: both jobs `successful`; the job events (what AWX
stores and shows) hold the four plays of the deploy, ok results for every app node and a final
playbook_on_stats equal to runner's stats; every app node serves the artifact's version; the AWX
user is recorded as the deployer; a second identical job reports changed=0 on every host.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

import ansible_runner
import pytest

import awx_survey  # tests/support, put on sys.path by tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[3]
VENV_BIN = pathlib.Path(sys.executable).parent
INVENTORY = os.environ.get("NODEOPS_RUNNER_INVENTORY", "")
ARTIFACT = os.environ.get("NODEOPS_RUNNER_ARTIFACT", "")
ARTIFACT_SHA256 = os.environ.get("NODEOPS_RUNNER_ARTIFACT_SHA256", "")
JOB_TEMPLATE_EXTRA_VARS = os.environ.get("NODEOPS_RUNNER_EXTRA_VARS", "")
AWX_USER = "awx-runner-test"
DEPLOY_PLAYS = ["Prepare the deploy", "Roll out, canary first", "Return the nodes moved in this run after a halt",
                "Finish the deploy"]

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(not INVENTORY, reason="NODEOPS_RUNNER_INVENTORY is not set: this test runs against a fleet "
                                             "built elsewhere (molecule scenario rolling_faults runs it in its verify step)"),
]


def artifact_info(path):
    """sha256 and version of a release tarball, read by the rolling_update role's own helper."""
    out = subprocess.run([sys.executable, str(ROOT / "roles" / "rolling_update" / "files" / "rolling_update_helper.py"),
                          "artifact", path], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def inventory_hostvars(env):
    """{host: hostvars} of the app group, as ansible-inventory resolves them (group_vars, host_vars)."""
    out = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", INVENTORY, "--list"], capture_output=True,
                         text=True, check=True, timeout=120, env=env)
    data = json.loads(out.stdout)
    hostvars = data["_meta"]["hostvars"]
    return {host: hostvars.get(host, {}) for host in data.get("app", {}).get("hosts", [])}


def awx_job_vars(job_id):
    """The variables AWX adds to every job's extra vars."""
    return {
        "awx_job_id": job_id, "tower_job_id": job_id,
        "awx_job_launch_type": "manual", "tower_job_launch_type": "manual",
        "awx_job_template_id": 7, "awx_job_template_name": "nodeops deploy",
        "awx_user_id": 3, "awx_user_name": AWX_USER, "tower_user_name": AWX_USER,
        "awx_user_email": "", "awx_user_first_name": "", "awx_user_last_name": "",
        "awx_inventory_id": 2, "awx_inventory_name": "rolling lab",
        "awx_project_revision": "0" * 40, "awx_execution_node": "localhost",
    }


def runner_env():
    """Environment of the job: AWX's settings for ansible-playbook, this checkout's collection."""
    return {
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".cache" / "collections"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        # The lab nodes are podman containers (containers.podman.podman connection).
        "CONTAINERS_CONF": str(ROOT / "lab" / "containers.conf"),
        "PATH": "%s:%s:%s" % (VENV_BIN, ROOT / ".cache" / "node" / "bin", os.environ.get("PATH", "")),
    }


def run_job(private_data_dir, ident, extravars):
    start = time.monotonic()
    result = ansible_runner.run(private_data_dir=str(private_data_dir), ident=ident, playbook="playbooks/deploy.yml",
                                inventory=INVENTORY, extravars=extravars, envvars=runner_env(), quiet=True,
                                timeout=1800)
    result.wall_s = round(time.monotonic() - start, 1)
    result.event_list = list(result.events)
    return result


def failure_summary(result):
    """The failed task results of a job, for assertion messages."""
    lines = ["status=%s rc=%s" % (result.status, result.rc)]
    for event in result.event_list:
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable") and \
                not event.get("event_data", {}).get("ignore_errors"):
            data = event["event_data"]
            lines.append("%s %s: %s" % (data.get("host"), data.get("task"), str(data.get("res", {}).get("msg"))[:600]))
    return "\n".join(lines[:20])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Two deploy jobs of the same artifact, as AWX would launch them from the survey."""
    assert ARTIFACT and ARTIFACT_SHA256, \
        "NODEOPS_RUNNER_INVENTORY is set, so NODEOPS_RUNNER_ARTIFACT and NODEOPS_RUNNER_ARTIFACT_SHA256 must be too"
    assert os.path.exists(INVENTORY), "NODEOPS_RUNNER_INVENTORY=%s does not exist" % INVENTORY
    info = artifact_info(ARTIFACT)
    assert info["sha256"] == ARTIFACT_SHA256, "NODEOPS_RUNNER_ARTIFACT_SHA256 does not match %s" % ARTIFACT

    survey = awx_survey.load_survey(ROOT / "awx" / "surveys" / "deploy.json")
    answers = {"rolling_update_artifact": ARTIFACT, "rolling_update_artifact_sha256": ARTIFACT_SHA256}
    template_vars = json.loads(JOB_TEMPLATE_EXTRA_VARS) if JOB_TEMPLATE_EXTRA_VARS else {}

    # AWX checks the project out into the job's private data dir and runs the playbook from there.
    private_data_dir = tmp_path_factory.mktemp("awx-job")
    shutil.copytree(ROOT / "awx" / "project", private_data_dir / "project")

    mp = pytest.MonkeyPatch()
    mp.delenv("ANSIBLE_CONFIG", raising=False)  # AWX jobs read the project's ansible.cfg only; it has none
    try:
        runs = []
        for job_id in (101, 102):
            extravars = dict(template_vars, **awx_survey.survey_extravars(survey, answers))
            extravars.update(awx_job_vars(job_id))
            runs.append(run_job(private_data_dir, "job-%d" % job_id, extravars))
    finally:
        mp.undo()
    print("\nawx runner deploy jobs: %s" % ", ".join("%s in %.1f s" % (r.status, r.wall_s) for r in runs))
    return {"runs": runs, "info": info}


def stats_of(result):
    """The job's one playbook_on_stats event: nothing but output (callbacks such as profile_tasks print a
    recap as verbose events) may follow it."""
    events = result.event_list
    at = [i for i, e in enumerate(events) if e.get("event") == "playbook_on_stats"]
    assert len(at) == 1, "expected exactly one playbook_on_stats event, got %d" % len(at)
    after = sorted({e.get("event") for e in events[at[0] + 1:]} - {"verbose", "EOF"})
    assert not after, "events after playbook_on_stats: %s" % after
    return events[at[0]]["event_data"]


def test_deploy_job_successful(jobs):
    first = jobs["runs"][0]
    assert first.status == "successful" and first.rc == 0, failure_summary(first)
    stats = stats_of(first)
    assert not stats.get("failures") and not stats.get("dark"), stats
    for key in ("ok", "changed", "failures", "dark", "skipped"):
        assert (stats.get(key) or {}) == (first.stats.get(key) or {}), "stats event differs from runner stats: %s" % key

    events = first.event_list
    plays = [e["event_data"]["play"] for e in events if e["event"] == "playbook_on_play_start"]
    # A serial play starts once per batch: the canary batch and the ramp's.
    assert list(dict.fromkeys(plays)) == DEPLOY_PLAYS, plays
    app_hosts = set(inventory_hostvars(dict(os.environ, **runner_env())))
    assert app_hosts, "no host in the app group of %s" % INVENTORY
    ok_hosts = {e["event_data"]["host"] for e in events if e["event"] == "runner_on_ok"}
    assert app_hosts <= ok_hosts, "app hosts without an ok result: %s" % (app_hosts - ok_hosts)


def test_every_app_node_serves_the_artifact_version(jobs):
    assert jobs["runs"][0].status == "successful", failure_summary(jobs["runs"][0])
    hostvars = inventory_hostvars(dict(os.environ, **runner_env()))
    served = {}
    for host, hv in sorted(hostvars.items()):
        address = hv.get("nodeops_node_address", hv.get("ansible_host", host))
        port = int(hv.get("rolling_update_app_port", 3000))
        with urllib.request.urlopen("http://%s:%d/version" % (address, port), timeout=10) as resp:
            served[host] = json.loads(resp.read())["version"]
    assert served and set(served.values()) == {jobs["info"]["version"]}, served


def test_awx_user_is_recorded_as_the_deployer(jobs):
    """rolling_update_deployed_by defaults to awx_user_name: the lock holder and new manifests name the AWX user."""
    results = [e["event_data"] for e in jobs["runs"][0].event_list if e["event"] == "runner_on_ok"]
    # The deploy_lock module's result when the job takes the lock.
    holders = [r["res"]["holder"] for r in results if r.get("res", {}).get("action") == "take" and r["res"].get("holder")]
    assert holders and all(h["owner"] == AWX_USER for h in holders), holders
    # Manifests written by this job (none when the fleet already ran the artifact) record the AWX user too.
    manifests = [r["res"]["manifest"] for r in results if isinstance(r.get("res", {}).get("manifest"), dict)
                 and r["res"]["manifest"].get("artifact_sha256") == ARTIFACT_SHA256]
    assert all(m["deployed_by"] == AWX_USER for m in manifests), manifests


def test_second_identical_job_changes_nothing(jobs):
    second = jobs["runs"][1]
    assert second.status == "successful" and second.rc == 0, failure_summary(second)
    stats = stats_of(second)
    assert not stats.get("failures") and not stats.get("dark"), stats
    assert stats.get("ok"), "the second job ran no task: %s" % stats
    changed = {host: n for host, n in (stats.get("changed") or {}).items() if n}
    tasks = sorted({"%s: %s" % (e["event_data"]["host"], e["event_data"]["task"]) for e in second.event_list
                    if e["event"] == "runner_on_ok" and e["event_data"].get("res", {}).get("changed")})
    assert not changed, "the second identical deploy changed %s:\n%s" % (changed, "\n".join(tasks))
