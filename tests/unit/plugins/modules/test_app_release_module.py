"""app_release module: diff, check mode, clear failures."""

import os

import pytest

from ansible_collections.nodeops.stack.plugins.modules import app_release

from module_harness import ModuleFail


def base(tmp_path):
    os.makedirs(tmp_path / 'releases' / 'r1', exist_ok=True)
    return {'releases_dir': str(tmp_path / 'releases'), 'current_link': str(tmp_path / 'current')}


def test_present_then_unchanged_with_diff(run_module, tmp_path):
    args = dict(base(tmp_path), state='present', release_id='r1', version='1.0.0', status='pending', _ansible_diff=True)
    result = run_module(app_release, args)
    assert result['changed'] and result['diff']['before'] == {} and result['diff']['after']['status'] == 'pending'
    assert run_module(app_release, args)['changed'] is False


def test_check_mode_writes_nothing(run_module, tmp_path):
    args = dict(base(tmp_path), state='present', release_id='r1', status='healthy',
                history_file=str(tmp_path / 'h.jsonl'), history_event={'event': 'deployed'})
    result = run_module(app_release, args, check_mode=True)
    assert result['changed'] and not os.listdir(tmp_path / 'releases' / 'r1') and not (tmp_path / 'h.jsonl').exists()


@pytest.mark.parametrize('args, expected', [
    ({'state': 'present'}, 'release_id'),
    ({'state': 'present', 'release_id': '../x'}, 'release_id: expected'),
    ({'state': 'present', 'release_id': 'nope'}, 'does not exist'),
    ({'state': 'pruned', 'keep': 0}, 'keep: expected at least 1'),
    ({'history_event': {'event': 'x'}}, 'history_file'),
])
def test_bad_input(run_module, tmp_path, args, expected):
    with pytest.raises(ModuleFail) as err:
        run_module(app_release, dict(base(tmp_path), **args))
    assert expected in err.value.result['msg']
