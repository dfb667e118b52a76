"""The lab substrate: real systemd nodes, python3, per-node loopback addresses."""

import socket
import urllib.request

PROBE_PORT = 18080


def test_systemd_is_pid1_and_running(host):
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state


def test_python3_present(host):
    cmd = host.run("python3 -c 'import sys; print(sys.version_info[0])'")
    assert cmd.rc == 0 and cmd.stdout.strip() == "3"


def test_probe_unit_enabled_and_active(host):
    svc = host.service("nodeops-probe")
    assert svc.is_enabled
    assert svc.is_running


def test_probe_listens_on_own_address_only(host, hostvars):
    addr = hostvars["nodeops_node_address"]
    assert host.socket("tcp://%s:%d" % (addr, PROBE_PORT)).is_listening
    assert not host.socket("tcp://0.0.0.0:%d" % PROBE_PORT).is_listening


def test_probe_answers_only_at_own_address(hostvars):
    addr = hostvars["nodeops_node_address"]
    name = hostvars["inventory_hostname"]
    # The controller shares the nodes' network namespace: connect from here.
    with urllib.request.urlopen("http://%s:%d/" % (addr, PROBE_PORT), timeout=5) as resp:
        assert resp.status == 200
        assert resp.read().decode().strip() == name
    for other in ("127.0.0.1", "127.0.1.254"):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            assert sock.connect_ex((other, PROBE_PORT)) != 0, "probe of %s answered on %s" % (name, other)
        finally:
            sock.close()
