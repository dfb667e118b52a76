#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: pm2_app
short_description: Manage one PM2 application (config, state, zero-downtime reload) and verify it runs
version_added: 0.1.0
description:
  - Manages the desired state of one PM2 application (O(name)) for one OS user and one PM2_HOME.
  - The configuration comes from an ecosystem definition, inline (O(ecosystem)) or from a JSON or YAML file on the managed node
    (O(ecosystem_file)). The module writes it, with absolute paths and explicit defaults, to a generated ecosystem file
    C(<pm2_home>/nodeops/<name>.ecosystem.json) (mode 0600 in a 0700 directory, owned by the user, since the env holds secrets)
    and runs PM2 from that file.
  - It reads the current state with a single C(pm2 jlist) and compares the configuration PM2 actually runs (C(pm2_env)) with the
    desired one - script path, cwd, args, node_args, exec_mode, number of instances, env values, revision, max_memory_restart,
    wait_ready, listen_timeout, kill_timeout, log paths and the pass-through options. It reports C(changed) only when the
    process set, the configuration or the running state changed.
  - "How drift is applied to a running app (O(update_strategy=graceful)): changes that C(pm2 reload --update-env) really
    applies (env values and new keys, O(revision), args, node_args, max_memory_restart, wait_ready, listen_timeout, kill_timeout,
    pass-through options) are applied by a reload, which in cluster mode replaces the workers one by one without downtime; a
    different number of instances is applied with C(pm2 scale) (a reload never changes it); changes a reload cannot apply
    (script, cwd, exec_mode, interpreter, log files, merge_logs, a removed env key or an unset option) need
    C(pm2 delete) + C(pm2 start), which stops the app briefly. O(update_strategy=recreate) always uses delete + start."
  - After a start, restart, reload or scale, the module verifies the result, because PM2 reports success even when the new
    processes die right away (a PM2 reload kills the old worker even when the new one never became ready). Every instance must
    be C(online), have a new pid (after a restart or reload), be up for at least O(min_uptime) seconds, and keep the same pid and
    restart count for O(stability_window) seconds, all within O(wait_timeout). A restart count that rises, an C(errored)
    instance, or one that exited and stays C(stopped), fails at once. On failure the task fails with the process table and the last O(log_lines) lines
    of the app's error log.
  - Environment values are secret by default. They are never returned, printed in the diff or logged; only the keys are
    shown, and a changed secret value is shown masked with "(changed)" appended. List non-secret keys in O(env_public_keys) to see their
    values.
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.attributes
  - nodeops.stack.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Runs at most one C(pm2 jlist) (none when no PM2 daemon runs for the PM2_HOME, so no daemon is spawned), predicts
        C(changed) and the commands it would run (RV(plan)), and changes nothing.
  diff_mode:
    support: full
    details:
      - The diff shows the configuration PM2 runs and the desired one, with the process status; env values are masked.
  platform:
    platforms: posix
requirements:
  - PM2 and Node.js on the managed node (tested with PM2 6.0.14 and Node.js 24).
  - C(runuser) (util-linux) when the module runs as root with O(user) set.
  - PyYAML on the managed node, only for a YAML O(ecosystem_file).
notes:
  - "States: V(started) starts the app when absent or stopped and applies config drift; V(stopped) stops it (an absent app
    counts as stopped; config drift is reported in RV(drift) but not applied, so that the app does not start); V(absent)
    deletes it from PM2; V(restarted) always restarts (C(pm2 restart), or delete + start when the config changed); V(reloaded)
    always reloads (C(pm2 reload): zero downtime in cluster mode, a restart in fork mode). V(restarted) and V(reloaded) are
    imperative and report C(changed) every time, unless O(only_if_changed=true)."
  - "For a rolling update: O(state=reloaded) with O(only_if_changed=true) and O(revision) set to the release (path, version or
    commit) reloads only when the release or the config changed. With a C(current) symlink the script path stays the same
    across releases, so the revision is what tells them apart."
  - "O(user): when the module runs as that user (C(become_user)), leave O(user) unset or set it to that user. When it runs as root,
    set O(user) and every pm2 command runs as C(runuser -u USER -- timeout ... env -i ... pm2 ...). This avoids C(become_user) to an
    unprivileged user, which needs C(setfacl) (ACLs) on many hosts. Files the module creates are chowned to the user."
  - PM2 commands run with a clean environment (C(env -i) with PATH, HOME, USER, LOGNAME, LANG, LC_ALL, TZ and PM2_HOME), so the
    task's own environment does not leak into the PM2 daemon or the app; give the app what it needs in the ecosystem C(env).
    Each command is bounded by O(command_timeout) through coreutils C(timeout) when it is installed.
  - C(online) means the process runs, not that it serves requests. Verify readiness over HTTP afterwards with
    M(nodeops.stack.health_gate).
  - The module adds two variables to the app env, C(NODEOPS_REVISION) (from O(revision)) and C(NODEOPS_ENV_KEYS) (the managed
    keys, so that a key removed from O(ecosystem) is noticed).
seealso:
  - module: nodeops.stack.health_gate
  - name: PM2 ecosystem file reference
    description: The options of a PM2 application declaration.
    link: https://pm2.keymetrics.io/docs/usage/application-declaration/
options:
  name:
    description:
      - Name of the PM2 application. Starts with a letter or C(_), then letters, digits, C(.), C(_), C(-), C(@) or C(:).
        V(all) is refused (PM2 would act on every app).
    type: str
    required: true
  state:
    description:
      - Desired state; see the notes for what each state does.
    type: str
    choices: [started, stopped, restarted, reloaded, absent]
    default: started
  ecosystem:
    description:
      - The application definition, as in a PM2 ecosystem file. Either one app (a dict whose C(name), if given, equals O(name))
        or a dict with an C(apps) list holding an entry named O(name).
      - "Supported keys: C(script) (required to start; relative to C(cwd)), C(cwd) (default: the directory of an absolute script,
        or of O(ecosystem_file)), C(args) and C(node_args) (list, or a string split like a shell), C(instances) (an integer >= 1;
        V(0) or V(max) for one instance per CPU core; V(-N) for all cores but N, at least 1 - PM2's own rule), C(exec_mode)
        (V(cluster) or V(fork); default V(cluster) when C(instances) is given, else V(fork); fork mode with more than one
        instance runs separate processes, which cannot share a listening port), C(env) (dict; values are turned into
        strings, booleans as V(true)/V(false)), C(max_memory_restart) (bytes, or V(300M), V(1G)), C(wait_ready) (bool, default
        false), C(listen_timeout) (ms, default 3000), C(kill_timeout) (ms, default 1600), C(out_file) and C(error_file)
        (default C(<pm2_home>/logs/<name>-out.log) and C(-error.log)), C(merge_logs) (bool, default true here: one log file
        for all instances), C(interpreter)."
      - "Passed through to PM2 as they are: C(autorestart), C(max_restarts), C(min_uptime) (PM2's own, in ms; not the module's
        O(min_uptime)), C(restart_delay), C(exp_backoff_restart_delay), C(time), C(log_date_format), C(shutdown_with_message),
        C(instance_var), C(treekill), C(stop_exit_codes) (for example V([78]), so that an app refusing an invalid config is
        not restarted in a loop). Any other key is refused with the list of supported keys."
      - Env values are treated as secrets (see O(env_public_keys)); they are masked in the logged and returned invocation.
      - Mutually exclusive with O(ecosystem_file). Needed to start an app PM2 does not know yet; without it the module only acts
        on the app PM2 already runs.
    type: dict
  ecosystem_file:
    description:
      - Path, on the managed node, of a JSON or YAML ecosystem file holding the definition (same content as O(ecosystem)).
        Relative C(cwd) and C(script) resolve against the file's directory. JavaScript ecosystem files are not supported.
      - Mutually exclusive with O(ecosystem).
    type: path
  revision:
    description:
      - Release token (release directory, version or commit) stored in the app env as C(NODEOPS_REVISION). A different value is
        config drift, applied by a reload. Unset means the revision is not managed.
    type: str
  only_if_changed:
    description:
      - With O(state=restarted) or O(state=reloaded), act only when the app is not online or its config (including O(revision))
        drifted; otherwise report C(ok). Ignored by the other states, which are idempotent anyway.
    type: bool
    default: false
  update_strategy:
    description:
      - How config drift is applied to a running app. V(graceful) uses C(pm2 reload <ecosystem> --update-env) and C(pm2 scale)
        where they apply every change, and delete + start only when they cannot (see the description). V(recreate) always uses
        delete + start (the app stops briefly).
    type: str
    choices: [graceful, recreate]
    default: graceful
  user:
    description:
      - OS user that owns the PM2 daemon and the app. Default is the user the module runs as.
      - When it differs from that user the module must run as root, and every pm2 command runs through C(runuser -u USER --).
    type: str
  pm2_home:
    description:
      - PM2_HOME of the daemon. Default C(~USER/.pm2) of O(user) (read from the passwd database, not from C($HOME)).
    type: path
  pm2_binary:
    description:
      - Path of the pm2 executable. Default is C(pm2) on PATH, then C(/usr/local/bin/pm2), then C(/usr/bin/pm2).
      - Its directory is put first on PATH, so that the C(node) installed beside it is used.
    type: path
  env_public_keys:
    description:
      - Env keys whose values are not secret and may be shown in the diff, RV(drift) and RV(ecosystem) (for example C(NODE_ENV),
        C(APP_ENV), C(PORT)). All other values are masked. C(NODEOPS_REVISION) is always shown.
    type: list
    elements: str
    default: []
  verify:
    description:
      - Verify the app after a start, restart, reload or scale (see the description). Turning it off returns as soon as PM2
        returns.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds the verification may take after the pm2 command returned.
    type: float
    default: 60
  min_uptime:
    description:
      - Seconds every instance must have been up for the verification to pass.
    type: float
    default: 2
  stability_window:
    description:
      - Seconds during which the pid and restart count of every instance must stay the same (crash-loop detection).
    type: float
    default: 3
  log_lines:
    description:
      - Number of lines of the app's error log (PM2's C(error_file)) included in the failure message.
    type: int
    default: 30
  command_timeout:
    description:
      - Seconds one pm2 command may run before it is killed (a reload of many instances with O(ecosystem) C(wait_ready) waits
        up to C(listen_timeout) per instance).
    type: float
    default: 300
  save:
    description:
      - Run C(pm2 save --force) after a change, so that C(pm2 resurrect) (the C(pm2-<user>) boot service) restores the new
        process list.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: API in cluster mode, one instance per core, zero-downtime reload on a new release
  nodeops.stack.pm2_app:
    name: api
    state: reloaded
    only_if_changed: true
    revision: "{{ release_id }}"
    user: app
    ecosystem:
      script: server.js
      cwd: /srv/api/current
      instances: max
      exec_mode: cluster
      wait_ready: true
      listen_timeout: 10000
      kill_timeout: 12000
      max_memory_restart: 300M
      env:
        APP_ENV: production
        PORT: 3000
        SESSION_SECRET: "{{ vault_session_secret }}"
    env_public_keys: [APP_ENV, PORT]
    save: true
  become: true

- name: Background worker in fork mode, from an ecosystem file on the node
  nodeops.stack.pm2_app:
    name: worker
    ecosystem_file: /srv/api/current/ecosystem.json
  become: true
  become_user: app

- name: Stop the API (an app PM2 does not know counts as stopped)
  nodeops.stack.pm2_app:
    name: api
    state: stopped
    user: app
  become: true

- name: Remove an app
  nodeops.stack.pm2_app:
    name: old-api
    state: absent
    user: app
  become: true
'''

RETURN = r'''
status:
  description: Status of the app after the run (before it, in check mode or when nothing was done).
  returned: always
  type: str
  sample: online
state:
  description: The requested state.
  returned: always
  type: str
  sample: reloaded
processes:
  description: The app's PM2 processes after the run, sorted by pm_id.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: App name.
      type: str
    pm_id:
      description: PM2 process id.
      type: int
    pid:
      description: OS pid (0 when not running).
      type: int
    status:
      description: PM2 status (online, stopped, errored, launching, ...).
      type: str
    restarts:
      description: PM2 restart count (restarts, reloads and crashes).
      type: int
    unstable_restarts:
      description: Restarts PM2 counted as unstable (the process died before PM2's own min_uptime).
      type: int
    memory:
      description: Resident memory in bytes.
      type: int
    cpu:
      description: CPU usage in percent.
      type: float
    uptime:
      description: Seconds since the process started (0 when not online).
      type: float
    exec_mode:
      description: V(cluster) or V(fork).
      type: str
    instances:
      description: Number of processes of the app.
      type: int
  sample:
    - {name: api, pm_id: 0, pid: 4242, status: online, restarts: 1, unstable_restarts: 0, memory: 61054976, cpu: 0.3,
       uptime: 12.5, exec_mode: cluster, instances: 2}
actions:
  description: The pm2 commands run, in order (no secrets; the env only travels in the generated file).
  returned: always
  type: list
  elements: str
  sample: ["pm2 reload /home/app/.pm2/nodeops/api.ecosystem.json --update-env", "pm2 scale api 3"]
plan:
  description: The decision - steps, whether the result is verified, whether new pids are expected, and why.
  returned: always
  type: dict
  sample: {steps: [[reload_eco], [scale, 3]], verify: true, new_pids: true, reason: config drift}
drift:
  description:
    - Differences between the config PM2 runs and the desired one, with how each is applied (V(reload), V(scale) or V(recreate)).
    - C(key) is a config key or C(env.NAME); secret env values are masked.
  returned: always
  type: list
  elements: dict
  sample: [{key: env.SESSION_SECRET, before: "********", after: "******** (changed)", apply: reload},
           {key: instances, before: 2, after: 3, apply: scale}]
ecosystem:
  description: The app entry of the generated ecosystem file, env values masked (except O(env_public_keys)).
  returned: when O(ecosystem) or O(ecosystem_file) is given
  type: dict
  sample: {name: api, script: /srv/api/current/server.js, cwd: /srv/api/current, exec_mode: cluster, instances: 2,
           env: {APP_ENV: production, SESSION_SECRET: "********", NODEOPS_REVISION: r42, NODEOPS_ENV_KEYS: "********"}}
ecosystem_path:
  description: Path of the generated ecosystem file, when it was written in this run.
  returned: always
  type: str
  sample: /home/app/.pm2/nodeops/api.ecosystem.json
pm2_home:
  description: The PM2_HOME used.
  returned: always
  type: str
  sample: /home/app/.pm2
user:
  description: The OS user PM2 runs as.
  returned: always
  type: str
  sample: app
verification:
  description: Outcome of the verification (passed, reason, message, elapsed seconds, number of polls).
  returned: when a start, restart, reload or scale ran
  type: dict
  sample: {passed: true, reason: ok, message: "2 instance(s) online, up >= 2.0s, no restart for 3.0s", elapsed: 3.3, polls: 14}
error_log:
  description: Error log file(s) read for the failure message.
  returned: on verification failure
  type: list
  elements: str
log_lines:
  description: Last lines of the error log.
  returned: on verification failure
  type: list
  elements: str
'''

from ansible_collections.nodeops.stack.plugins.module_utils.pm2_app import Pm2AppModule, STATES, run_module


def argument_spec():
    return dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='started', choices=list(STATES)),
        ecosystem=dict(type='dict'),
        ecosystem_file=dict(type='path'),
        revision=dict(type='str'),
        only_if_changed=dict(type='bool', default=False),
        update_strategy=dict(type='str', default='graceful', choices=['graceful', 'recreate']),
        user=dict(type='str'),
        pm2_home=dict(type='path'),
        pm2_binary=dict(type='path'),
        env_public_keys=dict(type='list', elements='str', default=[], no_log=False),
        verify=dict(type='bool', default=True),
        wait_timeout=dict(type='float', default=60),
        min_uptime=dict(type='float', default=2),
        stability_window=dict(type='float', default=3),
        log_lines=dict(type='int', default=30),
        command_timeout=dict(type='float', default=300),
        save=dict(type='bool', default=False),
    )


def main():
    # ecosystem and ecosystem_file are mutually exclusive; Pm2App checks it (treating an explicit null as unset).
    module = Pm2AppModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module)


if __name__ == '__main__':
    main()
