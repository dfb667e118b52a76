"""Runs killed with SIGKILL: the backup-set runner mid-dump, and ansible-playbook mid-restore.

(The module's own dump killed halfway is tests/integration/mongo_backup/test_mongo_backup_interrupt.py.)

Pass, runner: no set marked complete, ``latest`` and last-run.json untouched, the next run removes the partial set and
succeeds. Pass, restore: the fault really lands mid-restore (data half restored), every process of the run is gone,
a re-run converges to data equal to the backup (canonical hash of every document, indexes, options) and the backup
itself is untouched (same bytes, verify passes).
"""

import os
import signal
import time

import pytest

from fault_support import (  # pylint: disable=import-error
    alive, descendants, kill_tree, load_collections, output_of, partial_entries, read_json, run_runner, run_set_here, start_runner,
    tree_digest, wait_for_partial_files, wait_gone, write_runner_config,
)
from mongo_backup_support import Ops, snapshot  # pylint: disable=import-error
from playbook_runner import VENV_BIN, playbook_env  # pylint: disable=import-error

import nodeops_backup_set as backup_set  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_manifest import read_latest

DB = 'faults_killed'


def test_runner_killed_mid_dump_leaves_no_set_and_the_next_run_cleans_up(fault_server, client, processes, tmp_path):
    load_collections(client, DB, 8, 250, 2000)
    root, state = str(tmp_path / 'root'), str(tmp_path / 'state')
    sets_dir = os.path.join(root, 'sets')
    config = write_runner_config(tmp_path, root, state, fault_server.uri, [DB])
    first = run_set_here(config)
    assert first['result'] == 'success', first

    proc = start_runner(processes, config)
    assert wait_for_partial_files(sets_dir, 3, proc) is not None, 'the run ended before the kill:\n' + output_of(proc, 60)[1][-3000:]
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    partials = partial_entries(sets_dir)
    assert len(partials) == 1 and not os.path.exists(os.path.join(sets_dir, partials[0], backup_set.SET_MANIFEST))
    assert read_latest(sets_dir) == first['backup']
    assert [(s['name'], s['status']) for s in backup_set.list_sets(sets_dir)] == [(first['backup'], 'verified')]
    # a killed run records nothing: last-run.json keeps the previous success, and the freshness check is what notices
    assert read_json(os.path.join(state, backup_set.LAST_RUN)) == first
    assert backup_set.verify_set(os.path.join(sets_dir, first['backup']))['ok']

    rc, third, out = run_runner(processes, config)  # a process, as the timer starts it after the crash
    assert rc == 0 and third['result'] == 'success', out[-3000:]
    assert partial_entries(sets_dir) == []
    assert read_latest(sets_dir) == third['backup'] != first['backup']
    assert backup_set.verify_set(os.path.join(sets_dir, third['backup']))['ok']


RESTORE_COLLECTIONS, RESTORE_DOCS = 4, 1000
PLAYBOOK = """
- name: Restore a MongoDB backup (fault-injection test)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Restore, dropping each target collection first
      nodeops.stack.mongo_backup:
        mode: restore
        uri: "{uri}"
        backup_dir: "{root}"
        backup_name: base
        drop: true
        parallel: 1
        batch_size: 10
      register: restored

    - name: Verify the backup afterwards
      nodeops.stack.mongo_backup:
        mode: verify
        backup_dir: "{root}"
        backup_name: base
      register: verified

    - name: Everything came back
      ansible.builtin.assert:
        that:
          - restored is changed
          - restored.totals.inserted == {docs}
          - verified.verified
"""


def start_playbook(processes, tmp_path, playbook):
    # remote_tmp in tmp_path: a killed run leaves its AnsiballZ directory there, not in ~/.ansible
    env = playbook_env(tmp_path, ANSIBLE_REMOTE_TMP=str(tmp_path / 'ansible-remote-tmp'))
    return processes.popen([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', str(playbook)], cwd=str(tmp_path), env=env)


def counts(client):
    """Documents in c00 and c01 (the restore goes through the collections in order)."""
    return [client[DB]['c%02d' % i].estimated_document_count() for i in range(2)]


class RestoreCase(object):
    """A verified backup ``base`` of 4 collections, the data damaged since, and the restore playbook."""

    def __init__(self, server, client, tmp_path):
        load_collections(client, DB, RESTORE_COLLECTIONS, RESTORE_DOCS, 1000)
        self.root = str(tmp_path / 'backups')
        self.ops = Ops(server.uri, self.root)
        self.ops.dump(backup_name='base', databases=[DB], compression_level=1)
        self.expected = snapshot(client, [DB])
        self.backup_digest = tree_digest(os.path.join(self.root, 'base'))
        client[DB].drop_collection('c00')  # the damage the restore repairs
        client[DB].c02.update_many({}, {'$set': {'damaged': True}})
        self.playbook = tmp_path / 'restore.yml'
        self.playbook.write_text(PLAYBOOK.format(uri=server.uri, root=self.root, docs=RESTORE_COLLECTIONS * RESTORE_DOCS))


@pytest.fixture
def restore_case(fault_server, client, tmp_path):
    return RestoreCase(fault_server, client, tmp_path)


def at_mid_restore(proc, client, act):
    """Once c00 is restored and c01 dropped and being refilled, ``act(proc)``; returns what it returns (None: missed)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        now = counts(client)
        if now[0] == RESTORE_DOCS and now[1] < RESTORE_DOCS:
            return act(proc)
        time.sleep(0.005)
    return None


def test_ansible_playbook_killed_mid_restore_then_rerun_converges(restore_case, client, processes, tmp_path):
    case = restore_case
    proc = start_playbook(processes, tmp_path, case.playbook)
    killed = at_mid_restore(proc, client, kill_tree)
    assert killed, 'the restore was not caught halfway:\n' + output_of(proc, 60)[1][-3000:]
    processes.adopt(killed)
    assert len(killed) >= 3, killed  # ansible-playbook, its worker and the module process at least
    assert wait_gone(killed) == [], 'processes of the killed run still alive'
    assert proc.wait(timeout=10) == -signal.SIGKILL
    half = counts(client)
    assert half[0] == RESTORE_DOCS and half[1] < RESTORE_DOCS, half  # really killed mid-restore
    assert snapshot(client, [DB]) != case.expected

    rc, out, _waited = output_of(start_playbook(processes, tmp_path, case.playbook), timeout=300)
    assert rc == 0 and 'failed=0' in out, out[-4000:]
    assert snapshot(client, [DB]) == case.expected  # documents (canonical hash), indexes and options
    assert tree_digest(os.path.join(case.root, 'base')) == case.backup_digest
    assert case.ops.verify(backup_name='base')['verified']


def test_killing_only_ansible_playbook_leaves_the_restore_running(restore_case, client, processes, tmp_path):
    """ansible-core's workers run in sessions of their own: SIGKILL to ansible-playbook alone does not stop the module.

    The orphaned restore runs to its end (so a re-run must wait for it, or kill it, rather than race it); that a re-run
    after a dead restore converges is the test above.
    """
    def kill_playbook_only(proc):
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        return below

    proc = start_playbook(processes, tmp_path, restore_case.playbook)
    orphans = at_mid_restore(proc, client, kill_playbook_only)
    assert orphans, 'the restore was not caught halfway:\n' + output_of(proc, 60)[1][-3000:]
    processes.adopt(orphans)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert any(alive(pid) for pid in orphans), 'the module died with ansible-playbook'
    assert wait_gone(orphans, timeout=120) == [], 'the orphaned restore did not end'
    assert snapshot(client, [DB]) == restore_case.expected  # the orphan finished the restore
