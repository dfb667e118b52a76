"""Fixtures for the MongoDB conformance suite.

With ``MONGODB_TEST_URI`` set, the suite runs against that (real) server,
unchanged; otherwise it starts the stand-in ``mongo_test_server`` from
``tests/support`` on a free loopback port. Either way every test works in its
own throwaway database named ``nodeops_test_<random>_<n>``, dropped afterwards.
"""

import itertools
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pymongo import MongoClient, monitoring

REPO_ROOT = Path(__file__).resolve().parents[3]
SUPPORT_DIR = REPO_ROOT / "tests" / "support"
REAL_URI = os.environ.get("MONGODB_TEST_URI")
STARTUP_TIMEOUT = 30
STOP_TIMEOUT = 10
_LISTENING = re.compile(r"listening on (\S+):(\d+)\s*$")


class TestServerProcess:
    """A ``python -m mongo_test_server`` subprocess on a free loopback port."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, *extra_args):
        self.stderr = tempfile.TemporaryFile(mode="w+b")
        self.final_log = ""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mongo_test_server", "--host", "127.0.0.1", "--port", "0", "--log-level", "info"] + list(extra_args),
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, env=env,
        )
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        buffered = b""
        while time.monotonic() < deadline:
            ready, _wlist, _xlist = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buffered += chunk
                for line in buffered.decode("utf-8", "replace").splitlines():
                    match = _LISTENING.search(line)
                    if match:
                        return int(match.group(2))
            elif self.proc.poll() is not None:
                break
        raise RuntimeError("mongo_test_server did not report 'listening on HOST:PORT' (exit status %s); stderr:\n%s" % (self.proc.poll(), self.stderr_text()))

    @property
    def uri(self):
        """Connection string for a direct connection."""
        return "mongodb://127.0.0.1:%d/?directConnection=true" % self.port

    def stderr_text(self):
        """Everything the server logged so far."""
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def terminate(self, timeout=STOP_TIMEOUT):
        """Send SIGTERM and wait; returns the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def stop(self):
        """Terminate (kill after a timeout) and release the pipes; returns the server's log."""
        self.terminate()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self.stderr.closed:
            self.final_log = self.stderr_text()
            self.stderr.close()
        return self.final_log


@pytest.fixture(scope="session")
def mongo_uri():
    """The server under test: MONGODB_TEST_URI unchanged, or a fresh stand-in server."""
    if REAL_URI:
        yield REAL_URI
        return
    server = TestServerProcess()
    try:
        yield server.uri
    finally:
        log = server.stop()
    # Errors inside the server become error replies; make sure none was an internal crash.
    assert "Traceback" not in log and "internal error" not in log, "mongo_test_server logged an internal error:\n" + log


@pytest.fixture
def server_process():
    """Factory for extra stand-in server processes (always stopped at teardown)."""
    started = []

    def start(*args):
        server = TestServerProcess(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def client(mongo_uri):
    """A session-wide client."""
    mongo_client = MongoClient(mongo_uri, serverSelectionTimeoutMS=10000)
    yield mongo_client
    mongo_client.close()


@pytest.fixture(scope="session")
def db_prefix(client):
    """A random database name prefix for this run; leftovers are dropped at the end."""
    prefix = "nodeops_test_%s" % secrets.token_hex(4)
    yield prefix
    for name in client.list_database_names():
        if name.startswith(prefix):
            client.drop_database(name)


_db_counter = itertools.count(1)


@pytest.fixture
def make_db(client, db_prefix):
    """Factory for fresh throwaway databases (``suffix`` is appended to the name)."""
    created = []

    def make(suffix=""):
        name = "%s_%d%s" % (db_prefix, next(_db_counter), suffix)
        created.append(name)
        return client[name]

    yield make
    for name in created:
        client.drop_database(name)


@pytest.fixture
def db(make_db):
    """A fresh throwaway database."""
    return make_db()


class CommandRecorder(monitoring.CommandListener):
    """Records command monitoring events."""

    def __init__(self):
        self.started_events = []
        self.succeeded_events = []
        self.failed_events = []

    def started(self, event):
        self.started_events.append(event)

    def succeeded(self, event):
        self.succeeded_events.append(event)

    def failed(self, event):
        self.failed_events.append(event)

    def replies(self, command_name):
        """Replies of the succeeded commands named ``command_name``."""
        return [e.reply for e in self.succeeded_events if e.command_name == command_name]

    def commands(self, command_name):
        """Command documents sent for ``command_name``."""
        return [e.command for e in self.started_events if e.command_name == command_name]


@pytest.fixture
def recorded(mongo_uri):
    """``(client, recorder)``: a client whose commands are recorded."""
    recorder = CommandRecorder()
    mongo_client = MongoClient(mongo_uri, serverSelectionTimeoutMS=10000, event_listeners=[recorder])
    yield mongo_client, recorder
    mongo_client.close()
