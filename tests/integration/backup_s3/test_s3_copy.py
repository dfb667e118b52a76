"""The backup role's S3 copy (entry point `s3`, amazon.aws.s3_object) against an S3 API server on loopback.

No S3 service is reachable from these machines, so the endpoint is moto's S3 server (`moto_server`, from PyPI), a
stand-in that speaks the S3 REST API: bucket, object, server-side-encryption and storage-class headers, ETags.
What this proves: the role drives the real amazon.aws module and boto3 end to end, uploads every file of the set
byte for byte under <prefix>/<set>/, sends the manifest last and not at all when a file was refused (through a proxy
that refuses one object), asks for SSE and the storage class, uploads only what differs on a second run, fails
clearly on a missing bucket, and never prints the secret key (even at -vvv).
What it cannot prove: AWS's own behaviour (IAM policies, KMS keys, regions) - see roles/backup/README.md.
"""

import hashlib
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from playbook_runner import VENV_BIN, run_playbook  # pylint: disable=import-error

boto3 = pytest.importorskip('boto3', reason='boto3 comes with moto in requirements/dev.txt')

ACCESS_KEY = 'AKIALABONLY0000TEST'
SECRET_KEY = 'lab-only-s3-secret-4f1d9c2b7e'
BUCKET = 'nodeops-lab-backups'
SET_NAME = '20261122T020000Z'

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: nodeops.stack.backup
        tasks_from: s3
"""


@pytest.fixture
def s3_endpoint(tmp_path):
    """moto's S3 server on a free loopback port; its request log is kept to check the upload order. Killed at teardown."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / 'moto.log', 'wb')  # pylint: disable=consider-using-with
    proc = subprocess.Popen([os.path.join(VENV_BIN, 'moto_server'), '-H', '127.0.0.1', '-p', str(port)],  # pylint: disable=consider-using-with
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    url = 'http://127.0.0.1:%d' % port
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + '/', timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError('moto_server did not start: %s' % (tmp_path / 'moto.log').read_text())
                time.sleep(0.2)
        yield url, tmp_path / 'moto.log'
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


class _RefusingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to the S3 server, except a PUT of the refused key: 403 AccessDenied, as S3 answers."""
    protocol_version = 'HTTP/1.1'
    upstream = None
    refused = None

    def _body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            raw = b''
            while True:  # kept chunked: forwarded as it came
                line = self.rfile.readline()
                size = int(line.split(b';')[0], 16)
                raw += line + self.rfile.read(size + 2)
                if size == 0:
                    return raw
        return self.rfile.read(int(self.headers.get('Content-Length', 0)))

    def _relay(self):
        body = self._body()
        if self.command == 'PUT' and self.path.split('?')[0].endswith('/' + self.refused):
            error = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
            self.send_response(403)
            self.send_header('Content-Type', 'application/xml')
            self.send_header('Content-Length', str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ('expect', 'connection')}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ('transfer-encoding', 'connection', 'content-length', 'server', 'date'):
                self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _relay

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


@pytest.fixture
def refusing_proxy(s3_endpoint):
    """(proxy url, S3 server url): the proxy refuses PUTs of redis/dump.rdb. Shut down at teardown."""
    url = s3_endpoint[0]
    handler = type('Refusing', (_RefusingProxy,), {'upstream': ('127.0.0.1', int(url.rsplit(':', 1)[1])), 'refused': 'redis/dump.rdb'})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield 'http://127.0.0.1:%d' % server.server_port, url
    finally:
        server.shutdown()
        server.server_close()


def client(url):
    return boto3.client('s3', endpoint_url=url, region_name='us-east-1', aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


def make_set(root):
    """A set directory like the runner writes (random bytes, so a wrong copy cannot match), and `latest` naming it."""
    files = {'mongo/%s/shop/orders.bson.gz' % SET_NAME: os.urandom(300000), 'mongo/%s/manifest.json' % SET_NAME: b'{"ok": 1}',
             'redis/dump.rdb': os.urandom(5000), 'uploads/uploads.tar.gz': os.urandom(70000),
             'set.json': b'{"name": "%s"}' % SET_NAME.encode(), 'set.json.sha256': b'0' * 64}
    for rel, data in files.items():
        path = root / 'sets' / SET_NAME / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / 'sets' / 'latest').symlink_to(SET_NAME)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def upload(tmp_path, url, *args, **overrides):
    """Run the s3 entry point on localhost with the checkout's venv as the backup venv (it has boto3)."""
    install_dir = tmp_path / 'install'
    (install_dir / 'venv' / 'bin').mkdir(parents=True, exist_ok=True)
    python = install_dir / 'venv' / 'bin' / 'python'
    python.write_text('#!/bin/sh\nexec %s "$@"\n' % os.path.join(VENV_BIN, 'python'))
    python.chmod(0o755)
    variables = {'backup_root': str(tmp_path), 'backup_install_dir': str(install_dir), 'backup_s3_bucket': BUCKET,
                 'backup_s3_prefix': 'lab/data1', 'backup_s3_region': 'us-east-1', 'backup_s3_endpoint_url': url,
                 'backup_s3_access_key': ACCESS_KEY, 'backup_s3_secret_key': SECRET_KEY}
    variables.update(overrides)
    (tmp_path / 'vars.json').write_text(json.dumps(variables))
    (tmp_path / 'play.yml').write_text(PLAY)
    return run_playbook(tmp_path / 'play.yml', tmp_path, '-e', '@vars.json', *args)


def changed_count(output):
    match = re.search(r'^localhost\s+:\s+ok=\d+\s+changed=(\d+)', output, re.M)
    assert match, output[-3000:]
    return int(match.group(1))


def test_every_file_of_the_set_is_uploaded_byte_for_byte_with_the_manifest_last(tmp_path, s3_endpoint):
    url, moto_log = s3_endpoint
    s3 = client(url)
    s3.create_bucket(Bucket=BUCKET)
    local = make_set(tmp_path)

    rc, out = upload(tmp_path, url, '-vvv')
    assert rc == 0, out[-4000:]
    assert SECRET_KEY not in out
    prefix = 'lab/data1/%s/' % SET_NAME
    listed = s3.list_objects_v2(Bucket=BUCKET)['Contents']
    assert sorted(obj['Key'] for obj in listed) == sorted(prefix + rel for rel in local)
    for rel, digest in local.items():
        obj = s3.get_object(Bucket=BUCKET, Key=prefix + rel)
        assert hashlib.sha256(obj['Body'].read()).hexdigest() == digest, rel
        assert obj['ServerSideEncryption'] == 'AES256', rel
        assert obj['StorageClass'] == 'STANDARD_IA', rel
    # the server's own request log: the manifest's sidecar and the manifest are the last two objects written
    # (and no per-object ACL call: objects stay under the bucket's own policy, which may have ACLs disabled)
    puts = re.findall(r'"PUT /%s/(\S+) HTTP' % BUCKET, moto_log.read_text())
    assert len(puts) == len(local) and puts[-2:] == [prefix + 'set.json.sha256', prefix + 'set.json'], puts

    # a second run uploads nothing; a changed file is the only one sent again
    rc, out = upload(tmp_path, url)
    assert rc == 0 and changed_count(out) == 0, out[-3000:]
    (tmp_path / 'sets' / SET_NAME / 'redis' / 'dump.rdb').write_bytes(b'REDIS0011 changed')
    rc, out = upload(tmp_path, url)
    assert rc == 0 and changed_count(out) == 1, out[-3000:]
    body = s3.get_object(Bucket=BUCKET, Key=prefix + 'redis/dump.rdb')['Body'].read()
    assert body == b'REDIS0011 changed'


def test_a_missing_bucket_fails_the_copy_without_printing_the_secret(tmp_path, s3_endpoint):
    url, _log = s3_endpoint
    make_set(tmp_path)
    rc, out = upload(tmp_path, url, '-vvv', backup_s3_bucket='no-such-bucket')
    assert rc != 0
    assert re.search(r'NoSuchBucket|bucket.{0,40}(does not exist|not found)', out, re.I | re.S), out[-3000:]
    assert SECRET_KEY not in out
    assert client(url).list_buckets().get('Buckets', []) == []  # the copy never creates a bucket


def test_a_refused_file_fails_the_copy_and_the_manifest_is_never_sent(tmp_path, refusing_proxy):
    proxy, url = refusing_proxy
    s3 = client(url)
    s3.create_bucket(Bucket=BUCKET)
    local = make_set(tmp_path)
    prefix = 'lab/data1/%s/' % SET_NAME

    rc, out = upload(tmp_path, proxy)
    assert rc != 0 and 'AccessDenied' in out, out[-3000:]
    keys = sorted(obj['Key'] for obj in s3.list_objects_v2(Bucket=BUCKET).get('Contents', []))
    # every other file went up (the loop goes on), but neither the manifest nor its sidecar: the copy is not complete
    assert keys == sorted(prefix + rel for rel in local if rel != 'redis/dump.rdb' and not rel.startswith('set.json')), keys

    # once the store accepts it again, a re-run completes the copy
    rc, out = upload(tmp_path, url)
    assert rc == 0, out[-3000:]
    keys = sorted(obj['Key'] for obj in s3.list_objects_v2(Bucket=BUCKET)['Contents'])
    assert keys == sorted(prefix + rel for rel in local)
