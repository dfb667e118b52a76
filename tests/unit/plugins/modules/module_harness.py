"""Run a module's main() in-process: exit_json/fail_json become exceptions carrying the result.

Shared by every module test here, e.g.::

    from module_harness import AnsibleFailJson, run_main
    failed, result = run_main(health_gate, {'probes': [...]})
"""

import contextlib
import json

import pytest

from ansible.module_utils import basic

try:  # ansible-core >= 2.19
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # pragma: no cover - older ansible-core
    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        old = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': args or {}}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = old


class AnsibleExitJson(Exception):
    """exit_json was called; ``args[0]`` / ``result`` hold its arguments."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


class AnsibleFailJson(AnsibleExitJson):
    """fail_json was called."""


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs.update(failed=True, msg=msg)
    raise AnsibleFailJson(kwargs)


@pytest.fixture(autouse=True)
def patched_module(monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)


def run_main(module, args):
    """Run ``module.main()`` with ``args``; return (failed, result)."""
    with patch_module_args(args):
        with pytest.raises(AnsibleExitJson) as info:
            module.main()
    return info.type is AnsibleFailJson, info.value.result


@pytest.fixture
def run_module():
    """``run_module(module, args, check_mode=False) -> result``; raises AnsibleFailJson on fail_json."""

    def run(module, args, check_mode=False):
        args = dict(args)
        if check_mode:
            args['_ansible_check_mode'] = True
        failed, result = run_main(module, args)
        if failed:
            raise AnsibleFailJson(result)
        return result

    return run


# Older names used by some tests.
ModuleExit = AnsibleExitJson
ModuleFail = AnsibleFailJson
