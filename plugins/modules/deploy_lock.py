#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: deploy_lock
short_description: Take or release a per-application deploy lock
version_added: 0.1.0
description:
  - Makes sure two deploys of the same application never interleave. The lock is a directory created atomically
    (C(mkdir)); the holder records who, which run, when and from which controller process in C(owner.json).
  - A lock older than O(stale_after) seconds, or whose holder is known to be gone (O(owner_dead)), is taken over;
    otherwise taking it fails with a message naming the holder and how long until the lock goes stale.
  - Re-entrant for the same O(run_id), so a retried task does not deadlock on its own lock.
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.attributes
  - nodeops.stack.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the lock would be taken, broken or refused, without touching it.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description: Lock directory. Its parent is created (mode 0700) when missing.
    type: path
    required: true
  state:
    description:
      - V(acquired) takes the lock (or keeps it, when this run already holds it).
      - V(released) gives it back; releasing a lock held by another run requires O(force).
      - V(query) only reports the holder.
    type: str
    choices: [acquired, released, query]
    default: acquired
  run_id:
    description: Identifier of this run; the same run may acquire again without waiting. Required unless O(state=query).
    type: str
  owner:
    description: Who is deploying (user, AWX job), recorded in the lock.
    type: str
    default: unknown
  controller:
    description: The controller process holding the lock (for example C(host:pid)), recorded so that a later run can tell it is gone.
    type: str
  stale_after:
    description: Seconds after which a held lock is considered abandoned and may be taken over.
    type: int
    default: 1800
  owner_dead:
    description: The caller has established that the current holder's process is gone, so its lock may be taken over at once.
    type: bool
    default: false
  force:
    description: Take or release the lock whoever holds it. For an operator who knows the holder is gone.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Take the deploy lock for shop on the first app node
  nodeops.stack.deploy_lock:
    path: /var/lib/nodeops/locks/shop.lock
    run_id: "{{ rolling_update_run_id }}"
    owner: "{{ lookup('env', 'USER') }}"
    stale_after: 1800
  delegate_to: "{{ groups['app'][0] }}"
  run_once: true

- name: Release it at the end of the run
  nodeops.stack.deploy_lock:
    path: /var/lib/nodeops/locks/shop.lock
    state: released
    run_id: "{{ rolling_update_run_id }}"

- name: Operator override - remove a lock left by a run that is known to be dead
  nodeops.stack.deploy_lock:
    path: /var/lib/nodeops/locks/shop.lock
    state: released
    force: true
'''

RETURN = r'''
holder:
  description: The lock's holder after the task (acquired), before it (released), or now (query); null when free.
  returned: always
  type: dict
  sample: {owner: alice, run_id: 20261122T101500-4242, controller: "ctl1:4242", acquired_at: "2026-11-22T10:15:00Z"}
broken:
  description: The previous holder whose stale or abandoned lock was taken over, if any.
  returned: when state is acquired
  type: dict
action:
  description: What happened or, in check mode, would happen - C(take), C(held), C(break), C(busy), C(release), C(free).
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeops.stack.plugins.module_utils.deploy_lock import DeployLock, LockError, read_owner


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            state=dict(type='str', choices=['acquired', 'released', 'query'], default='acquired'),
            run_id=dict(type='str'),
            owner=dict(type='str', default='unknown'),
            controller=dict(type='str'),
            stale_after=dict(type='int', default=1800),
            owner_dead=dict(type='bool', default=False),
            force=dict(type='bool', default=False),
        ),
        required_if=[('state', 'acquired', ['run_id'])],
        supports_check_mode=True,
    )
    p = module.params
    if p['stale_after'] < 1:
        module.fail_json(msg='stale_after: expected a number of seconds >= 1, got %d' % p['stale_after'])
    if p['state'] == 'released' and not p['run_id'] and not p['force']:
        module.fail_json(msg='state=released needs run_id (the run that holds the lock) or force=true')
    lock = DeployLock(p['path'])
    try:
        if p['state'] == 'query':
            module.exit_json(changed=False, holder=read_owner(p['path']), action='query')
        if p['state'] == 'released':
            holder = read_owner(p['path'])
            if holder is None:
                module.exit_json(changed=False, holder=None, action='free')
            if module.check_mode:
                if not p['force'] and holder.get('run_id') != p['run_id']:
                    raise LockError('the deploy lock %s is held by another run (%s); not releasing it' % (p['path'], holder.get('run_id')))
                module.exit_json(changed=True, holder=holder, action='release')
            changed, holder = lock.release(p['run_id'], force=p['force'])
            module.exit_json(changed=changed, holder=holder, action='release')
        record = dict(owner=p['owner'], run_id=p['run_id'], controller=p['controller'])
        if module.check_mode:
            action, holder = lock.plan_acquire(p['run_id'], p['stale_after'], force=p['force'], owner_dead=p['owner_dead'])
            if action == 'busy':
                raise LockError(lock.busy_message(holder, p['stale_after']))
            module.exit_json(changed=action != 'held', holder=holder, action=action, broken=holder if action == 'break' else None)
        changed, broken = lock.acquire(record, p['stale_after'], force=p['force'], owner_dead=p['owner_dead'])
        module.exit_json(changed=changed, holder=read_owner(p['path']), broken=broken,
                         action=('break' if broken else 'take') if changed else 'held')
    except LockError as exc:
        module.fail_json(msg=str(exc), holder=read_owner(p['path']))
    except OSError as exc:
        module.fail_json(msg='deploy lock %s: %s' % (p['path'], exc))


if __name__ == '__main__':
    main()
