"""Fixtures of the backup fault-injection suite (docs/faults.md lists each case and its pass condition).

Every test gets its own MongoDB stand-in (it is killed or hung on purpose, so it is never the shared server nor a
real one named by MONGODB_TEST_URI), and every process, server and mount a test creates is removed at teardown,
failed or not.
"""

import os
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fault_support  # noqa: E402  pylint: disable=import-error,wrong-import-position

fault_support.python_path()


@pytest.fixture
def processes():
    """Start processes through this; they are SIGKILLed and reaped at teardown if still running."""
    procs = fault_support.Processes()
    yield procs
    procs.cleanup()


@pytest.fixture
def fault_server():
    """A fresh stand-in server of this test's own, resumed (if stopped) and stopped at teardown."""
    server = fault_support.FaultServer()
    yield server
    server.stop()


@pytest.fixture
def client(fault_server):
    from pymongo import MongoClient  # pylint: disable=import-outside-toplevel
    mongo_client = MongoClient(fault_server.uri, serverSelectionTimeoutMS=10000)
    yield mongo_client
    fault_server.resume()  # a test that failed while the server was stopped: close() would wait for it
    mongo_client.close()


@pytest.fixture
def small_disk(processes):
    """An 8 MiB tmpfs mounted under a fresh temporary directory; unmounted and removed at teardown, failed or not."""
    if os.geteuid() != 0:
        pytest.skip('mounting the small tmpfs needs root (make integration runs as root)')
    mount_point = tempfile.mkdtemp(prefix='nodeops-faults-disk-')
    try:
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m,mode=0700', 'nodeops-faults', mount_point], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except BaseException:
        os.rmdir(mount_point)
        raise
    try:
        yield mount_point
    finally:
        processes.cleanup()  # nothing may keep the mount busy
        result = subprocess.run(['umount', mount_point], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            subprocess.run(['umount', '-l', mount_point], check=False)
        os.rmdir(mount_point)
