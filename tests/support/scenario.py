"""Helpers the molecule scenarios' verify steps share: run this checkout's playbooks
against the scenario's nodes the way an operator would, reach a node with podman exec,
read a PLAY RECAP, wait for a condition.

molecule/conftest.py puts tests/support on sys.path, so a scenario test does
``from scenario import ...``.
"""

import os
import pathlib
import re
import subprocess
import time

ROOT = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).resolve().parents[2]))
EPHEMERAL = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", str(EPHEMERAL / "inventory" / "ansible_inventory.yml"))
CONTAINERS_CONF = str(ROOT / "lab" / "containers.conf")
# podman, with exec into a running node done straight through runc (lab/bin/podman-runc).
PODMAN = str(ROOT / "lab" / "bin" / "podman-runc")
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def playbook_env(**extra):
    """Environment for ansible-playbook: this checkout's collection and config, plain output, task timings."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".cache" / "collections"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "CONTAINERS_CONF": CONTAINERS_CONF,
        "PATH": "%s:%s:%s" % (ROOT / ".venv" / "bin", ROOT / ".cache" / "node" / "bin", env.get("PATH", "")),
    })
    env.update(extra)
    return env


def playbook_cmd(playbook, *extra, inventory=None):
    """ansible-playbook argv for a playbook of this collection (a name under playbooks/) or a path."""
    path = pathlib.Path(playbook)
    if not path.is_absolute():
        path = ROOT / "playbooks" / playbook
    return [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", inventory or INVENTORY, str(path)] + list(extra)


def run_playbook(playbook, *extra, log=None, timeout=1800, inventory=None, env=None):
    """Run a playbook to the end; returns (rc, output, seconds). ``log`` also keeps the output in a file."""
    start = time.monotonic()
    proc = subprocess.run(playbook_cmd(playbook, *extra, inventory=inventory), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env or playbook_env(), cwd=str(ROOT), timeout=timeout, check=False)
    output = proc.stdout.decode("utf-8", "replace")
    if log is not None:
        pathlib.Path(log).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(log).write_text(output)
    return proc.returncode, output, round(time.monotonic() - start, 1)


def recap(output):
    """PLAY RECAP counters per host: {host: {ok, changed, unreachable, failed}}."""
    return {m.group(1): dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:])))
            for m in RECAP_LINE.finditer(output)}


def podman_exec(container, command, check=True, timeout=120):
    """Run a shell command in a node; returns stdout (raises AssertionError on failure when ``check``)."""
    proc = subprocess.run([PODMAN, "exec", container, "sh", "-c", command], capture_output=True, text=True,
                          env=dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF), timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s: %s failed (%s): %s" % (container, command, proc.returncode, proc.stderr))
    return proc.stdout


def wait_for(predicate, timeout=20, interval=0.25):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
