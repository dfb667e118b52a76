"""The fleet_report filters: registered, thin over module_utils, errors become AnsibleFilterError."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeops.stack.plugins.filter.fleet_report import FilterModule


@pytest.fixture
def filters():
    return FilterModule().filters()


def test_filters_are_registered(filters):
    assert set(filters) == {'fleet_report', 'fleet_report_table'}


def test_report_and_table(filters):
    nodes = [{'host': 'lb1', 'groups': ['lb'], 'status': {'host': {'cpu_percent': 1.0, 'memory': {'percent': 2.0}, 'disks': []}},
              'certs': [{'path': '/c.crt', 'days_left': 3}]}]
    report = filters['fleet_report'](nodes, {'cert_days': 7}, None, 0)
    assert report['summary']['critical'] == 1
    lines = filters['fleet_report_table'](report)
    assert lines[-1] == '  CRITICAL lb1 [cert] /c.crt expires in 3 days (< 7)'


def test_errors_name_the_filter(filters):
    with pytest.raises(AnsibleFilterError, match="fleet_report: thresholds: unknown key 'x'"):
        filters['fleet_report']([], {'x': 1})
    with pytest.raises(AnsibleFilterError, match='fleet_report_table: expected the output of the fleet_report filter'):
        filters['fleet_report_table']([])
