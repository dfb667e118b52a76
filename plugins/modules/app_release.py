#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

DOCUMENTATION = r'''
---
module: app_release
short_description: Release manifests, rollback target, pruning and deploy history on an app node
version_added: 0.1.0
description:
  - Keeps the bookkeeping of a C(releases/<release_id>) layout. Each release directory carries a manifest
    (C(.nodeops-release.json)) with version, git sha, artifact sha256, deployed_at, deployed_by, the run that deployed it
    and a status of C(pending), C(healthy), C(failed) or C(rolled_back), with the history of status changes.
  - Releases are ordered by a sequence number assigned when a release is first recorded, never by directory mtime,
    so touching or copying a directory cannot change which release is newer.
  - Pruning keeps the newest O(keep) releases and always the current release and the newest healthy release before
    it (the rollback target).
  - Returns the releases in order, the current one and the rollback target.
author:
  - nodeops.stack maintainers (@nodeops)
extends_documentation_fragment:
  - nodeops.stack.attributes
  - nodeops.stack.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - With O(state=present), the manifest before and after.
  platform:
    platforms: posix
options:
  releases_dir:
    description: Directory holding one directory per release.
    type: path
    required: true
  current_link:
    description: Symlink to the live release.
    type: path
    required: true
  state:
    description:
      - V(present) records or updates the manifest of O(release_id) (the directory must exist).
      - V(pruned) removes old releases beyond O(keep), never the current one or the rollback target.
      - V(query) only reports.
    type: str
    choices: [present, pruned, query]
    default: query
  release_id:
    description: The release to record. Required with O(state=present).
    type: str
  status:
    description: New status of O(release_id).
    type: str
    choices: [pending, healthy, failed, rolled_back]
  version:
    description: Application version of the release.
    type: str
  git_sha:
    description: Source revision of the release.
    type: str
  artifact_sha256:
    description: sha256 of the artifact the release was unpacked from.
    type: str
  deployed_by:
    description: Who deployed it (user, AWX job).
    type: str
  run_id:
    description: The deploy run that recorded it.
    type: str
  keep:
    description: Releases to keep with O(state=pruned) (the current one and the rollback target are kept in addition when older).
    type: int
    default: 5
  history_file:
    description: JSON-lines deploy history to append O(history_event) to.
    type: path
  history_event:
    description: An event to append to O(history_file), for example C({event=deployed, release_id=..., from=..., node=...}).
    type: dict
'''

EXAMPLES = r'''
- name: Record a freshly unpacked release as pending
  nodeops.stack.app_release:
    releases_dir: /srv/shop/releases
    current_link: /srv/shop/current
    state: present
    release_id: 2.0.0-3f2a9c1b
    version: 2.0.0
    artifact_sha256: "{{ artifact_sha256 }}"
    deployed_by: "{{ awx_user_name | default(lookup('env', 'USER')) }}"
    status: pending

- name: Mark it healthy after the gate passed and log the event
  nodeops.stack.app_release:
    releases_dir: /srv/shop/releases
    current_link: /srv/shop/current
    state: present
    release_id: 2.0.0-3f2a9c1b
    status: healthy
    history_file: /srv/shop/deploy-history.jsonl
    history_event: {event: deployed, release_id: 2.0.0-3f2a9c1b, previous: 1.0.0-8d1e0a77}

- name: Find the rollback target
  nodeops.stack.app_release:
    releases_dir: /srv/shop/releases
    current_link: /srv/shop/current
  register: shop_releases

- name: Keep five releases (plus current and rollback target)
  nodeops.stack.app_release:
    releases_dir: /srv/shop/releases
    current_link: /srv/shop/current
    state: pruned
    keep: 5
'''

RETURN = r'''
releases:
  description: Every release, oldest first, with its manifest fields and status (C(unknown) without a manifest).
  returned: always
  type: list
  elements: dict
current:
  description: Release id the current link points at, or null.
  returned: always
  type: str
current_status:
  description: Status of the current release.
  returned: always
  type: str
rollback_target:
  description: Newest healthy release other than the current one, or null.
  returned: always
  type: str
manifest:
  description: The manifest of O(release_id) after the task.
  returned: when state is present
  type: dict
pruned:
  description: Release ids removed (or, in check mode, that would be).
  returned: when state is pruned
  type: list
  elements: str
kept:
  description: Release ids kept, each with the reason.
  returned: when state is pruned
  type: list
  elements: dict
history_event:
  description: The line appended to the history file.
  returned: when history_event is given
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeops.stack.plugins.module_utils.releases import ReleaseError, ReleaseStore

FIELDS = ('version', 'git_sha', 'artifact_sha256', 'deployed_by', 'run_id')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            releases_dir=dict(type='path', required=True),
            current_link=dict(type='path', required=True),
            state=dict(type='str', choices=['present', 'pruned', 'query'], default='query'),
            release_id=dict(type='str'),
            status=dict(type='str', choices=['pending', 'healthy', 'failed', 'rolled_back']),
            version=dict(type='str'),
            git_sha=dict(type='str'),
            artifact_sha256=dict(type='str'),
            deployed_by=dict(type='str'),
            run_id=dict(type='str'),
            keep=dict(type='int', default=5),
            history_file=dict(type='path'),
            history_event=dict(type='dict'),
        ),
        required_if=[('state', 'present', ['release_id'])],
        required_by={'history_event': 'history_file'},
        supports_check_mode=True,
    )
    p = module.params
    store = ReleaseStore(p['releases_dir'], p['current_link'], p['history_file'])
    result = dict(changed=False)
    try:
        if p['state'] == 'present':
            changed, before, after = store.record(p['release_id'], {k: p[k] for k in FIELDS}, p['status'], check_mode=module.check_mode)
            result.update(changed=changed, manifest=after)
            if module._diff:
                result['diff'] = dict(before=before or {}, after=after)
        elif p['state'] == 'pruned':
            kept, pruned = store.prune(p['keep'], check_mode=module.check_mode)
            result.update(changed=bool(pruned), pruned=[r['release_id'] for r in pruned],
                          kept=[{'release_id': r['release_id'], 'reason': r['reason']} for r in kept])
        if p['history_event'] is not None:
            result['history_event'] = store.append_history(p['history_event'], check_mode=module.check_mode)
            result['changed'] = True
        result.update(store.summary())
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg='%s: %s' % (exc.filename or p['releases_dir'], exc.strerror or exc))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
