"""Helpers of the backup fault-injection suite: a MongoDB stand-in that can be killed, hung and brought back,
deterministic data, the mongo_backup module and the backup-set runner as real processes, process trees, a small disk."""

import errno
import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
COLLECTIONS = os.path.join(REPO, '.cache', 'collections')
PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
MODULE_PATH = os.path.join(COLLECTIONS, 'ansible_collections', 'nodeops', 'stack', 'plugins', 'modules', 'mongo_backup.py')
RUNNER_DIR = os.path.join(REPO, 'roles', 'backup', 'files')
# What the role's nodeops-backup entry point does (roles/backup/templates/nodeops-backup.py.j2), with this checkout's files.
RUNNER_ENTRY = 'import sys; sys.path.insert(0, %r); from nodeops_backup_set import main; sys.exit(main())' % RUNNER_DIR

_spec = importlib.util.spec_from_file_location('nodeops_faults_mongo_conftest', os.path.join(REPO, 'tests', 'integration', 'mongo', 'conftest.py'))
_mongo_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mongo_conftest)
TestServerProcess = _mongo_conftest.TestServerProcess


# --------------------------------------------------------------------------- the server

class FaultServer(object):
    """A mongo_test_server process on a fixed loopback port that a test can SIGKILL, SIGSTOP, resume and restart."""

    def __init__(self):
        self.server = TestServerProcess()
        self.port = self.server.port
        self.uri = 'mongodb://127.0.0.1:%d/?directConnection=true' % self.port

    @property
    def pid(self):
        return self.server.proc.pid

    def kill(self):
        """SIGKILL: the server and its in-memory data are gone, its sockets reset."""
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(timeout=10)

    def hang(self):
        """SIGSTOP: the socket stays open and the kernel still accepts connections, but nothing answers."""
        self.server.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        if self.server.proc.poll() is None:
            self.server.proc.send_signal(signal.SIGCONT)

    def restart(self):
        """A new (empty) server on the same port, as a restarted mongod would come back."""
        self.server.stop()
        deadline = time.monotonic() + 15
        while True:
            try:
                self.server = TestServerProcess('--port', str(self.port))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self):
        self.resume()  # a stopped process would only take SIGTERM after the kill timeout
        return self.server.stop()


# --------------------------------------------------------------------------- data

def load_collections(client, db_name, collections, docs, doc_bytes, seed=1, prefix='c'):
    """``collections`` collections c00.. of ``docs`` documents with ``doc_bytes`` random (incompressible) bytes each.

    The same arguments always give the same documents, so a restarted server can be given the data back.
    """
    rng = random.Random(seed)
    for index in range(collections):
        coll = client[db_name]['%s%02d' % (prefix, index)]
        coll.insert_many([{'_id': i, 'c': index, 'pad': rng.randbytes(doc_bytes)} for i in range(docs)])
        coll.create_index('c', name='c_1')


def tree_digest(path, skip=('verification.json',)):
    """sha256 over every file's relative path and content under ``path`` (``skip``: names a verify run rewrites)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            if name in skip:
                continue
            full = os.path.join(dirpath, name)
            digest.update(os.path.relpath(full, path).encode() + b'\0')
            with open(full, 'rb') as fh:
                digest.update(hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()


def used_bytes(mount_point):
    """Bytes in use on the file system of ``mount_point``."""
    stat = os.statvfs(mount_point)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def fill_disk(mount_point):
    """Fill the file system of ``mount_point`` to the last byte with one file; returns its path (delete it to free the space)."""
    path = os.path.join(mount_point, 'filler')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b'\0' * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    assert os.statvfs(mount_point).f_bavail == 0
    return path


def partial_entries(root):
    """Names of ``.partial-*`` entries directly under ``root``."""
    return sorted(e for e in os.listdir(root) if e.startswith('.partial-')) if os.path.isdir(root) else []


def partial_data_files(root):
    """Data files (``*.bson*``, not metadata) anywhere below a ``.partial-*`` directory under ``root``."""
    found = 0
    for dirpath, _dirs, files in os.walk(root):
        if '/.partial-' in dirpath:
            found += sum(1 for f in files if '.bson' in f and 'metadata' not in f)
    return found


def wait_for_partial_files(root, count, proc, timeout=60):
    """Wait until a dump in progress under ``root`` has started its ``count``-th data file; None if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = partial_data_files(root)
        if found >= count:
            return found
        time.sleep(0.002)
    return None


# --------------------------------------------------------------------------- processes

class Processes(object):
    """Every process a test starts; whatever is still running at teardown is SIGKILLed (by pid) and reaped."""

    def __init__(self):
        self.procs = []
        self.pids = set()

    def popen(self, argv, **kwargs):
        kwargs.setdefault('stdout', subprocess.PIPE)
        kwargs.setdefault('stderr', subprocess.STDOUT)
        kwargs.setdefault('stdin', subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def adopt(self, pids):
        """Also clean up these (for example the workers and module processes of an ansible-playbook run)."""
        self.pids.update(pids)

    def cleanup(self):
        """Kill and reap everything (safe to call again)."""
        for pid in sorted(self.pids):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        wait_gone(self.pids, timeout=10)


def alive(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as fh:
            state = fh.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def wait_gone(pids, timeout=10):
    """Wait until none of ``pids`` is alive; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def descendants(pid):
    """Every process below ``pid`` (children, grandchildren ...), whatever session they moved to."""
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as fh:
                ppid = int(fh.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc):
    """SIGKILL a process and everything below it at once (the controller dying, say); returns the pids killed."""
    pids = [proc.pid] + descendants(proc.pid)  # all found before the first signal: reparenting cannot hide one
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def output_of(proc, timeout):
    """Wait for ``proc``; returns (returncode, output text, seconds waited)."""
    start = time.monotonic()
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, (out or b'').decode('utf-8', 'replace'), time.monotonic() - start


def last_json(text):
    """The last line of ``text`` that parses as a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


# --------------------------------------------------------------------------- the module and the runner as processes

def start_module(processes, tmp_path, args):
    """plugins/modules/mongo_backup.py as a real module process (args file), as Ansible runs it."""
    args_file = tempfile.NamedTemporaryFile('w', suffix='.json', dir=str(tmp_path), delete=False)
    with args_file:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, args_file)
    return processes.popen([PYTHON, MODULE_PATH, args_file.name], env=dict(os.environ, PYTHONPATH=COLLECTIONS))


def write_runner_config(tmp_path, root, state_dir, uri, databases, **mongo):
    """A config.json as the backup role renders it, MongoDB part only (Redis and uploads have their own tests)."""
    options = {'enabled': True, 'uri': uri, 'databases': databases, 'connect_timeout': 2, 'parallel': 1, 'batch_size': 50,
               'compression': 'gzip', 'compression_level': 1}
    options.update(mongo)
    config = {'root': root, 'state_dir': state_dir, 'lock_timeout': 0, 'mongo': options, 'redis': {'enabled': False},
              'uploads': {'enabled': False}, 'offsite': {'enabled': False}, 'webhook': {'url': ''},
              'retention': {'daily': 7, 'weekly': 4, 'monthly': 3, 'yearly': 0}}
    path = os.path.join(str(tmp_path), 'runner-config-%d.json' % len(os.listdir(str(tmp_path))))
    with open(path, 'w') as fh:
        json.dump(config, fh)
    return path


def start_runner(processes, config_path, *command):
    """The backup-set runner (``nodeops-backup --config X run`` on the backup host) as a process."""
    return processes.popen([PYTHON, '-c', RUNNER_ENTRY, '--config', config_path] + list(command or ['run']),
                           env=dict(os.environ, PYTHONPATH=COLLECTIONS))


def run_runner(processes, config_path, *command, timeout=120):
    """Run the runner to the end; returns (returncode, its JSON output, whole output)."""
    rc, out, _waited = output_of(start_runner(processes, config_path, *command), timeout)
    return rc, last_json(out), out


def run_set_here(config_path):
    """One backup-set run in this process (setup and re-runs; the runs under test are processes of their own)."""
    import nodeops_backup_set  # pylint: disable=import-error,import-outside-toplevel
    return nodeops_backup_set.run_set(read_json(config_path))


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


def python_path():
    """sys.path additions the tests need in-process (the collection and the mongo_backup test helpers)."""
    for path in (COLLECTIONS, RUNNER_DIR, os.path.join(REPO, 'tests', 'integration', 'mongo_backup')):
        if path not in sys.path:
            sys.path.insert(0, path)
