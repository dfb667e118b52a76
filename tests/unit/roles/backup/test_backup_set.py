"""backup_set without servers: set manifest and verification, listing, freshness, retention, failure records, webhook."""

import http.server
import json
import os
import tarfile
import threading
import time

import sys

import pytest

# The runner's library ships as a role file (it runs on the backup host outside Ansible).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..', 'roles', 'backup', 'files'))
import nodeops_backup_set as bs  # noqa: E402  pylint: disable=wrong-import-position,import-error


def make_set(sets_dir, name, started, files=2, verified=True):
    """A set with an uploads tarball and an RDB file (no Mongo part), written with the module's own writers."""
    path = os.path.join(sets_dir, name)
    os.makedirs(os.path.join(path, 'uploads'))
    os.makedirs(os.path.join(path, 'redis'))
    with open(os.path.join(path, bs.RDB_FILE), 'wb') as fh:
        fh.write(b'REDIS0011' + os.urandom(64))
    src = os.path.join(sets_dir, '.src-' + name)
    os.makedirs(src)
    for i in range(files):
        with open(os.path.join(src, 'f%d.txt' % i), 'w') as fh:
            fh.write('file %d' % i)
    with tarfile.open(os.path.join(path, bs.UPLOADS_FILE), 'w:gz') as tar:
        for i in range(files):
            tar.add(os.path.join(src, 'f%d.txt' % i), arcname='f%d.txt' % i)
    parts = {'redis': bs.file_entry(path, bs.RDB_FILE), 'uploads': bs.file_entry(path, bs.UPLOADS_FILE, files=files)}
    bs.write_set_manifest(path, {'format': bs.SET_FORMAT, 'name': name, 'started_at': started, 'finished_at': started + 5,
                                 'size_bytes': 1, 'parts': parts, 'verified': verified})
    return path


def test_verify_set_accepts_an_intact_set_and_names_each_damage(tmp_path):
    path = make_set(str(tmp_path), 's1', 1000)
    assert bs.verify_set(path)['ok']
    with open(os.path.join(path, bs.RDB_FILE), 'r+b') as fh:
        fh.seek(20)
        fh.write(b'X')
    result = bs.verify_set(path)
    assert not result['ok'] and result['errors'] == ['redis: redis/dump.rdb sha256 does not match the set manifest']
    os.unlink(os.path.join(path, bs.UPLOADS_FILE))
    assert 'uploads: uploads/uploads.tar.gz is missing' in bs.verify_set(path)['errors']


def test_a_modified_manifest_is_detected(tmp_path):
    path = make_set(str(tmp_path), 's1', 1000)
    manifest = json.load(open(os.path.join(path, bs.SET_MANIFEST)))
    manifest['parts']['uploads']['files'] = 99
    with open(os.path.join(path, bs.SET_MANIFEST), 'w') as fh:
        json.dump(manifest, fh)
    result = bs.verify_set(path)
    assert not result['ok'] and any('was modified' in e for e in result['errors'])


def test_list_sets_and_freshness_only_count_verified_sets(tmp_path):
    sets = str(tmp_path / 'sets')
    make_set(sets, 'old', 1000)
    make_set(sets, 'newer-unverified', 5000, verified=False)
    listed = bs.list_sets(sets)
    assert [(s['name'], s['status']) for s in listed] == [('newer-unverified', 'corrupt'), ('old', 'verified')]
    config = {'root': str(tmp_path)}
    fresh = bs.freshness(config, 1.0, now=1005 + 1800)
    assert fresh == {'fresh': True, 'newest': 'old', 'age_hours': 0.5, 'max_age_hours': 1.0, 'verified_sets': 1}
    stale = bs.freshness(config, 1.0, now=1005 + 7200)
    assert stale['fresh'] is False and stale['age_hours'] == 2.0
    assert bs.freshness({'root': str(tmp_path / 'none')}, 1.0)['fresh'] is False


def test_prune_sets_keeps_the_policy_and_the_latest(tmp_path):
    sets = str(tmp_path)
    day = 86400
    base = int(time.time()) - 40 * day
    for i in range(10):
        make_set(sets, 'd%02d' % i, base + i * day)
    bs.set_latest(sets, 'd09')
    result = bs.prune_sets({'retention': {'daily': 3, 'weekly': 0, 'monthly': 0, 'yearly': 0}}, sets)
    assert sorted(result['kept']) == ['d07', 'd08', 'd09']
    assert sorted(os.listdir(sets)) == sorted(['d07', 'd08', 'd09', 'latest'] + ['.src-d%02d' % i for i in range(10)])


def test_digest_is_order_independent_and_content_sensitive():
    docs = [b'\x05\x00\x00\x00\x00', b'\x0c\x00\x00\x00\x10a\x00\x01\x00\x00\x00\x00']
    assert bs._digest_of(docs) == bs._digest_of(list(reversed(docs)))
    assert bs._digest_of(docs) != bs._digest_of(docs[:1])


class _Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802
        self.received.append(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_run_records_the_failure_masks_secrets_and_calls_the_webhook(tmp_path):
    server = http.server.HTTPServer(('127.0.0.1', 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        'root': str(tmp_path / 'root'), 'state_dir': str(tmp_path / 'state'),
        'mongo': {'enabled': True, 'uri': 'mongodb://u:s3cret-pass@127.0.0.1:1/?directConnection=true', 'connect_timeout': 0.5},
        'webhook': {'url': 'http://127.0.0.1:%d/hook' % server.server_port},
    }
    try:
        record = bs.run_set(config)
    finally:
        server.shutdown()
    assert record['result'] == 'failed' and record['verified'] is False and record['size_bytes'] == 0
    assert 'cannot reach MongoDB' in record['error'] and 's3cret-pass' not in record['error']
    on_disk = json.load(open(str(tmp_path / 'state' / bs.LAST_RUN)))
    assert on_disk['result'] == 'failed' and isinstance(on_disk['started_at'], int) and on_disk['finished_at'] >= on_disk['started_at']
    assert os.listdir(str(tmp_path / 'root' / 'sets')) == ['.lock']
    assert len(_Hook.received) == 1 and _Hook.received[0]['kind'] == 'backup'
    assert 's3cret-pass' not in json.dumps(_Hook.received)
    assert bs.main(['--config', _write(tmp_path, config), 'freshness', '--max-age-hours', '1']) == 1


def _write(tmp_path, config):
    path = str(tmp_path / 'config.json')
    with open(path, 'w') as fh:
        json.dump(config, fh)
    return path


@pytest.mark.parametrize('host, user, path, expected', [
    ('', 'app', '/srv/u/', '/srv/u/'),
    ('backup.example', 'app', '/srv/u/', 'app@backup.example:/srv/u/'),
    ('h', '', '/x', 'h:/x'),
])
def test_remote_spec(host, user, path, expected):
    assert bs.remote_spec(host, user, path) == expected
