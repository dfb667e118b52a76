"""Fixtures for the mongo_backup integration tests.

The server fixtures are those of ``tests/integration/mongo/conftest.py`` (loaded
from there, not copied): with ``MONGODB_TEST_URI`` set every test runs against
that real server, unchanged; otherwise against a fresh ``mongo_test_server``.
Each test works in throwaway databases ``nodeops_test_<random>_<n>...`` that
are dropped afterwards, and every backup goes to a per-test temporary directory.
"""

import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
COLLECTIONS = os.path.join(REPO, '.cache', 'collections')
VENV_BIN = os.path.join(REPO, '.venv', 'bin')

_spec = importlib.util.spec_from_file_location('nodeops_mongo_conftest', os.path.join(REPO, 'tests', 'integration', 'mongo', 'conftest.py'))
_mongo_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mongo_conftest)

# Re-exported fixtures (pytest collects fixture functions from this module's namespace).
mongo_uri = _mongo_conftest.mongo_uri
client = _mongo_conftest.client
db_prefix = _mongo_conftest.db_prefix
make_db = _mongo_conftest.make_db
db = _mongo_conftest.db
server_process = _mongo_conftest.server_process
REAL_URI = _mongo_conftest.REAL_URI
TestServerProcess = _mongo_conftest.TestServerProcess

sys.path.insert(0, HERE)


@pytest.fixture
def backup_root(tmp_path):
    root = tmp_path / 'backups'
    return str(root)


@pytest.fixture
def mb(mongo_uri, backup_root):
    """The operations of the module, called in-process with module-like parameters."""
    import mongo_backup_support  # pylint: disable=import-error,import-outside-toplevel
    return mongo_backup_support.Ops(mongo_uri, backup_root)
