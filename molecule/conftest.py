"""Fixtures shared by every molecule scenario's testinfra suite.

Molecule hands testinfra an Ansible inventory whose hosts use the podman
connection. testinfra's ansible backend cannot run commands natively over that
connection and falls back to one ansible-playbook run per command (~1-2 s
each); ``podman exec`` through testinfra's podman backend is ~50x faster.
"""

import pytest
import testinfra

PODMAN_CONNECTIONS = ("podman", "containers.podman.podman")


@pytest.fixture(scope="module")
def hostvars(_testinfra_host):
    """The node's Ansible variables (read once per module)."""
    return _testinfra_host.ansible.get_variables()


@pytest.fixture(scope="module")
def host(_testinfra_host, hostvars):
    """The node, reached through ``podman exec`` when it is a podman container."""
    if hostvars.get("ansible_connection") in PODMAN_CONNECTIONS:
        return testinfra.get_host("podman://%s" % hostvars.get("ansible_host", hostvars["inventory_hostname"]))
    return _testinfra_host
