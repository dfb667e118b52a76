"""Run a module's main() in-process with given arguments; exit_json/fail_json become exceptions."""

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """exit_json was called; ``result`` holds its arguments."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


class ModuleFail(ModuleExit):
    """fail_json was called."""


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise ModuleExit(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs.update(failed=True, msg=msg)
    raise ModuleFail(kwargs)


@pytest.fixture
def run_module(monkeypatch):
    """``run_module(module, args, check_mode=False) -> result``; raises ModuleFail on fail_json."""
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)

    def run(module, args, check_mode=False):
        args = dict(args)
        if check_mode:
            args['_ansible_check_mode'] = True
        with patch_module_args(args):
            try:
                module.main()
            except ModuleFail:
                raise
            except ModuleExit as exc:
                return exc.result
        raise AssertionError('%s.main() returned without exit_json/fail_json' % module.__name__)

    return run
