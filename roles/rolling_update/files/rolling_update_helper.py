# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side helper of the rolling_update role (standard library only).

Run with the controller's Python (``ansible_playbook_python``), from a ``pipe``
lookup or a command delegated to localhost. Prints one JSON object.

  self                  the ansible-playbook process this helper runs under:
                        {"host", "pid", "start", "user", "controller"}; controller is
                        "<host>:<pid>:<start>", recorded in the deploy lock.
  alive CONTROLLER      whether the process named by a recorded controller
                        string still runs here: {"same_host", "alive", ...}.
                        A pid whose start time differs was reused: not alive.
  artifact PATH         sha256, size, version and git sha of a release tarball
                        (package.json / release.json at its top, or in its only
                        top-level directory, which is then stripped on unpack).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import getpass
import hashlib
import json
import os
import socket
import sys
import tarfile


def proc_start(pid):
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            data = handle.read()
    except (IOError, OSError):
        return None
    # comm (field 2) may contain spaces and parentheses; the fields after the last ')' are fixed.
    fields = data[data.rindex(')') + 2:].split()
    return fields[19]


def proc_parent(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            data = handle.read()
    except (IOError, OSError):
        return None
    return int(data[data.rindex(')') + 2:].split()[1])


def proc_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except (IOError, OSError):
        return ''


def playbook_process():
    """The topmost ansible-playbook process above this one.

    Ansible's workers are forks of ansible-playbook and share its command line, so
    walk up while the parent still is ansible-playbook (or ansible-runner's copy of it).
    """
    found = None
    pid = os.getppid()
    while pid and pid > 1:
        if 'ansible-playbook' in proc_cmdline(pid):
            found = pid
        elif found is not None:
            break
        pid = proc_parent(pid)
    return found if found is not None else os.getppid()


def cmd_self():
    host = socket.gethostname()
    pid = playbook_process()
    start = proc_start(pid) or '0'
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = 'unknown'
    return {'host': host, 'pid': pid, 'start': start, 'user': user, 'controller': '%s:%d:%s' % (host, pid, start)}


def cmd_alive(controller):
    host = socket.gethostname()
    parts = (controller or '').split(':')
    result = {'controller': controller, 'host': host, 'same_host': False, 'alive': None, 'reason': ''}
    if len(parts) != 3 or not parts[1].isdigit():
        result['reason'] = 'not a host:pid:start controller string; cannot tell'
        return result
    result['same_host'] = parts[0] == host
    if not result['same_host']:
        result['reason'] = 'recorded by another controller (%s); cannot tell from here' % parts[0]
        return result
    start = proc_start(int(parts[1]))
    if start is None:
        result.update(alive=False, reason='pid %s no longer exists on %s' % (parts[1], host))
    elif start != parts[2]:
        result.update(alive=False, reason='pid %s was reused by another process (start %s, recorded %s)' % (parts[1], start, parts[2]))
    else:
        result.update(alive=True, reason='pid %s still runs on %s' % (parts[1], host))
    return result


def _member(names, wanted):
    for prefix in ('', './'):
        if prefix + wanted in names:
            return prefix + wanted
    return None


def cmd_artifact(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b''):
            digest.update(chunk)
    info = {'path': os.path.abspath(path), 'file': os.path.basename(path), 'sha256': digest.hexdigest(),
            'size': os.path.getsize(path), 'version': None, 'git_sha': None, 'strip_components': 0, 'name': None}
    with tarfile.open(path, 'r:*') as tar:
        names = tar.getnames()
        tops = set(n.lstrip('./').split('/')[0] for n in names if n.lstrip('./'))
        base = ''
        if not _member(names, 'package.json') and len(tops) == 1:
            base = tops.pop() + '/'
            info['strip_components'] = 1
        for wanted in ('release.json', 'package.json'):
            member = _member(names, base + wanted)
            if not member:
                continue
            try:
                data = json.loads(tar.extractfile(member).read().decode('utf-8'))
            except (ValueError, AttributeError):
                continue
            if isinstance(data, dict):
                info['version'] = info['version'] or data.get('version')
                info['name'] = info['name'] or data.get('name')
                sha = data.get('git_sha') or data.get('gitHead')
                if sha and sha != 'unknown':
                    info['git_sha'] = info['git_sha'] or sha
    return info


def main(argv):
    if len(argv) >= 1 and argv[0] == 'self':
        out = cmd_self()
    elif len(argv) == 2 and argv[0] == 'alive':
        out = cmd_alive(argv[1])
    elif len(argv) == 2 and argv[0] == 'artifact':
        try:
            out = cmd_artifact(argv[1])
        except (IOError, OSError, tarfile.TarError) as exc:
            out = {'error': 'cannot read the artifact %s: %s' % (argv[1], exc)}
    else:
        sys.stderr.write('usage: rolling_update_helper.py self | alive HOST:PID:START | artifact PATH\n')
        return 2
    sys.stdout.write(json.dumps(out, sort_keys=True) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
