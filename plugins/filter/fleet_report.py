# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters fleet_report and fleet_report_table (documented in fleet_report.yml / fleet_report_table.yml)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeops.stack.plugins.module_utils.fleet_report import FleetReportError, build_report, render_table


def fleet_report(nodes, thresholds=None, groups=None, now=None):
    try:
        return build_report(nodes, thresholds, groups, now)
    except FleetReportError as exc:
        raise AnsibleFilterError('fleet_report: %s' % exc)


def fleet_report_table(report):
    if not isinstance(report, dict) or 'nodes' not in report or 'summary' not in report:
        raise AnsibleFilterError('fleet_report_table: expected the output of the fleet_report filter, got %s' % type(report).__name__)
    return render_table(report)


class FilterModule(object):
    def filters(self):
        return {'fleet_report': fleet_report, 'fleet_report_table': fleet_report_table}
