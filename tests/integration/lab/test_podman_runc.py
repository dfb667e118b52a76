"""lab/bin/podman-runc: the podman the lab's Ansible connection and the scenario tests use.

It runs `exec` into a running container (and answers `mount`/`umount`) through runc instead of
podman; everything else goes to podman. These tests run it against a real lab node (a systemd
container of the lab image) beside plain podman and check that a command cannot tell the two
apart, that the cases it does not take over get podman's own answer, and that an Ansible play
over it behaves as over podman. The container is removed at the end, failed or not.
"""

import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
WRAPPER = str(ROOT / "lab" / "bin" / "podman-runc")
IMAGE = "localhost/nodeops-lab:bookworm"
NAME = "nodeops-it-podman-runc"
ENV = dict(os.environ, CONTAINERS_CONF=str(ROOT / "lab" / "containers.conf"), NODEOPS_FROM_HOST="host-value")

pytestmark = pytest.mark.lab


def podman(*args, check=True, **kwargs):
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=ENV, timeout=120, check=check, **kwargs)


def wrapped(*args, **kwargs):
    return subprocess.run([WRAPPER, *args], capture_output=True, text=True, env=ENV, timeout=120, check=False, **kwargs)


def start_node():
    podman("rm", "-f", NAME, check=False)
    podman("run", "-d", "--name", NAME, "--systemd=always", "--network", "host", "--cap-add", "SYS_ADMIN", IMAGE, "/sbin/init")
    deadline = time.monotonic() + 60
    while podman("exec", NAME, "systemctl", "is-system-running", check=False).stdout.strip() not in ("running", "degraded"):
        assert time.monotonic() < deadline, "the lab node did not boot"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def node():
    if shutil.which("podman") is None or podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail("needs podman and the lab image (make lab-image)")
    try:
        start_node()
        yield NAME
    finally:
        podman("rm", "-f", "-t", "0", NAME, check=False)


SHOW = "id; pwd; env | sort; cat /proc/self/cgroup; grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; ls -l /proc/self/ns | cut -d' ' -f9-"


def test_a_command_sees_the_same_process_context_as_under_podman_exec(node):
    under_podman = podman("exec", node, "sh", "-c", SHOW).stdout
    under_wrapper = wrapped("exec", node, "sh", "-c", SHOW)
    assert under_wrapper.returncode == 0, under_wrapper.stderr
    # user, working directory, environment, cgroup, capabilities, seccomp and namespaces
    assert under_wrapper.stdout == under_podman


def test_exit_status_output_and_stdin_pass_through(node):
    result = wrapped("exec", node, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert wrapped("exec", "-i", node, "cat", input="data in\n").stdout == "data in\n"
    # without -i the command gets no stdin, as with podman exec
    assert wrapped("exec", node, "cat", input="never read\n").stdout == ""


def test_env_and_workdir_options(node):
    result = wrapped("exec", "--env", "A=1", "-e", "HOSTNAME=given", "--workdir", "/etc", node, "sh", "-c", "echo $A $HOSTNAME; pwd")
    assert result.stdout == "1 given\n/etc\n", result


def test_mount_answers_the_running_containers_root_filesystem(node):
    # (the root filesystem, as `podman mount` gives it: not what a systemd container mounts over it, such as /tmp)
    mounted = wrapped("mount", node)
    assert mounted.returncode == 0
    path = pathlib.Path(mounted.stdout.strip())
    marker = "written-%d" % time.time_ns()
    (path / "var" / "tmp" / "podman-runc-marker").write_text(marker)
    assert podman("exec", node, "cat", "/var/tmp/podman-runc-marker").stdout == marker
    assert wrapped("umount", node).returncode == 0
    assert podman("exec", node, "cat", "/var/tmp/podman-runc-marker").stdout == marker


@pytest.mark.parametrize("args,expected", [
    (["exec", "--user", "nobody", NAME, "id", "-un"], "nobody\n"),  # a user: podman resolves it
    (["container", "exists", NAME], ""),                           # any other subcommand
    (["exec", "--env", "NODEOPS_FROM_HOST", NAME, "sh", "-c", "echo $NODEOPS_FROM_HOST"], "host-value\n"),  # --env NAME: podman's environment
])
def test_what_it_does_not_take_over_goes_to_podman(node, args, expected):
    result = wrapped(*args)
    assert (result.returncode, result.stdout) == (0, expected), result


def test_unknown_and_stopped_containers_get_podmans_own_errors(node):
    missing = wrapped("exec", "nodeops-it-no-such-node", "true")
    assert missing.returncode == podman("exec", "nodeops-it-no-such-node", "true", check=False).returncode != 0
    assert "no such container" in missing.stderr
    podman("stop", "-t", "0", node)
    try:
        stopped = wrapped("exec", node, "true")
        assert stopped.returncode != 0 and "state improper" in stopped.stderr, stopped
    finally:
        start_node()


def test_a_container_recreated_under_the_same_name_is_found_again(node):
    first = wrapped("exec", node, "cat", "/proc/1/cpuset").returncode
    before = json.loads(podman("inspect", node).stdout)[0]["Id"]
    start_node()  # removes and recreates NAME: a new id, the cached one is stale
    after = json.loads(podman("inspect", node).stdout)[0]["Id"]
    assert before != after and first == 0
    marker = "new-%d" % time.time_ns()
    podman("exec", node, "sh", "-c", "echo %s > /tmp/which" % marker)
    assert wrapped("exec", node, "cat", "/tmp/which").stdout.strip() == marker


def test_an_ansible_play_over_it_copies_templates_and_fetches(node, tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {node: {
        "ansible_connection": "containers.podman.podman", "ansible_podman_executable": WRAPPER,
        "ansible_python_interpreter": "/usr/bin/python3"}}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy: {content: "hello\\n", dest: /tmp/runc-copy.txt, mode: "0640"}
    - ansible.builtin.fetch: {src: /tmp/runc-copy.txt, dest: "%s/fetched/", flat: true}
    - ansible.builtin.command: stat -c '%%a %%U %%s' /tmp/runc-copy.txt
      register: st
      changed_when: false
    - ansible.builtin.assert: {that: ["st.stdout == '640 root 6'"]}
""" % tmp_path)
    env = dict(ENV, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               ANSIBLE_NOCOLOR="1")
    command = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "changed=2" in first.stdout  # the copy and the fetch
    assert (tmp_path / "fetched" / "runc-copy.txt").read_text() == "hello\n"
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout[-3000:]
