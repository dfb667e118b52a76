"""host_status module: read-only (changed=False, also in check mode), argument checks with clear messages."""

import json

import pytest

from ansible_collections.nodeops.stack.plugins.modules import host_status
from module_harness import AnsibleFailJson


def test_reports_host_and_backup_without_changing_anything(run_module, tmp_path):
    record = tmp_path / 'last-run.json'
    record.write_text(json.dumps({'result': 'success', 'finished_at': 1, 'verified': True}))
    for check_mode in (False, True):
        result = run_module(host_status, {'disk_paths': [str(tmp_path)], 'cpu_sample_seconds': 0.05,
                                          'backup_status_path': str(record)}, check_mode=check_mode)
        assert result['changed'] is False
        assert result['app'] is None
        assert result['backup']['present'] is True and result['backup']['age_s'] > 0
        assert 0 <= result['host']['cpu_percent'] <= 100 and len(result['host']['load']) == 3
        assert 0 < result['host']['memory']['percent'] < 100


def test_app_without_a_release_or_pm2_is_reported_not_failed(run_module, tmp_path):
    result = run_module(host_status, {'app_name': 'shop', 'app_user': 'no-such-user-nodeops', 'app_root': str(tmp_path),
                                      'disk_paths': [str(tmp_path)], 'cpu_sample_seconds': 0})
    assert result['app']['release_id'] is None and result['app']['processes'] == []
    assert 'no-such-user-nodeops' in result['app']['pm2_error']


@pytest.mark.parametrize('args, message', [
    ({'cpu_sample_seconds': -1}, 'cpu_sample_seconds: expected 0-60 seconds, got -1'),
    ({'timeout': 0}, 'timeout: expected a positive number of seconds, got 0'),
])
def test_bad_arguments_fail_with_a_message(run_module, args, message):
    with pytest.raises(AnsibleFailJson) as info:
        run_module(host_status, args)
    assert message in info.value.result['msg']
