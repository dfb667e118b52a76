"""Every environment's inventory parses, has the expected groups, and production refuses placeholder secrets."""

import json
import os
import subprocess

import pytest

from playbook_runner import REPO, VENV_BIN, playbook_env  # pylint: disable=import-error

ENVIRONMENTS = ['lab', 'development', 'staging', 'production']


def inventory(env_name):
    return os.path.join(REPO, 'inventories', env_name)


@pytest.mark.parametrize('env_name', ENVIRONMENTS)
def test_inventory_graph_and_groups(env_name, tmp_path):
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-inventory'), '-i', inventory(env_name), '--graph'],
                          env=playbook_env(tmp_path), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '@app:' in proc.stdout and '@lb:' in proc.stdout and '@redis:' in proc.stdout and '@backup:' in proc.stdout
    listing = json.loads(subprocess.run([os.path.join(VENV_BIN, 'ansible-inventory'), '-i', inventory(env_name), '--list'],
                                        env=playbook_env(tmp_path), capture_output=True, text=True, check=True).stdout)
    for host, hostvars in listing['_meta']['hostvars'].items():
        assert hostvars.get('nodeops_node_address'), '%s has no nodeops_node_address' % host


def run_role_validation(env_name, tmp_path, group, role, *extra):
    """Include ROLE's validate tasks on the first host of GROUP of an environment's inventory (locally)."""
    playbook = tmp_path / 'validate.yml'
    playbook.write_text('''---
- hosts: %s
  gather_facts: false
  connection: local
  tasks:
    - ansible.builtin.include_role:
        name: nodeops.stack.%s
        tasks_from: validate
''' % (group, role))
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory(env_name), str(playbook), '--limit', group + '[0]'] + list(extra),
                          cwd=str(tmp_path), env=playbook_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def run_validation(env_name, tmp_path, *extra):
    return run_role_validation(env_name, tmp_path, 'app', 'node', *extra)


def test_production_refuses_placeholder_secrets(tmp_path):
    returncode, out = run_validation('production', tmp_path)
    assert returncode != 0
    assert 'refuses placeholder secrets' in out and 'SESSION_SECRET' in out
    assert 'change-me' not in out.split('refuses placeholder secrets', 1)[1].split('\n', 1)[0]


def test_production_accepts_real_secrets(tmp_path):
    returncode, out = run_validation('production', tmp_path, '-e', 'vault_shop_session_secret=Xq7-real-looking-secret-0123456789')
    assert returncode == 0, out[-3000:]


def test_staging_allows_placeholders(tmp_path):
    returncode, out = run_validation('staging', tmp_path)
    assert returncode == 0, out[-3000:]


def run_hardening_validation(env_name, tmp_path, *extra):
    returncode, out = run_role_validation(env_name, tmp_path, 'lb', 'hardening', *extra)
    return returncode, ' '.join(out.split())


@pytest.mark.parametrize('env_name', ['development', 'staging', 'production'])
def test_example_inventories_ssh_allow_list_placeholder_is_refused_until_replaced(env_name, tmp_path):
    returncode, out = run_hardening_validation(env_name, tmp_path)
    assert returncode != 0
    assert "hardening_ssh_allow_from holds ['198.51.100.0/24'], documentation addresses" in out, out[-3000:]
    returncode, out = run_hardening_validation(env_name, tmp_path, '-e', '{"hardening_ssh_allow_from": ["10.20.0.5/32", "2001:db9::/48"]}')
    assert returncode == 0, out[-3000:]


def test_lab_inventory_ssh_allow_list_passes(tmp_path):
    returncode, out = run_hardening_validation('lab', tmp_path)
    assert returncode == 0, out[-3000:]
