"""Clients and helpers for the nginx_tls scenario; they run on the controller.

The controller shares the lab nodes' network namespace, so every client here
talks straight to the load balancer's own loopback address. Nothing listens or
connects outside 127.0.0.0/8.
"""

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys

import testinfra

SCENARIO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIR = os.path.dirname(os.path.dirname(SCENARIO_DIR))
sys.path.insert(0, os.path.join(PROJECT_DIR, "tests", "support"))

from scenario import wait_for  # noqa: E402,F401  pylint: disable=wrong-import-position,import-error,unused-import

LB_NAME = "nodeops-mol-nginx-lb"
LB = "127.0.1.121"
SNI = "nginx-tls.lab.test"
APPS = {"nodeops-mol-nginx-app1": "127.0.1.122", "nodeops-mol-nginx-app2": "127.0.1.123"}
APP_PORT = 3000
CERT_PATH = "/etc/ssl/nodeops/nginx-tls.lab.test.crt"
ACCESS_LOG = "/var/log/nginx/access.log"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Every TLS probe the suite makes, written out at the end of the session.
TLS_RECORDS = []


def node(name):
    """A lab node through ``podman exec`` (fast; no Ansible round trip)."""
    return testinfra.get_host("podman://%s" % name)


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def request(cafile, path, method="GET", body=None, headers=None, source=None, scheme="https", timeout=15):
    """One request to the load balancer, optionally from a given loopback source address."""
    source_address = (source, 0) if source else None
    if scheme == "https":
        conn = http.client.HTTPSConnection(LB, 443, context=tls_context(cafile), timeout=timeout, source_address=source_address)
    else:
        conn = http.client.HTTPConnection(LB, 80, timeout=timeout, source_address=source_address)
    hdrs = {"Host": SNI}
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def raw_upload(cafile, size, path="/echo"):
    """POST ``size`` bytes without waiting for the server; returns the status line's code.

    nginx answers 413 as soon as it has read the headers; the body may then be
    cut short, so sending errors are tolerated and the response is read anyway.
    """
    ctx = tls_context(cafile)
    raw = socket.create_connection((LB, 443), timeout=30)
    sock = ctx.wrap_socket(raw, server_hostname=LB)
    try:
        head = "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
            path, SNI, size)
        sock.sendall(head.encode())
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < size:
                n = min(len(chunk), size - sent)
                sock.sendall(chunk[:n])
                sent += n
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except (ConnectionResetError, ssl.SSLError, socket.timeout):
            pass
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
        return status, data
    finally:
        sock.close()


def s_client(*args, timeout=15):
    """One handshake with ``openssl s_client``; returns what happened and who refused."""
    cmd = ["openssl", "s_client", "-connect", "%s:443" % LB, "-servername", SNI, *args]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    # "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" (or "New, (NONE), Cipher is (NONE)")
    new = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
    alert = re.search(r"(\w[\w ]*alert [\w ]+):[^\n]*SSL alert number (\d+)", out)
    established = proc.returncode == 0 and new is not None and new.group(2) != "(NONE)"
    if established:
        outcome = "accepted"
    elif alert:
        outcome = "refused by server (alert %s: %s)" % (alert.group(2), alert.group(1).strip())
    elif re.search(r"no cipher match|no protocols available|no ciphers available|Error in cipher list", out):
        outcome = "client cannot offer it"
    else:
        outcome = "failed (%s)" % out.strip().splitlines()[-1] if out.strip() else "failed"
    return {
        "args": " ".join(args),
        "established": established,
        "protocol": new.group(1) if established else None,
        "cipher": new.group(2) if established else None,
        "alert": int(alert.group(2)) if alert else None,
        "outcome": outcome,
    }


def record_tls(check, expected, result):
    TLS_RECORDS.append({"check": check, "expected": expected, **result})


def ansible_playbook(playbook, *args, timeout=420):
    """Run a playbook against the scenario's inventory, the way molecule does."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    path = playbook if os.path.isabs(playbook) else os.path.join(SCENARIO_DIR, playbook)
    # JSON results: messages stay on one line, whatever their length.
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(PROJECT_DIR, ".cache", "collections"))
    proc = subprocess.run(["ansible-playbook", "-i", inventory, path, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=PROJECT_DIR, check=False)
    # ansible-core prints task errors on stderr: keep both, in order of importance.
    proc.stdout = ANSI.sub("", proc.stdout + "\n" + proc.stderr)
    return proc


def recap(output, host=LB_NAME):
    """{ok, changed, unreachable, failed} for one host from a PLAY RECAP."""
    m = re.search(r"^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % re.escape(host), output, re.M)
    assert m, "no recap for %s in:\n%s" % (host, output[-3000:])
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


def access_log(lb, since=None):
    """The load balancer's JSON access log lines (optionally those that ended after ``since``)."""
    entries = []
    for line in lb.check_output("cat %s" % ACCESS_LOG).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if since is None or entry["msec"] >= since:
            entries.append(entry)
    return entries
