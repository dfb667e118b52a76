"""End to end: nodeops.stack.mongo_backup through a real ansible-playbook run (localhost, connection local) at -vvv.

dump (and its check mode), verify, list, restore (dry run and real, renamed), prune (check mode), and a failing dump whose
URI carries a password: the password never appears in the output, not even in the -vvv invocation.
"""

import socket

from mongo_backup_support import collection_hashes  # pylint: disable=import-error
from playbook_runner import run_playbook  # pylint: disable=import-error

URI_PASSWORD = 'Uri-Passw0rd-in-userinfo'
OPT_PASSWORD = 'Opt-Passw0rd-option'

PLAYBOOK = """
- name: mongo_backup end to end
  hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    nodeops.stack.mongo_backup:
      uri: "{uri}"
      backup_dir: "{root}"
  tasks:
    - name: Dump in check mode writes nothing
      nodeops.stack.mongo_backup:
        mode: dump
        databases: ["{db}"]
      check_mode: true
      register: planned

    - name: Dump
      nodeops.stack.mongo_backup:
        mode: dump
        databases: ["{db}"]
        backup_name: nightly-%Y%m%dT%H%M%SZ
        prune: true
      register: dumped

    - name: Verify
      nodeops.stack.mongo_backup:
        mode: verify
        backup_name: latest
      register: verified

    - name: List
      nodeops.stack.mongo_backup:
        mode: list
      register: listed

    - name: Restore dry run
      nodeops.stack.mongo_backup:
        mode: restore
        backup_name: latest
        ns_from: ["{db}.*"]
        ns_to: ["{target}.*"]
        dry_run: true
      register: dry

    - name: Restore into a renamed database
      nodeops.stack.mongo_backup:
        mode: restore
        backup_name: "{{{{ dumped.backup.name }}}}"
        ns_from: ["{db}.*"]
        ns_to: ["{target}.*"]
        drop: true
      register: restored

    - name: Prune preview
      nodeops.stack.mongo_backup:
        mode: prune
        keep_daily: 1
      check_mode: true
      register: prune_preview

    - name: Dump from a server that is not there, password in the URI
      nodeops.stack.mongo_backup:
        mode: dump
        uri: "mongodb://backup:{uri_password}@127.0.0.1:{closed}/?authSource=admin"
        connect_timeout: 1
      register: unreachable
      ignore_errors: true

    - name: Dump from a server that is not there, password as an option
      nodeops.stack.mongo_backup:
        mode: dump
        uri: "mongodb://127.0.0.1:{closed}/"
        username: backup
        password: "{opt_password}"
        connect_timeout: 1
      register: unreachable_opt
      ignore_errors: true

    - name: Check results
      ansible.builtin.assert:
        that:
          - planned is changed
          - planned.collections | length == 2
          - dumped is changed
          - dumped.backup.status == 'verified'
          - dumped.backup.name is match('nightly-')
          - dumped.backup.documents == 120
          - dumped.latest == dumped.backup.name
          - dumped.retention.kept | length == 1
          - verified is not changed
          - verified.verified
          - verified.backups[0].files_checked == 3
          - listed.backups | length == 1
          - listed.backups[0].status == 'verified'
          - listed.backups[0].latest
          - dry is not changed
          - dry.namespaces | map(attribute='target') | list == ['{target}.items', '{target}.recent']
          - restored is changed
          - restored.totals.inserted == 120
          - prune_preview.pruned == []
          - unreachable is failed
          - "'cannot reach MongoDB at mongodb://backup:********@127.0.0.1:{closed}/?authSource=admin within 1s' in unreachable.msg"
          - unreachable_opt is failed
          - "'within 1s (connect_timeout)' in unreachable_opt.msg"
"""


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_playbook_end_to_end_and_no_password_in_vvv_output(client, make_db, mongo_uri, tmp_path):
    db = make_db('_pb')
    db.items.insert_many([{'_id': i, 'name': 'item %d' % i} for i in range(120)])
    db.items.create_index('name', unique=True)
    db.command('create', 'recent', viewOn='items', pipeline=[{'$match': {'_id': {'$gte': 100}}}])
    target = make_db('_pb_restored')
    playbook = tmp_path / 'backup.yml'
    playbook.write_text(PLAYBOOK.format(uri=mongo_uri, root=str(tmp_path / 'backups'), db=db.name, target=target.name,
                                        uri_password=URI_PASSWORD, opt_password=OPT_PASSWORD, closed=closed_port()))
    returncode, out = run_playbook(playbook, tmp_path, '-vvv', timeout=300)
    assert returncode == 0, out[-6000:]
    assert 'failed=0' in out and 'ignored=2' in out, out[-3000:]
    assert '"module_args"' in out and '********' in out
    for secret in (URI_PASSWORD, OPT_PASSWORD):
        assert secret not in out, 'secret %r leaked into ansible-playbook -vvv output' % secret
    real_password = _uri_password(mongo_uri)
    if real_password:
        assert real_password not in out
    assert collection_hashes(client, target.name, 'items') == collection_hashes(client, db.name, 'items')
    assert [i['name'] for i in client[target.name].items.list_indexes()] == ['_id_', 'name_1']


def _uri_password(uri):
    from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import uri_secrets  # pylint: disable=import-outside-toplevel
    secrets = uri_secrets(uri)
    return max(secrets, key=len) if secrets else None
