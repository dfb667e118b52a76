# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Change a live nginx configuration safely, in one pass on the host.

Used by the nodeops.stack.nginx_config module (and so by the nginx_tls role's
entry points). One call does what used to take a dozen remote tasks:

1. take the host's change lock (an atomic mkdir; a lock held by a run known to
   be dead, or older than the stale limit, is broken);
2. compare-and-swap: refuse when a file changed since the caller read it;
3. stage: copy the live configuration directory, write the candidate files into
   the copy and run ``nginx -t`` on the complete result - nothing live changes
   unless nginx accepts it;
4. promote the files that differ (content, or anything but 0644 root:root);
5. reload gracefully and wait until the master runs only new workers;
6. wait until nginx holds no established connection to the drained servers;
7. release the lock.

Commands run through a ``run(argv) -> (rc, stdout, stderr)`` callable (the
module's run_command), so this file starts no process itself.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name

import errno
import glob
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time


class NginxConfigError(Exception):
    """A refusal with a message for the operator; ``changed`` says whether live files were already replaced."""

    def __init__(self, msg, changed=False, **details):
        super(NginxConfigError, self).__init__(msg)
        self.changed = changed
        self.details = details


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path):
    """sha256 of a file's bytes, or '' when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except IOError as exc:
        if exc.errno == errno.ENOENT:
            return ""
        raise


def read_files(conf_dir, patterns):
    """{relative path: text} for every file under conf_dir matching one of the glob patterns."""
    found = {}
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(conf_dir, pattern))):
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    found[os.path.relpath(path, conf_dir)] = fh.read().decode("utf-8", "replace")
    return found


def same_as_live(content, live):
    """True when the live file already has this content, mode 0644 and owner root:root."""
    try:
        st = os.lstat(live)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o644 or st.st_uid != 0 or st.st_gid != 0:
        return False
    with open(live, "rb") as fh:
        return fh.read() == content.encode("utf-8")


def check_relative(rel):
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm.startswith(".."):
        raise NginxConfigError("files: %r must be a path relative to the configuration directory, inside it." % rel)
    return norm


# ----------------------------------------------------------------------------- lock

class HostLock(object):
    """The nginx_tls change lock: a directory made with mkdir (atomic), the holder's name in ``owner``."""

    def __init__(self, path, owner, break_owners=(), stale_after=900, clock=time.time):
        self.path = path
        self.owner = owner
        self.break_owners = [o for o in break_owners if o]
        self.stale_after = stale_after
        self.clock = clock
        self.held = False
        self.note = ""

    def _take(self):
        try:
            os.mkdir(self.path, 0o700)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise
        with open(os.path.join(self.path, "owner"), "w") as fh:
            fh.write(self.owner + "\n")
        self.held = True
        return True

    def holder(self):
        try:
            with open(os.path.join(self.path, "owner")) as fh:
                return fh.read().strip()
        except IOError:
            return ""

    def acquire(self):
        if self._take():
            self.note = "taken"
            return self.note
        held = self.holder()
        if held and held in self.break_owners:
            shutil.rmtree(self.path, ignore_errors=True)
            if self._take():
                self.note = "taken (broke the lock of %s, a run known to be dead)" % held
                return self.note
        try:
            age = int(self.clock() - os.stat(self.path).st_mtime)
        except OSError:
            age = 0
        if age > self.stale_after:
            shutil.rmtree(self.path, ignore_errors=True)
            if self._take():
                self.note = "taken (broke a stale lock, %d s old)" % age
                return self.note
        raise NginxConfigError(
            "Another nginx_tls run is changing nginx on this load balancer right now (lock %s, held by %s for %d s). "
            "Change several upstream servers with ONE call and a list under run_once: true, never with parallel calls "
            "against the same load balancer. A lock older than %d s is treated as stale and broken."
            % (self.path, held or "another run", age, self.stale_after))

    def release(self):
        if self.held:
            shutil.rmtree(self.path, ignore_errors=True)
            self.held = False


# ----------------------------------------------------------------------------- nginx

WORKER_ARGS = re.compile(r"worker process")


class Nginx(object):
    def __init__(self, run, conf_dir="/etc/nginx", work_dir="/var/lib/nodeops-nginx", binary="/usr/sbin/nginx",
                 pid_file="/run/nginx.pid", proc="/proc", sleep=time.sleep, clock=time.monotonic):
        self.run = run
        self.conf_dir = conf_dir
        self.work_dir = work_dir
        self.binary = binary
        self.pid_file = pid_file
        self.proc = proc
        self.sleep = sleep
        self.clock = clock

    # ---- stage and promote
    def stage(self, files):
        """Stage the candidate files over a copy of the live directory and validate it.

        Returns (stage_dir or None, differing relative paths). Raises NginxConfigError when nginx -t refuses.
        The staging copy is removed here unless there is something valid to promote.
        """
        if not files:
            return None, []
        if not os.path.isdir(self.work_dir):
            os.makedirs(self.work_dir, 0o700)
        stage = tempfile.mkdtemp(prefix="stage.", dir=self.work_dir)
        keep = False
        try:
            _copy_tree(self.conf_dir, stage)
            for rel, content in sorted(files.items()):
                path = os.path.join(stage, rel)
                parent = os.path.dirname(path)
                if not os.path.isdir(parent):
                    os.makedirs(parent)
                with open(path, "wb") as fh:
                    fh.write(content.encode("utf-8"))
                os.chmod(path, 0o644)
            rc, out, err = self.run([self.binary, "-t", "-q", "-c", os.path.join(stage, "nginx.conf")])
            if rc != 0:
                message = ((out or "") + (err or "")).replace(stage, "<staged>").strip()
                raise NginxConfigError(
                    "nginx -t rejected the candidate configuration, so nothing live was changed and nginx keeps serving its "
                    "current configuration. Fix the variable or template it points at (<staged> is a copy of %s with the "
                    "candidate files): %s" % (self.conf_dir, re.sub(r"\n+", " | ", message)), error=message)
            differs = [rel for rel in sorted(files) if not same_as_live(files[rel], os.path.join(self.conf_dir, rel))]
            keep = bool(differs)
            return (stage if keep else None), differs
        finally:
            if not keep:
                shutil.rmtree(stage, ignore_errors=True)

    def promote(self, stage, differs):
        """Replace each differing live file atomically (rename within its directory)."""
        for rel in differs:
            live = os.path.join(self.conf_dir, rel)
            parent = os.path.dirname(live)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            fd, tmp = tempfile.mkstemp(prefix=".nodeops.", dir=parent)
            try:
                with os.fdopen(fd, "wb") as out, open(os.path.join(stage, rel), "rb") as src:
                    shutil.copyfileobj(src, out)
                os.chmod(tmp, 0o644)
                os.chown(tmp, 0, 0)
                os.rename(tmp, live)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    # ---- processes
    def master_pid(self):
        try:
            with open(self.pid_file) as fh:
                pid = int(fh.read().strip())
        except (IOError, ValueError):
            return None
        return pid if os.path.exists(os.path.join(self.proc, str(pid))) else None

    def workers(self, master):
        """Pids of the master's worker processes (children whose command line says 'worker process')."""
        found = []
        for entry in os.listdir(self.proc):
            if not entry.isdigit():
                continue
            try:
                with open(os.path.join(self.proc, entry, "stat")) as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                if ppid != master:
                    continue
                with open(os.path.join(self.proc, entry, "cmdline"), "rb") as fh:
                    args = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except (IOError, OSError, IndexError, ValueError):
                continue
            if WORKER_ARGS.search(args):
                found.append(int(entry))
        return sorted(found)

    def reload(self, timeout=30):
        """Validate the live configuration, reload (start when stopped), wait for new workers. Returns the master pid."""
        rc, out, err = self.run([self.binary, "-t", "-q"])
        if rc != 0:
            raise NginxConfigError("nginx -t rejected the live configuration; not reloading: %s"
                                   % ((out or "") + (err or "")).strip())
        master = self.master_pid()
        if master is None:
            rc, out, err = self.run(["systemctl", "start", "nginx.service"])
            if rc != 0:
                raise NginxConfigError("Starting nginx.service failed: %s" % ((out or "") + (err or "")).strip(), changed=True)
            return self.master_pid()
        old = set(self.workers(master))
        rc, out, err = self.run(["systemctl", "reload", "nginx.service"])
        if rc != 0:
            raise NginxConfigError("Reloading nginx.service failed: %s" % ((out or "") + (err or "")).strip(), changed=True)
        deadline = self.clock() + timeout
        while True:
            now = set(self.workers(master))
            if now and not now & old:
                return master
            if self.clock() > deadline:
                raise NginxConfigError("nginx was reloaded but its old workers %s still run after %d s (new: %s)."
                                       % (sorted(old & now), timeout, sorted(now - old)), changed=True)
            self.sleep(0.2)

    # ---- drain
    def connection_pattern(self, master):
        """What marks nginx's sockets in ``ss -p -e`` output: the process name or, where ss cannot see the workers
        (no CAP_SYS_PTRACE, e.g. in containers), the nginx unit's cgroup."""
        pattern = r'users:\(\("nginx",'
        try:
            with open(os.path.join(self.proc, str(master), "cgroup")) as fh:
                for line in fh:
                    if line.startswith("0::"):
                        cgroup = line[3:].strip()
                        if cgroup not in ("", "/"):
                            pattern += "|cgroup:" + re.escape(cgroup) + "( |$)"
        except (IOError, TypeError):
            pass
        return re.compile(pattern)

    def connections(self, address, port, pattern):
        target = ("[%s]" % address if ":" in address else address) + ":%s" % port
        rc, out, err = self.run(["ss", "-H", "-t", "-n", "-p", "-e", "state", "established", "dst", target])
        if rc != 0:
            raise NginxConfigError("ss failed for %s: %s" % (target, (err or out).strip()), changed=True)
        return [line for line in out.splitlines() if pattern.search(line)]

    def drain_wait(self, servers, timeout, poll_interval):
        """Wait until no server in ``servers`` (dicts with name, address, port) has connections from nginx."""
        pattern = self.connection_pattern(self.master_pid())
        deadline = self.clock() + timeout
        started = self.clock()
        result = {}
        pending = list(servers)
        while True:
            still = []
            for server in pending:
                conns = self.connections(server["address"], server["port"], pattern)
                result[server["name"]] = {"server": server["name"], "address": "%s:%s" % (server["address"], server["port"]),
                                          "timed_out": False, "connections": len(conns), "error": "",
                                          "waited_s": round(self.clock() - started, 2)}
                if conns:
                    still.append(server)
            pending = still
            if not pending:
                break
            if self.clock() >= deadline:
                for server in pending:
                    result[server["name"]]["timed_out"] = True
                break
            self.sleep(poll_interval)
        return [result[s["name"]] for s in servers]


def _copy_tree(src, dst):
    """Copy the live configuration (symlinks kept) into an existing empty directory."""
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.islink(s):
            os.symlink(os.readlink(s), d)
        elif os.path.isdir(s):
            shutil.copytree(s, d, symlinks=True)
        else:
            shutil.copy2(s, d)


def apply_change(nginx, files=None, expect=None, lock=None, reload_mode="changed", drain=None, drain_timeout=60,
                 drain_poll_interval=1, reload_timeout=30, check_mode=False, want_diff=False):
    """The whole change, under the lock. Returns a result dict; raises NginxConfigError on refusal."""
    files = dict((check_relative(rel), content) for rel, content in (files or {}).items())
    result = {"changed": False, "promoted": [], "reloaded": False, "drain": [], "lock": ""}
    if lock is not None and not check_mode:
        result["lock"] = lock.acquire()
    stage = None
    try:
        for rel, sha in sorted((expect or {}).items()):
            current = file_sha256(os.path.join(nginx.conf_dir, check_relative(rel)))
            if current != sha:
                raise NginxConfigError(
                    "%s changed since it was read (expected sha256 %s, found %s): another run changed this load balancer "
                    "meanwhile. Nothing was changed; run again." % (rel, sha or "(absent)", current or "(absent)"))
        stage, differs = nginx.stage(files)
        result["promoted"] = differs
        result["changed"] = bool(differs)
        if want_diff and differs:
            result["diff"] = [_diff_entry(nginx.conf_dir, rel, files[rel]) for rel in differs]
        if check_mode:
            return result
        nginx.promote(stage, differs)
        needs_reload = reload_mode == "always" or (
            reload_mode == "changed" and any(not rel.endswith(".json") for rel in differs))
        if needs_reload:
            try:
                result["master_pid"] = nginx.reload(reload_timeout)
            except NginxConfigError as exc:
                exc.changed = exc.changed or result["changed"]
                raise
            result["reloaded"] = True
        if drain:
            result["drain"] = nginx.drain_wait(drain, drain_timeout, drain_poll_interval)
        return result
    except NginxConfigError as exc:
        exc.changed = exc.changed or (result["changed"] and not check_mode and stage is not None)
        raise
    finally:
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
        if lock is not None:
            lock.release()


def _diff_entry(conf_dir, rel, after):
    live = os.path.join(conf_dir, rel)
    try:
        with open(live, "rb") as fh:
            before = fh.read().decode("utf-8", "replace")
    except IOError:
        before = ""
    return {"before": before, "after": after, "before_header": live, "after_header": live + " (candidate)"}
