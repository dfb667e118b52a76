"""backup_set without servers: set manifest and verification, listing, freshness, retention, failure records, webhook."""

import datetime
import http.server
import io
import json
import os
import shutil
import subprocess
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


def test_scheduled_commands_write_private_files_whatever_the_callers_umask(tmp_path):
    # The timer's units set UMask=0077; the cron fallback and by-hand runs come with the caller's umask (022 here).
    config = {'root': str(tmp_path / 'root'), 'state_dir': str(tmp_path / 'state'),
              'mongo': {'enabled': True, 'uri': 'mongodb://127.0.0.1:1/?directConnection=true', 'connect_timeout': 0.5}}
    previous = os.umask(0o022)
    try:
        assert bs.main(['--config', _write(tmp_path, config), 'run']) == 1
    finally:
        os.umask(previous)
    written = [os.path.join(d, f) for d, _dirs, files in os.walk(str(tmp_path / 'state')) for f in files]
    assert written and all(os.stat(p).st_mode & 0o077 == 0 for p in written), [(p, oct(os.stat(p).st_mode)) for p in written]


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


# ----------------------------------------------------------------------------- encryption at rest (age)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'plugins', 'module_utils'))
from test_mongo_manifest import make_backup  # noqa: E402  pylint: disable=wrong-import-position,import-error

# age is a Debian package the backup host gets from the role; these tests need it on the test machine too.
needs_age = pytest.mark.skipif(shutil.which('age') is None or shutil.which('age-keygen') is None,
                               reason='needs the age and age-keygen binaries (Debian package age)')
MARKER = b'plaintext-marker-4f1c9e'


def age_key():
    out = subprocess.run(['age-keygen'], capture_output=True, check=True).stdout
    public = [line.split(': ', 1)[1] for line in out.decode().splitlines() if line.startswith('# public key: ')][0]
    return out, public


def make_full_set(sets_dir, name):
    """A plaintext set with all three parts: a real mongo_backup dump, an RDB file and an uploads tarball, each holding MARKER."""
    path = make_set(sets_dir, name, 1000)
    with open(os.path.join(path, bs.RDB_FILE), 'wb') as fh:
        fh.write(b'REDIS0011' + MARKER + os.urandom(32))
    dump = make_backup(os.path.join(path, 'mongo'), name, compression='none')
    with open(os.path.join(dump, 'app', 'items.bson'), 'rb') as fh:
        assert b'xxxx' in fh.read()  # the dump is plaintext BSON before encryption
    manifest = bs.load_set(path)[0]
    mongo_manifest, digest, problems = bs.load_manifest(dump)
    assert not problems
    manifest['parts']['redis'] = bs.file_entry(path, bs.RDB_FILE)
    manifest['parts']['mongo'] = {'backup': name, 'dir': 'mongo', 'manifest_sha256': digest,
                                  'documents': mongo_manifest['totals']['documents'], 'size_bytes': 1}
    bs.write_set_manifest(path, manifest)
    assert bs.verify_set(path)['ok']
    return path, manifest


def all_bytes(path):
    data = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), 'rb') as fh:
                data[os.path.relpath(os.path.join(dirpath, name), path)] = fh.read()
    return data


@needs_age
def test_an_encrypted_set_holds_only_ciphertext_verifies_without_the_key_and_decrypts_byte_for_byte(tmp_path):
    identity, public = age_key()
    path, manifest = make_full_set(str(tmp_path / 'sets'), 's1')
    before = all_bytes(path)
    assert any(MARKER in data for data in before.values())
    bs.encrypt_set(path, manifest, [public])
    bs.write_set_manifest(path, manifest)

    after = all_bytes(path)
    assert sorted(after) == ['mongo/s1.tar.age', 'redis/dump.rdb.age', 'set.json', 'set.json.sha256', 'uploads/uploads.tar.gz.age']
    assert not [rel for rel, data in after.items() if MARKER in data or b'xxxx' in data]
    assert all(after[rel].startswith(bs.AGE_HEADER) for rel in after if rel.endswith('.age'))
    assert manifest['encryption'] == {'method': 'age', 'recipients': [public]}
    assert manifest['parts']['redis']['plain']['sha256'] == bs.sha256_bytes(before['redis/dump.rdb'])
    assert bs.verify_set(path)['ok']  # ciphertext hashes and headers, no key needed

    dest = str(tmp_path / 'plain')
    plain = bs.decrypt_set(path, dest, identity)
    assert 'encryption' not in plain and plain['parts']['redis']['file'] == bs.RDB_FILE
    assert bs.verify_set(dest)['ok']  # full plaintext verification, Mongo dump included
    restored = all_bytes(dest)
    for rel in ('redis/dump.rdb', 'uploads/uploads.tar.gz', 'mongo/s1/app/items.bson', 'mongo/s1/manifest.json'):
        assert restored[rel] == before[rel], rel
    assert oct(os.stat(dest).st_mode & 0o777) == '0o700'


@needs_age
def test_the_decrypt_command_reads_the_identity_from_stdin_and_answers_in_json(tmp_path, monkeypatch, capsys):
    identity, public = age_key()
    path, manifest = make_full_set(str(tmp_path / 'sets'), 's1')
    bs.encrypt_set(path, manifest, [public])
    bs.write_set_manifest(path, manifest)
    config = _write(tmp_path, {'root': str(tmp_path)})
    monkeypatch.setattr(sys, 'stdin', io.TextIOWrapper(io.BytesIO(identity)))
    assert bs.main(['--config', config, 'decrypt', '--set', 's1', '--dest', str(tmp_path / 'plain')]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['ok'] and out['manifest']['parts']['mongo']['backup'] == 's1' and 'AGE-SECRET-KEY' not in json.dumps(out)
    monkeypatch.setattr(sys, 'stdin', io.TextIOWrapper(io.BytesIO(b'not a key')))
    assert bs.main(['--config', config, 'decrypt', '--set', 's1', '--dest', str(tmp_path / 'plain2')]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out['ok'] is False and 'age decrypt' in out['error'] and not (tmp_path / 'plain2').exists()


@needs_age
def test_decryption_with_the_wrong_key_or_damaged_ciphertext_fails_and_leaves_nothing(tmp_path):
    _identity, public = age_key()
    other = age_key()[0]
    path, manifest = make_full_set(str(tmp_path / 'sets'), 's1')
    bs.encrypt_set(path, manifest, [public])
    bs.write_set_manifest(path, manifest)
    dest = str(tmp_path / 'plain')
    with pytest.raises(bs.BackupSetError, match='age decrypt of .* failed'):
        bs.decrypt_set(path, dest, other)
    assert not os.path.exists(dest)
    with open(os.path.join(path, 'redis', 'dump.rdb.age'), 'r+b') as fh:
        fh.seek(200)
        fh.write(b'\x00')
    result = bs.verify_set(path)
    assert result['errors'] == ['redis: redis/dump.rdb.age sha256 does not match the set manifest']
    with pytest.raises(bs.BackupSetError, match='does not verify'):
        bs.decrypt_set(path, dest, other)
    assert not os.path.exists(dest)


@needs_age
def test_a_run_with_encryption_enabled_but_no_recipient_fails_and_the_restore_test_refuses_encrypted_sets(tmp_path, monkeypatch):
    path, manifest = make_full_set(str(tmp_path / 'sets'), 's1')
    with pytest.raises(bs.BackupSetError, match='backup_encryption_recipients'):
        bs.encrypt_set(path, manifest, [])
    with pytest.raises(bs.BackupSetError, match='age encrypt of .*/mongo/s1 failed'):  # a malformed recipient
        bs.encrypt_set(path, manifest, ['age1notakey'])
    assert not os.path.exists(os.path.join(path, 'mongo', 's1.tar.age')) and os.path.isdir(os.path.join(path, 'mongo', 's1'))
    monkeypatch.setattr(bs, 'AGE_BINARY', '/nonexistent/age')
    with pytest.raises(bs.BackupSetError, match='install the Debian package age'):
        bs.age_encrypt(os.path.join(path, bs.RDB_FILE), str(tmp_path / 'x.age'), ['age1' + 'q' * 58])
    monkeypatch.setattr(bs, 'AGE_BINARY', 'age')
    path, manifest = make_full_set(str(tmp_path / 'root2' / 'sets'), 's1')
    _identity, public = age_key()
    bs.encrypt_set(path, manifest, [public])
    bs.write_set_manifest(path, manifest)
    record = bs.restore_test({'root': str(tmp_path / 'root2'), 'state_dir': str(tmp_path / 'state')}, 's1')
    assert record['result'] == 'failed' and 'is encrypted' in record['error'], record


def test_a_decrypted_dump_with_entries_outside_the_dump_is_refused(tmp_path):
    evil = tmp_path / 'evil.tar'
    (tmp_path / 'x').write_text('x')
    with tarfile.open(str(evil), 'w') as tar:
        tar.add(str(tmp_path / 'x'), arcname='s1/../../escape')
    with pytest.raises(bs.BackupSetError, match='unexpected entry'):
        bs._extract_dump(str(evil), str(tmp_path / 'out'), 's1')
    assert not (tmp_path / 'escape').exists()


# ----------------------------------------------------------------------------- off-site listing (rsync --list-only)

LISTING = """drwx------          4,096 2026/11/22 22:09:14 .
drwxr-xr-x          4,096 2026/01/01 01:00:00 20260101T000000Z
-rw-r--r--              2 2026/11/22 22:09:02 20260101T000000Z/set.json
drwxr-xr-x          4,096 2026/01/03 01:00:00 20260103T000000Z
-rw-r--r--              2 2026/11/22 22:09:04 20260103T000000Z/set.json
drwx------          4,096 2026/11/22 22:09:03 .~tmp~
drwxr-xr-x          4,096 2026/11/22 22:09:11 not a set
"""


def test_parse_offsite_listing_keeps_only_directories_with_a_set_manifest():
    utc = datetime.timezone.utc
    assert bs.parse_offsite_listing(LISTING) == [
        ('20260101T000000Z', datetime.datetime(2026, 1, 1, 1, 0, tzinfo=utc)),
        ('20260103T000000Z', datetime.datetime(2026, 1, 3, 1, 0, tzinfo=utc)),
    ]


# ----------------------------------------------------------------------------- a record that cannot be written

def test_a_run_whose_record_cannot_be_written_exits_non_zero_and_still_alerts(tmp_path, monkeypatch, capsys):
    """The state directory's disk is full: no traceback, the run's JSON on stdout with record_error, the webhook called."""
    server = http.server.HTTPServer(('127.0.0.1', 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    del _Hook.received[:]
    config = {'root': str(tmp_path / 'root'), 'state_dir': str(tmp_path / 'state'), 'mongo': {'enabled': False},
              'webhook': {'url': 'http://127.0.0.1:%d/hook' % server.server_port}}

    def full_disk(config, name, record):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(bs, 'write_record', full_disk)
    try:
        rc = bs.main(['--config', _write(tmp_path, config), 'run'])
    finally:
        server.shutdown()
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out['result'] == 'success' and out['verified'] is True  # the set itself is fine
    assert out['record_error'] == 'could not record the run in %s: No space left on device' % config['state_dir']
    assert len(_Hook.received) == 1 and _Hook.received[0]['record']['record_error'] == out['record_error']
