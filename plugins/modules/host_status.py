#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: host_status
short_description: Read-only status of one node - app release and version, PM2 processes, CPU, memory, disks, last backup
version_added: 0.1.0
description:
  - Reads, without changing anything, what an operator's status report needs from one managed node.
  - "Host: CPU use sampled from C(/proc/stat) over O(cpu_sample_seconds), load averages, memory used (like C(free):
    100 - MemAvailable/MemTotal) and the usage of the filesystems holding O(disk_paths) (like C(df)'s Use%)."
  - "App (with O(app_name)): the release the C(current) link points at and its manifest (C(.nodeops-release.json), absent
    for a bootstrap release), the version the running app reports at O(version_url), and its PM2 processes (status,
    restarts, memory, CPU) from one C(pm2 jlist) run as the app user through C(runuser) - the convention of the
    C(nodeops.stack.node) role. The PM2 daemon is never started: when it is not running, that is reported."
  - "Backup (with O(backup_status_path)): the backup role's last-run record (result, started_at, finished_at, verified,
    backup, size_bytes, error) and its age; C(present=false) when there is none."
  - Thresholds are not judged here; the C(nodeops.stack.fleet_report) filter does that on the controller.
  - The app's environment (secrets included) that C(pm2 jlist) prints is never returned.
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.attributes
  - nodeops.stack.attributes.info_module
  - nodeops.stack.attributes.platform
attributes:
  platform:
    platforms: posix
options:
  app_name:
    description:
      - Application name (the C(node_app_name) of the node role). Its PM2 processes are those named O(app_name) or
        C(<app_name>-*). Unset skips the app part.
    type: str
  app_user:
    description: OS user owning the app's PM2 daemon; default O(app_name). Running as root, PM2 is read through C(runuser -u).
    type: str
  pm2_home:
    description: PM2_HOME of that user; default C(~/.pm2) of O(app_user).
    type: path
  pm2_binary:
    description: The pm2 executable; default found on PATH or in C(/usr/local/bin).
    type: path
  app_root:
    description: Root of the release layout; default C(/srv/<app_name>).
    type: path
  current_link:
    description: Link to the live release; default C(<app_root>/current).
    type: path
  version_url:
    description: URL of the app's version endpoint (JSON with a C(version) key), for example C(http://10.0.0.11:3000/version).
    type: str
  backup_status_path:
    description: The backup role's last-run record to read, for example C(/var/lib/nodeops/backup/last-run.json).
    type: path
  disk_paths:
    description: Paths whose filesystems are reported (missing ones are reported with an error).
    type: list
    elements: path
    default: [/]
  cpu_sample_seconds:
    description: Seconds over which CPU use is sampled.
    type: float
    default: 0.5
  timeout:
    description: Seconds the version request and the C(pm2 jlist) run may take each.
    type: float
    default: 10
requirements:
  - Linux (C(/proc)); C(runuser) (util-linux) to read PM2 as another user.
seealso:
  - module: nodeops.stack.pm2_app
  - module: nodeops.stack.app_release
'''

EXAMPLES = r'''
- name: Read the node's status
  become: true
  nodeops.stack.host_status:
    app_name: shop
    version_url: "http://{{ nodeops_node_address }}:3000/version"
    backup_status_path: /var/lib/nodeops/backup/last-run.json
    disk_paths: [/, /srv]
  register: node_status

- name: Fail when an API instance is not online
  ansible.builtin.assert:
    that: node_status.app.processes | rejectattr('status', 'equalto', 'online') | list | length == 0
'''

RETURN = r'''
host:
  description: Resources of the node.
  returned: always
  type: dict
  contains:
    cpus: {description: CPU count, type: int, returned: always}
    cpu_percent: {description: Busy share of all CPUs over the sample (null when unreadable), type: float, returned: always}
    load: {description: "1, 5 and 15 minute load averages", type: list, elements: float, returned: always}
    memory: {description: "C(total_bytes), C(available_bytes), C(percent) used", type: dict, returned: always}
    disks: {description: "Per path C(path), C(total_bytes), C(available_bytes), C(percent) used (or C(error))", type: list, elements: dict,
            returned: always}
  sample:
    cpus: 2
    cpu_percent: 12.5
    load: [0.31, 0.44, 0.52]
    memory: {total_bytes: 4110417920, available_bytes: 3221225472, percent: 21.6}
    disks: [{path: /, total_bytes: 21474836480, available_bytes: 15032385536, percent: 30.0}]
app:
  description: The app's release, running version and PM2 processes; null without O(app_name).
  returned: always
  type: dict
  contains:
    name: {description: O(app_name), type: str, returned: success}
    release_id: {description: Release the current link points at (null when there is none), type: str, returned: success}
    manifest: {description: "C(release_id), C(version), C(git_sha), C(status), C(deployed_at), C(deployed_by) of its manifest; null for
               a release without one", type: dict, returned: success}
    running_version: {description: Version the app reports at O(version_url), type: str, returned: when version_url is set}
    version_error: {description: Why the version could not be read, type: str, returned: when version_url is set}
    processes: {description: "PM2 processes (name, pm_id, pid, status, restarts, unstable_restarts, memory, cpu, uptime_s, exec_mode,
                instances)", type: list, elements: dict, returned: success}
    pm2_error: {description: Why PM2 could not be read (null when it could), type: str, returned: success}
backup:
  description: The last-run record with C(present), the contract fields and C(age_s) (seconds since finished_at); null without O(backup_status_path).
  returned: always
  type: dict
  sample: {present: true, result: success, verified: true, finished_at: 1795000000, age_s: 3600.0, backup: 20261122T020000Z,
           size_bytes: 1048576, error: null, started_at: 1794999900, path: /var/lib/nodeops/backup/last-run.json}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeops.stack.plugins.module_utils.host_status import host_status


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_name=dict(type='str'),
            app_user=dict(type='str'),
            pm2_home=dict(type='path'),
            pm2_binary=dict(type='path'),
            app_root=dict(type='path'),
            current_link=dict(type='path'),
            version_url=dict(type='str'),
            backup_status_path=dict(type='path'),
            disk_paths=dict(type='list', elements='path', default=['/']),
            cpu_sample_seconds=dict(type='float', default=0.5),
            timeout=dict(type='float', default=10),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['cpu_sample_seconds'] < 0 or p['cpu_sample_seconds'] > 60:
        module.fail_json(msg='cpu_sample_seconds: expected 0-60 seconds, got %s' % p['cpu_sample_seconds'])
    if p['timeout'] <= 0:
        module.fail_json(msg='timeout: expected a positive number of seconds, got %s' % p['timeout'])
    module.exit_json(changed=False, **host_status(p, module.run_command))


if __name__ == '__main__':
    main()
