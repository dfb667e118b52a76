# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue between AnsibleModule and the health gate (validation, secrets, exit/fail)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.nodeops.stack.plugins.module_utils.health_policy import HealthGate, Policy, PolicyError
from ansible_collections.nodeops.stack.plugins.module_utils.probes import (
    ProbeConfigError, build_probes, missing_libraries, probe_secrets,
)


class HealthGateModule(AnsibleModule):
    """AnsibleModule that knows the secrets embedded in ``probes`` before anything is logged or returned.

    URL passwords, sensitive header values and passwords are added to ``no_log_values`` right
    after argument validation, before AnsibleModule logs its invocation to syslog/journald, so
    they are masked there as well as in the result and its ``invocation.module_args``.
    """

    def _register_probe_secrets(self):
        params = getattr(self, 'params', None) or {}
        self.no_log_values.update(probe_secrets(params.get('probes'), params.get('sensitive_headers') or ()))

    def _log_invocation(self):
        self._register_probe_secrets()
        super(HealthGateModule, self)._log_invocation()


def run_module(module, clock=time.monotonic, sleep=time.sleep, wallclock=time.time):
    """Validate, probe, and exit_json/fail_json with the gate result; never returns."""
    params = module.params
    sensitive_headers = params.get('sensitive_headers') or ()
    module.no_log_values.update(probe_secrets(params['probes'], sensitive_headers))

    def run_command(args, **kwargs):
        # a probe that cannot run its command fails; it must not end the module (handle_exceptions=False)
        kwargs.setdefault('handle_exceptions', False)
        return module.run_command(args, **kwargs)

    try:
        probes = build_probes(params['probes'], sensitive_headers, run_command=run_command)
        policy = Policy.from_params(params)
    except (ProbeConfigError, PolicyError) as exc:
        module.fail_json(msg=str(exc), passed=False, attempts=0)
    for lib, tb in missing_libraries(probes):
        users = ', '.join("'%s'" % p.name for p in probes if {'redis': 'redis', 'mongodb': 'pymongo'}.get(p.kind) == lib)
        module.fail_json(msg=missing_required_lib(lib) + ' (needed by probe %s)' % users, exception=tb, passed=False, attempts=0)
    result = HealthGate(probes, policy, clock=clock, sleep=sleep, wallclock=wallclock).run()
    msg = result.pop('msg')
    if result['passed']:
        module.exit_json(changed=False, msg=msg, **result)
    module.fail_json(changed=False, msg=msg, **result)
