"""method: mongodump round trip through the real MongoDB Database Tools, when they are installed on this machine.

The plumbing (command lines, config file, manifest from the tool's output) is unit-tested with stand-in programs in
tests/unit/plugins/module_utils/test_mongo_tools.py, and test_metadata_files_have_mongodumps_format checks this module's
metadata files against mongodump's documented format; this test is the only one allowed to skip.
"""

import shutil

import pytest

from mongo_backup_support import build_dataset, snapshot  # pylint: disable=import-error

TOOLS = shutil.which('mongodump') and shutil.which('mongorestore')


@pytest.mark.skipif(not TOOLS, reason='mongodump not installed')
def test_round_trip_through_mongodump_and_mongorestore(client, make_db, mb):
    names = build_dataset(make_db, big=False)
    before = snapshot(client, names)
    result = mb.dump(databases=names, method='mongodump')
    assert result['backup']['status'] == 'verified'
    assert mb.verify(backup_name='latest')['verified']
    for name in names:
        client.drop_database(name)
    mb.restore(backup_name='latest', method='mongodump', drop=True)
    assert snapshot(client, names) == before
    # and a dump written by mongodump restores through pymongo too (same layout)
    for name in names:
        client.drop_database(name)
    mb.restore(backup_name='latest', drop=True)
    assert snapshot(client, names) == before
