"""Fixtures shared by every molecule scenario's testinfra suite.

Molecule hands testinfra an Ansible inventory whose hosts use the podman
connection. testinfra's ansible backend cannot run commands natively over that
connection and falls back to one ansible-playbook run per command (~1-2 s
each); ``podman exec`` through testinfra's podman backend is ~50x faster.
"""

import os
import sys

import pytest
import testinfra

# Shared helpers for the verify steps (tests/support/scenario.py and friends).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "support"))

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
