"""Fixtures and the TLS report for the nginx_tls scenario (helpers live in nginx_lab.py)."""

import json
import os

import pytest

from nginx_lab import CERT_PATH, LB, LB_NAME, SNI, TLS_RECORDS, node


@pytest.fixture(scope="session")
def lb():
    """The load balancer node, through podman exec."""
    return node(LB_NAME)


@pytest.fixture(scope="session")
def cafile(tmp_path_factory):
    """The load balancer's self-signed certificate, trusted as its own CA."""
    path = tmp_path_factory.mktemp("tls") / "lb.pem"
    path.write_text(node(LB_NAME).file(CERT_PATH).content_string)
    return str(path)


def pytest_terminal_summary(terminalreporter):
    """Print (and save next to molecule's state) every TLS probe and its result."""
    if not TLS_RECORDS:
        return
    terminalreporter.section("TLS checks against %s:443 (SNI %s)" % (LB, SNI))
    for rec in TLS_RECORDS:
        terminalreporter.write_line("%-58s expected %-8s -> %s%s" % (
            rec["check"], rec["expected"], rec["outcome"],
            " [%s %s]" % (rec["protocol"], rec["cipher"]) if rec["established"] else ""))
    out_dir = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if out_dir and os.path.isdir(out_dir):
        path = os.path.join(out_dir, "tls_checks.json")
        with open(path, "w") as fh:
            json.dump(TLS_RECORDS, fh, indent=2)
        terminalreporter.write_line("written to %s" % path)
