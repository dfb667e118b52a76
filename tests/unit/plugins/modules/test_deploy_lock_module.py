"""deploy_lock module: check mode touches nothing, clear messages for bad input and a busy lock."""

import os

import pytest

from ansible_collections.nodeops.stack.plugins.modules import deploy_lock

from module_harness import ModuleFail


def test_acquire_release_cycle(run_module, tmp_path):
    path = str(tmp_path / 'shop.lock')
    result = run_module(deploy_lock, {'path': path, 'run_id': 'r1', 'owner': 'alice'})
    assert result['changed'] and result['action'] == 'take' and result['holder']['owner'] == 'alice'
    assert run_module(deploy_lock, {'path': path, 'run_id': 'r1'})['changed'] is False
    result = run_module(deploy_lock, {'path': path, 'state': 'released', 'run_id': 'r1'})
    assert result['changed'] and not os.path.exists(path)


def test_check_mode_predicts_without_touching(run_module, tmp_path):
    path = str(tmp_path / 'shop.lock')
    result = run_module(deploy_lock, {'path': path, 'run_id': 'r1'}, check_mode=True)
    assert result['changed'] and result['action'] == 'take' and not os.path.exists(path)
    run_module(deploy_lock, {'path': path, 'run_id': 'r1'})
    result = run_module(deploy_lock, {'path': path, 'state': 'released', 'run_id': 'r1'}, check_mode=True)
    assert result['changed'] and os.path.exists(path)


def test_busy_lock_fails_naming_the_holder(run_module, tmp_path):
    path = str(tmp_path / 'shop.lock')
    run_module(deploy_lock, {'path': path, 'run_id': 'r1', 'owner': 'alice'})
    with pytest.raises(ModuleFail) as err:
        run_module(deploy_lock, {'path': path, 'run_id': 'r2', 'owner': 'bob'})
    assert 'alice' in err.value.result['msg'] and 'rolling_update_release_lock' in err.value.result['msg']
    with pytest.raises(ModuleFail):
        run_module(deploy_lock, {'path': path, 'run_id': 'r2'}, check_mode=True)


@pytest.mark.parametrize('args, expected', [
    ({'path': '/tmp/x.lock'}, 'run_id'),
    ({'path': '/tmp/x.lock', 'run_id': 'r', 'stale_after': 0}, 'stale_after: expected a number of seconds >= 1, got 0'),
    ({'path': '/tmp/x.lock', 'state': 'released'}, 'needs run_id'),
    ({'path': '/tmp/x.lock', 'state': 'held'}, 'state'),
])
def test_bad_input(run_module, args, expected):
    with pytest.raises(ModuleFail) as err:
        run_module(deploy_lock, args)
    assert expected in err.value.result['msg']
