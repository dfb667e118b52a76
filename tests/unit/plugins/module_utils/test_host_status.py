"""host_status readers: /proc parsing, df-like disk use, backup record, release, version probe, PM2 as the app user."""

import collections
import io
import json
import os
import pathlib
import pwd

import pytest

from ansible_collections.nodeops.stack.plugins.module_utils import host_status as hs
from ansible_collections.nodeops.stack.plugins.module_utils.releases import MANIFEST_NAME

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / 'fixtures' / 'pm2'
StatVfs = collections.namedtuple('StatVfs', 'f_blocks f_frsize f_bfree f_bavail')


def test_loadavg_and_meminfo(tmp_path):
    (tmp_path / 'loadavg').write_text('0.52 0.58 0.59 2/713 12345\n')
    (tmp_path / 'meminfo').write_text('MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     250000 kB\n'
                                      'HugePages_Total:       0\n')
    assert hs.read_loadavg(str(tmp_path / 'loadavg')) == [0.52, 0.58, 0.59]
    assert hs.read_meminfo(str(tmp_path / 'meminfo')) == {'total_bytes': 1024000000, 'available_bytes': 256000000, 'percent': 75.0}


def test_meminfo_falls_back_to_memfree_without_memavailable(tmp_path):
    (tmp_path / 'meminfo').write_text('MemTotal: 1000 kB\nMemFree: 400 kB\n')
    assert hs.read_meminfo(str(tmp_path / 'meminfo'))['percent'] == 60.0


def test_cpu_times_count_iowait_as_idle(tmp_path):
    # user nice system idle iowait irq softirq steal guest guest_nice
    (tmp_path / 'stat').write_text('cpu  100 0 50 800 50 0 0 0 30 0\ncpu0 1 2 3 4\n')
    assert hs.read_cpu_times(str(tmp_path / 'stat')) == (150, 1000)


def test_cpu_times_refuse_an_unexpected_file(tmp_path):
    (tmp_path / 'stat').write_text('intr 1 2 3\n')
    with pytest.raises(ValueError, match='aggregate cpu line'):
        hs.read_cpu_times(str(tmp_path / 'stat'))


@pytest.mark.parametrize('samples, expected', [
    ([(100, 1000), (190, 1100)], 90.0),   # 90 of 100 jiffies busy
    ([(100, 1000), (100, 1100)], 0.0),    # idle
    ([(100, 1000), (100, 1000)], 0.0),    # no time passed: no division by zero
])
def test_cpu_percent_from_two_samples(samples, expected):
    it = iter(samples)
    slept = []
    assert hs.cpu_percent(0.25, reader=lambda: next(it), sleep=slept.append) == expected
    assert slept == [0.25]


def test_disk_usage_like_df():
    # 1000 blocks of 4 KiB, 300 free, 250 of them available to users (reserved 50): df's Use% = 700 / 950
    usage = hs.disk_usage('/srv', statvfs=lambda _p: StatVfs(1000, 4096, 300, 250))
    assert usage == {'path': '/srv', 'total_bytes': 4096000, 'available_bytes': 1024000, 'percent': 73.7}


def test_host_resources_reports_unreadable_parts_instead_of_failing(tmp_path):
    def broken_statvfs(path):
        if path == '/missing':
            raise FileNotFoundError(2, 'No such file or directory')
        return StatVfs(10, 1024, 5, 5)

    def no_proc():
        raise OSError(2, 'no /proc')

    res = hs.host_resources(['/', '/missing'], 0, cpu_count=lambda: 2, reader=lambda: (1, 2), sleep=lambda _s: None,
                            loadavg=no_proc, meminfo=lambda: {'total_bytes': 1, 'available_bytes': 1, 'percent': 0.0},
                            statvfs=broken_statvfs)
    assert res['cpus'] == 2 and res['load'] is None and 'no /proc' in res['load_error']
    assert res['cpu_percent'] == 0.0
    assert res['disks'][0]['percent'] == 50.0
    assert res['disks'][1] == {'path': '/missing', 'error': '/missing: No such file or directory'}


def test_backup_record_absent(tmp_path):
    assert hs.read_backup_status(str(tmp_path / 'last-run.json')) == {'present': False, 'path': str(tmp_path / 'last-run.json')}


def test_backup_record_fields_and_age(tmp_path):
    path = tmp_path / 'last-run.json'
    record = {'result': 'success', 'started_at': 1000, 'finished_at': 1100, 'verified': True, 'backup': '20261122T020000Z',
              'size_bytes': 42, 'error': None, 'extra': 'ignored'}
    path.write_text(json.dumps(record))
    res = hs.read_backup_status(str(path), now=1100 + 7200)
    assert res['present'] is True and res['age_s'] == 7200.0
    assert {k: res[k] for k in hs.BACKUP_FIELDS} == {k: record[k] for k in hs.BACKUP_FIELDS}
    assert 'extra' not in res


@pytest.mark.parametrize('content, expected', [
    ('{not json', 'is not valid JSON'),
    ('[1, 2]', 'expected a JSON object, got list'),
])
def test_backup_record_unreadable(tmp_path, content, expected):
    path = tmp_path / 'last-run.json'
    path.write_text(content)
    res = hs.read_backup_status(str(path))
    assert res['present'] is True and expected in res['read_error']


def test_backup_record_without_a_numeric_finish_time_has_no_age(tmp_path):
    path = tmp_path / 'last-run.json'
    path.write_text(json.dumps({'result': 'failed', 'finished_at': '2026-11-22', 'error': 'disk full'}))
    res = hs.read_backup_status(str(path), now=5)
    assert res['age_s'] is None and res['error'] == 'disk full'


def test_release_status_with_and_without_manifest(tmp_path):
    releases = tmp_path / 'releases'
    (releases / '1.0.0').mkdir(parents=True)
    (releases / '2.0.0-abc').mkdir()
    current = tmp_path / 'current'
    assert hs.release_status(str(current)) == {'release_id': None, 'manifest': None}
    os.symlink(str(releases / '1.0.0'), str(current))
    assert hs.release_status(str(current)) == {'release_id': '1.0.0', 'manifest': None}   # bootstrap release
    (releases / '2.0.0-abc' / MANIFEST_NAME).write_text(json.dumps({
        'release_id': '2.0.0-abc', 'version': '2.0.0', 'status': 'healthy', 'seq': 2, 'history': [{'status': 'healthy'}]}))
    os.unlink(str(current))
    os.symlink('releases/2.0.0-abc', str(current))
    res = hs.release_status(str(current))
    assert res['release_id'] == '2.0.0-abc'
    assert res['manifest']['version'] == '2.0.0' and res['manifest']['status'] == 'healthy'
    assert 'history' not in res['manifest'] and 'seq' not in res['manifest']


class FakeResponse(io.BytesIO):
    pass


@pytest.mark.parametrize('body, version, error', [
    (b'{"version": "1.0.0", "pid": 1}', '1.0.0', None),
    (b'{"pid": 1}', None, 'no "version" string'),
    (b'<html>', None, 'http://a:3000/version: '),
])
def test_fetch_version(body, version, error):
    got_version, got_error = hs.fetch_version('http://a:3000/version', 2, opener=lambda *_a, **_k: FakeResponse(body))
    assert got_version == version
    assert (got_error is None) if error is None else (error in got_error)


def test_fetch_version_reports_connection_errors():
    def refuse(*_args, **_kwargs):
        raise ConnectionRefusedError(111, 'Connection refused')

    version, error = hs.fetch_version('http://a:3000/version', 2, opener=refuse)
    assert version is None and 'Connection refused' in error


@pytest.fixture
def pm2_env(tmp_path):
    """A pm2 executable, a PM2_HOME whose pid file names a live process, the current user (no runuser)."""
    binary = tmp_path / 'pm2'
    binary.write_text('#!/bin/sh\nexit 0\n')
    binary.chmod(0o755)
    home = tmp_path / 'pm2home'
    home.mkdir()
    (home / 'pm2.pid').write_text(str(os.getpid()))
    return {'binary': str(binary), 'home': str(home), 'user': pwd.getpwuid(os.geteuid()).pw_name}


def fixture_runner(name, calls):
    text = (FIXTURES / name).read_text()

    def run(cmd, **_kwargs):
        calls.append(cmd)
        return 0, 'some notice\n' + text, ''

    return run


def test_pm2_processes_filters_the_app_and_hides_the_environment(pm2_env):
    calls = []
    procs, error = hs.pm2_processes('api', pm2_env['user'], pm2_env['home'], pm2_env['binary'], 5,
                                    fixture_runner('cluster_and_worker_online.json', calls))
    assert error is None
    assert [p['name'] for p in procs] == ['api', 'api']
    assert all(p['status'] == 'online' and p['memory'] > 0 for p in procs)
    assert all('pm2_env' not in p and 'env' not in p for p in procs)
    assert len(calls) == 1 and calls[0][-1] == 'jlist' and 'PM2_HOME=%s' % pm2_env['home'] in calls[0]


def test_pm2_processes_includes_prefixed_names(pm2_env):
    procs, error = hs.pm2_processes('worker', pm2_env['user'], pm2_env['home'], pm2_env['binary'], 5,
                                    fixture_runner('worker_errored.json', []))
    assert error is None and procs[0]['status'] == 'errored' and procs[0]['restarts'] == 2


def test_pm2_processes_never_starts_a_daemon(pm2_env):
    os.unlink(os.path.join(pm2_env['home'], 'pm2.pid'))
    calls = []
    procs, error = hs.pm2_processes('api', pm2_env['user'], pm2_env['home'], pm2_env['binary'], 5,
                                    fixture_runner('cluster_and_worker_online.json', calls))
    assert procs == [] and 'not running' in error and calls == []


def test_pm2_processes_reports_an_unknown_user(pm2_env):
    procs, error = hs.pm2_processes('api', 'no-such-user-nodeops', None, pm2_env['binary'], 5, fixture_runner('api_stopped.json', []))
    assert procs == [] and "'no-such-user-nodeops' was not found" in error


def test_pm2_processes_reports_a_failing_jlist(pm2_env):
    procs, error = hs.pm2_processes('api', pm2_env['user'], pm2_env['home'], pm2_env['binary'], 5,
                                    lambda cmd, **_k: (1, '', 'connect EACCES'))
    assert procs == [] and 'pm2 jlist failed' in error and 'EACCES' in error


def test_host_status_without_app_or_backup(tmp_path):
    params = {'disk_paths': [str(tmp_path)], 'cpu_sample_seconds': 0, 'app_name': None, 'backup_status_path': None, 'timeout': 1}
    res = hs.host_status(params, run_command=None)
    assert res['app'] is None and res['backup'] is None
    assert res['host']['disks'][0]['path'] == str(tmp_path) and 0 <= res['host']['disks'][0]['percent'] <= 100
