#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: nginx_config
short_description: Validate, promote and reload nginx configuration files in one safe step
version_added: 0.1.0
description:
  - The engine of the nodeops.stack.nginx_tls role's entry points (main, upstream_state, maintenance), usable on its own.
  - Copies the live configuration directory, writes the candidate O(files) into the copy and runs C(nginx -t) on the
    complete result. Nothing live changes unless nginx accepts it; only then are the files that differ replaced
    (each atomically, mode 0644 root:root).
  - Optionally, in the same call, under the host's change lock (O(lock_path)) - refusing when a file changed since the
    caller read it (O(expect_sha256)) - reloads nginx gracefully and waits until only new workers run (O(reload)),
    then waits until nginx holds no established connection to the servers being drained (O(drain)).
  - With O(read) and nothing else it only returns the content of matching files.
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.attributes
  - nodeops.stack.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Stages and validates the candidate files and reports which would change; takes no lock, promotes, reloads or waits for nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  conf_dir:
    description: The live nginx configuration directory (holds C(nginx.conf)).
    type: path
    default: /etc/nginx
  work_dir:
    description: Where staging copies are made (created with mode 0700); each is removed before the module returns.
    type: path
    default: /var/lib/nodeops-nginx
  binary:
    description: The nginx binary.
    type: path
    default: /usr/sbin/nginx
  pid_file:
    description: nginx's pid file.
    type: path
    default: /run/nginx.pid
  files:
    description: Candidate files, as a mapping of paths relative to O(conf_dir) to their full content.
    type: dict
    default: {}
  read:
    description: Glob patterns relative to O(conf_dir); the content of every matching file is returned in RV(files_read) (read before any change).
    type: list
    elements: str
    default: []
  expect_sha256:
    description:
      - Compare-and-swap. Mapping of paths relative to O(conf_dir) to the sha256 the caller read (empty string for a file
        that did not exist). Checked under the lock; any mismatch refuses the change.
    type: dict
    default: {}
  reload:
    description:
      - V(changed) reloads when a promoted file is not a C(.json) state record; V(always) reloads in any case (starts nginx
        when stopped); V(never) leaves it to the caller (for example a handler).
      - Before reloading, the live configuration is checked with C(nginx -t).
    type: str
    choices: [changed, always, never]
    default: changed
  reload_timeout:
    description: Seconds to wait for the old workers to be replaced after a reload.
    type: int
    default: 30
  drain:
    description: Servers (C(name), C(address), C(port)) to wait for until nginx holds no established connection to them.
    type: list
    elements: dict
    default: []
  drain_timeout:
    description: Seconds to wait for O(drain).
    type: int
    default: 60
  drain_poll_interval:
    description: Seconds between connection checks.
    type: int
    default: 1
  drain_timeout_action:
    description: V(fail) fails the task when a server still has connections after O(drain_timeout); V(warn) only warns.
    type: str
    choices: [fail, warn]
    default: fail
  lock_path:
    description: The host's change lock (a directory created atomically). Held for the whole call. Omit to take no lock.
    type: path
  lock_owner:
    description: Name recorded in the lock, so a later run can break it once it knows this run is dead.
    type: str
    default: nginx_tls
  lock_break_owners:
    description: Owners whose lock may be broken at once (runs the caller has proved dead).
    type: list
    elements: str
    default: []
  lock_stale_after:
    description: A lock older than this many seconds is broken.
    type: int
    default: 900
'''

EXAMPLES = r'''
- name: Drain app2 on the load balancer (normally through nginx_tls's upstream_state entry point)
  nodeops.stack.nginx_config:
    files:
      nodeops/upstream-app.conf: "{{ rendered_upstream }}"
      nodeops/state/upstream-app.json: "{{ rendered_state }}"
    expect_sha256:
      nodeops/state/upstream-app.json: "{{ state_sha256_read_before }}"
    lock_path: /run/nodeops-nginx-tls.lock
    drain:
      - {name: app2, address: 10.0.0.12, port: 3000}
    drain_timeout: 60

- name: Validate the live configuration and reload, waiting for the new workers
  nodeops.stack.nginx_config:
    reload: always
'''

RETURN = r'''
promoted:
  description: Paths (relative to O(conf_dir)) that were (check mode - would be) replaced.
  returned: always
  type: list
  elements: str
reloaded:
  description: Whether nginx was reloaded (or started).
  returned: always
  type: bool
drain:
  description: Per drained server - C(server), C(address), C(timed_out), C(connections) left, C(waited_s), C(error).
  returned: always
  type: list
  elements: dict
lock:
  description: How the lock was taken (V(taken), or which lock was broken and why); empty without a lock.
  returned: always
  type: str
files_read:
  description: Content of the files matched by O(read), by path relative to O(conf_dir).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeops.stack.plugins.module_utils.nginx_config import (
    HostLock, Nginx, NginxConfigError, apply_change, read_files)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            conf_dir=dict(type='path', default='/etc/nginx'),
            work_dir=dict(type='path', default='/var/lib/nodeops-nginx'),
            binary=dict(type='path', default='/usr/sbin/nginx'),
            pid_file=dict(type='path', default='/run/nginx.pid'),
            files=dict(type='dict', default={}),
            read=dict(type='list', elements='str', default=[]),
            expect_sha256=dict(type='dict', default={}),
            reload=dict(type='str', choices=['changed', 'always', 'never'], default='changed'),
            reload_timeout=dict(type='int', default=30),
            drain=dict(type='list', elements='dict', default=[]),
            drain_timeout=dict(type='int', default=60),
            drain_poll_interval=dict(type='int', default=1),
            drain_timeout_action=dict(type='str', choices=['fail', 'warn'], default='fail'),
            lock_path=dict(type='path'),
            lock_owner=dict(type='str', default='nginx_tls'),
            lock_break_owners=dict(type='list', elements='str', default=[]),
            lock_stale_after=dict(type='int', default=900),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for name in ('reload_timeout', 'drain_timeout', 'drain_poll_interval', 'lock_stale_after'):
        if p[name] < 1:
            module.fail_json(msg='%s: expected a number of seconds >= 1, got %d' % (name, p[name]))
    for index, server in enumerate(p['drain']):
        missing = [key for key in ('name', 'address', 'port') if key not in server]
        if missing:
            module.fail_json(msg='drain[%d]: expected name, address and port, missing %s (got %r)' % (index, ', '.join(missing), server))
    for name in ('files', 'expect_sha256'):
        bad = sorted(rel for rel, value in p[name].items() if not isinstance(value, str))
        if bad:
            module.fail_json(msg='%s: expected text values, got non-text for %s' % (name, ', '.join(bad)))
    if not p['files'] and not p['drain'] and p['reload'] != 'always':
        module.exit_json(changed=False, promoted=[], reloaded=False, drain=[], lock='',
                         files_read=read_files(p['conf_dir'], p['read']))

    def run(argv):
        return module.run_command(argv)

    nginx = Nginx(run, conf_dir=p['conf_dir'], work_dir=p['work_dir'], binary=p['binary'], pid_file=p['pid_file'])
    lock = HostLock(p['lock_path'], p['lock_owner'], p['lock_break_owners'], p['lock_stale_after']) if p['lock_path'] else None
    files_read = read_files(p['conf_dir'], p['read'])
    try:
        result = apply_change(nginx, files=p['files'], expect=p['expect_sha256'], lock=lock, reload_mode=p['reload'],
                              drain=p['drain'], drain_timeout=p['drain_timeout'], drain_poll_interval=p['drain_poll_interval'],
                              reload_timeout=p['reload_timeout'], check_mode=module.check_mode, want_diff=module._diff)
    except NginxConfigError as exc:
        module.fail_json(msg=str(exc), changed=exc.changed, **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg='nginx_config on %s: %s' % (p['conf_dir'], exc))
    result['files_read'] = files_read
    timed_out = [d for d in result['drain'] if d['timed_out']]
    if timed_out:
        message = ('Not drained within %d s (nginx still holds connections): %s. The server stays out of rotation; raise '
                   'nginx_tls_drain_timeout, set nginx_tls_worker_shutdown_timeout, or use nginx_tls_drain_timeout_action=warn.'
                   % (p['drain_timeout'], timed_out))
        if p['drain_timeout_action'] == 'fail':
            module.fail_json(msg=message, **result)
        module.warn(message)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
