"""backup role entry points that need no lab node, run with ansible-playbook against localhost.

- S3 copy (amazon.aws.s3_object): its variable validation, and the upload plan check mode renders (bucket, keys,
  order: set.json last). No S3 endpoint exists here, so nothing is ever uploaded: in check mode the role skips the
  s3_object task (which would still need the bucket) and only computes the plan.
- Encryption settings: recipients must be age or SSH public keys, and the weekly restore test must be off.
- Dump compression: checked when the role runs, and zstd adds zstandard to the venv's requirements.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *([os.pardir] * 4)))
AGE_PUBLIC = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: nodeops.stack.backup
        tasks_from: %(entry)s
        public: true
    - ansible.builtin.copy:
        content: "{{ %(show)s | default({}) | to_json }}"
        dest: %(out)s
        mode: "0600"
      check_mode: false
"""


def run(tmp_path, entry, extra, check=False, show='backup_s3_plan'):
    """Run the entry point; return its rc, its output on one line, and the variable `show` afterwards (None on failure)."""
    play = tmp_path / 'play.yml'
    out = tmp_path / 'out.json'
    play.write_text(PLAY % {'entry': entry, 'out': out, 'show': show})
    varfile = tmp_path / 'vars.json'
    varfile.write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.cache', 'collections'), ANSIBLE_LOCALHOST_WARNING='0')
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', str(play), '-e', '@%s' % varfile,
            '-e', 'ansible_python_interpreter=%s' % sys.executable]
    proc = subprocess.run(argv + (['--check'] if check else []), capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
                          check=False)
    output = ' '.join((proc.stdout + proc.stderr).split())
    plan = json.loads(out.read_text()) if out.exists() else None
    return proc.returncode, output, plan


def make_sets(root):
    name = '20261122T020000Z'
    set_dir = root / 'sets' / name
    for rel in ('mongo/%s/shop/orders.bson.gz' % name, 'mongo/%s/manifest.json' % name, 'redis/dump.rdb',
                'uploads/uploads.tar.gz', 'set.json', 'set.json.sha256'):
        (set_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (set_dir / rel).write_text(rel)
    (root / 'sets' / 'latest').symlink_to(name)
    return name


def test_check_mode_renders_the_upload_plan_with_the_manifest_last_and_uploads_nothing(tmp_path):
    name = make_sets(tmp_path)
    rc, out, plan = run(tmp_path, 's3', {'backup_root': str(tmp_path), 'backup_s3_bucket': 'nodeops-backups.example',
                                         'backup_s3_prefix': 'lab/data1', 'backup_s3_region': 'eu-central-1',
                                         'backup_s3_access_key': 'AKIAEXAMPLE', 'backup_s3_secret_key': 'not-a-real-secret'},
                        check=True)
    assert rc == 0, out
    assert plan == {
        'set': name, 'bucket': 'nodeops-backups.example', 'region': 'eu-central-1', 'endpoint_url': '',
        'storage_class': 'STANDARD_IA', 'encryption_mode': 'AES256', 'dir': '%s/sets/%s' % (tmp_path, name),
        'prefix': 'lab/data1/%s/' % name,
        'files': ['mongo/%s/manifest.json' % name, 'mongo/%s/shop/orders.bson.gz' % name, 'redis/dump.rdb',
                  'uploads/uploads.tar.gz', 'set.json.sha256', 'set.json'],
    }
    assert "Upload the set's files with amazon.aws.s3_object" in out and 'not-a-real-secret' not in out


@pytest.mark.parametrize('extra, expected', [
    ({'backup_s3_bucket': 'Bad_Bucket'}, "backup_s3_bucket to be a bucket name (3-63 lowercase letters, digits, dots, hyphens; got 'Bad_Bucket')"),
    ({'backup_s3_bucket': 'ok-bucket', 'backup_s3_prefix': '/abs'}, "backup_s3_prefix without a leading or double slash (got '/abs')"),
    ({'backup_s3_bucket': 'ok-bucket', 'backup_s3_access_key': 'AKIAEXAMPLE'}, 'got access key set, secret key empty'),
    ({'backup_s3_bucket': 'ok-bucket', 'backup_s3_endpoint_url': 'minio:9000'}, "backup_s3_endpoint_url empty or http(s):// (got 'minio:9000')"),
])
def test_s3_settings_are_refused_with_a_message_naming_the_variable(tmp_path, extra, expected):
    make_sets(tmp_path)
    rc, out, plan = run(tmp_path, 's3', dict(extra, backup_root=str(tmp_path)), check=True)
    assert rc != 0 and expected in out, out
    assert plan is None


def test_s3_refuses_a_missing_set(tmp_path):
    rc, out, _plan = run(tmp_path, 's3', {'backup_root': str(tmp_path), 'backup_s3_bucket': 'ok-bucket', 'backup_s3_set': 'nope'},
                         check=True)
    assert rc != 0 and "no set 'nope' with files under %s/sets" % tmp_path in out, out


@pytest.mark.parametrize('extra, ok, expected', [
    ({'backup_encryption_recipients': []}, False, 'needs backup_encryption_recipients'),
    ({'backup_encryption_recipients': ['AGE-SECRET-KEY-1QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L']}, False,
     'got 1 entries; not a public key: ["AGE-SECRET-KE..."]'),
    ({'backup_encryption_recipients': [AGE_PUBLIC]}, False, 'and backup_restore_test_enabled: false (got True)'),
    ({'backup_encryption_recipients': [AGE_PUBLIC, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample'],
      'backup_restore_test_enabled': False}, True, ''),
])
def test_encryption_settings(tmp_path, extra, ok, expected):
    base = {'backup_mongo_uri': 'mongodb://127.0.0.1:1/', 'backup_encryption_enabled': True}
    rc, out, _plan = run(tmp_path, 'validate', dict(base, **extra))
    assert (rc == 0) is ok and expected in out, out
    assert 'QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L' not in out


@pytest.mark.parametrize('options, expected', [
    ({}, ['pymongo>=4.6,<5', 'redis>=5,<8']),
    ({'compression': 'none'}, ['pymongo>=4.6,<5', 'redis>=5,<8']),
    ({'compression': 'zstd'}, ['pymongo>=4.6,<5', 'redis>=5,<8', 'zstandard>=0.21']),
])
def test_zstd_dumps_add_zstandard_to_the_venv(tmp_path, options, expected):
    extra = {'backup_mongo_uri': 'mongodb://127.0.0.1:1/', 'backup_mongo_options': options}
    rc, out, requirements = run(tmp_path, 'validate', extra, show='__backup_pip_requirements')
    assert rc == 0 and requirements == expected, out


def test_an_unknown_compression_is_refused_naming_the_variable(tmp_path):
    extra = {'backup_mongo_uri': 'mongodb://127.0.0.1:1/', 'backup_mongo_options': {'compression': 'lz4'}}
    rc, out, _requirements = run(tmp_path, 'validate', extra, show='__backup_pip_requirements')
    assert rc != 0 and 'backup_mongo_options.compression must be gzip, zstd or none (got "lz4")' in out, out
