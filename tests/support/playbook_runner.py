"""Run ansible-playbook from a test the same way everywhere: this checkout's
collection, the venv's Python, JSON results whatever ansible.cfg the caller
exported, and module invocations shown (to prove secrets are masked at -vvv)."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(REPO, '.venv', 'bin')
COLLECTIONS = os.path.join(REPO, '.cache', 'collections')


def playbook_env(tmp_path, **extra):
    """Environment for an isolated ansible-playbook run on localhost."""
    env = dict(os.environ,
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               ANSIBLE_HOME=str(tmp_path / 'ansible-home'),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'),
               ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='default',
               ANSIBLE_CALLBACK_RESULT_FORMAT='json',
               ANSIBLE_PYTHON_INTERPRETER=os.path.join(VENV_BIN, 'python'),
               # ansible-core >= 2.21 adds invocation.module_args only on request; older ones always do
               ANSIBLE_INJECT_INVOCATION='true',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_LOCALHOST_WARNING='false')
    env.update(extra)
    return env


def run_playbook(playbook, tmp_path, *args, timeout=300):
    """Run ``ansible-playbook -i localhost, PLAYBOOK ARGS`` in tmp_path; return (returncode, combined output)."""
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', str(playbook)] + list(args),
                          cwd=str(tmp_path), env=playbook_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout.decode('utf-8', 'replace')
