"""Bring the built-in lab's podman nodes up or down, idempotently.

The node list comes from the inventory (``ansible-inventory --list``): every
host in the ``lab_nodes`` group is a container named by its ``ansible_host``.
Containers run systemd as PID 1 with host networking; each node binds its
services to its own loopback address (``nodeops_node_address``).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL = "nodeops.lab"


def run(cmd, check=True, capture=True):
    """Run a command and return its stdout; raise with stderr on failure."""
    proc = subprocess.run(cmd, check=False, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)
    if check and proc.returncode != 0:
        raise SystemExit("command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), (proc.stderr or "").strip()))
    return proc


def lab_nodes(inventory):
    """Return [(inventory_hostname, container, address)] for the lab_nodes group."""
    ansible_inventory = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    data = json.loads(run([ansible_inventory, "-i", inventory, "--list"]).stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    hosts = data.get("lab_nodes", {}).get("hosts", [])
    if not hosts:
        raise SystemExit("inventory %s has no hosts in group lab_nodes" % inventory)
    nodes = []
    for host in hosts:
        hv = hostvars.get(host, {})
        nodes.append((host, hv.get("ansible_host", host), hv.get("nodeops_node_address"), hv.get("nodeops_lab_image")))
    return nodes


def container_state(name):
    proc = run(["podman", "container", "inspect", "--format", "{{.State.Status}}", name], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_booted(name, timeout):
    """Wait until systemd inside the container reports running (or degraded)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = run(["podman", "exec", name, "systemctl", "is-system-running"], check=False).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    raise SystemExit("node %s did not finish booting within %ss (systemd state: %r)" % (name, timeout, state))


def image_id(ref):
    proc = run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def container_image_id(name):
    return run(["podman", "container", "inspect", "--format", "{{.Image}}", name], check=False).stdout.strip()


def up(nodes, image, timeout):
    for host, name, address, node_image in nodes:
        state = container_state(name)
        wanted = image_id(node_image or image)
        if wanted is None:
            raise SystemExit("image %s not found; build it with `make lab-image`" % (node_image or image))
        if state is not None and container_image_id(name) != wanted:
            # The recipe changed since this node was created: a lab node is disposable.
            run(["podman", "rm", "-f", "-t", "5", name])
            print("%-8s %-22s %-12s removed (built from an older lab image)" % (host, name, address))
            state = None
        if state == "running":
            print("%-8s %-22s %-12s already running" % (host, name, address))
            continue
        if state is not None:
            run(["podman", "start", name])
            action = "started"
        else:
            run(["podman", "run", "-d", "--name", name, "--hostname", name,
                 "--label", "%s=1" % LABEL, "--systemd=always", "--network", "host",
                 # systemd unit sandboxing (PrivateTmp, ProtectSystem, DynamicUser) needs
                 # mount namespaces; without SYS_ADMIN such units die with 226/NAMESPACE.
                 "--cap-add", "SYS_ADMIN",
                 "--tmpfs", "/tmp", node_image or image, "/sbin/init"])
            action = "created"
        wait_booted(name, timeout)
        print("%-8s %-22s %-12s %s" % (host, name, address, action))


def down(nodes):
    for host, name, address, _image in nodes:
        if container_state(name) is None:
            print("%-8s %-22s absent" % (host, name))
            continue
        run(["podman", "rm", "-f", "-t", "5", name])
        print("%-8s %-22s removed" % (host, name))


def status(nodes):
    for host, name, address, _image in nodes:
        print("%-8s %-22s %-12s %s" % (host, name, address, container_state(name) or "absent"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("-i", "--inventory", default=os.path.join(ROOT, "inventories", "lab"))
    parser.add_argument("--image", default="localhost/nodeops-lab:bookworm")
    parser.add_argument("--boot-timeout", type=float, default=90)
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", os.path.join(ROOT, "lab", "containers.conf"))
    nodes = lab_nodes(args.inventory)
    {"up": lambda: up(nodes, args.image, args.boot_timeout), "down": lambda: down(nodes), "status": lambda: status(nodes)}[args.action]()


if __name__ == "__main__":
    main()
