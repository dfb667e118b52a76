"""Run one mongo_backup operation in this process and print its result with the process's peak RSS.

Used by the interruption tests and the benchmark (a separate process, so that its
VmHWM is the dumper's own, apart from the test runner's and the server's):

    python dump_runner.py '{"mode": "dump", "uri": ..., "backup_dir": ...}' [--kill-before-rename]

``--kill-before-rename`` SIGKILLs the process at the moment the finished, verified
partial directory would be renamed into place (the last instant a crash can hit).
Prints one JSON line: {"ok", "result" or "error", "vmhwm_kb", "elapsed_s", "cpu_s"}.
"""

import json
import os
import resource
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from mongo_backup_support import Ops  # noqa: E402  pylint: disable=import-error,wrong-import-position

from ansible_collections.nodeops.stack.plugins.module_utils.mongo_common import MongoBackupError  # noqa: E402


def vmhwm_kb():
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return None


def main(argv):
    params = json.loads(argv[0])
    if '--kill-before-rename' in argv:
        real_rename = os.rename

        def rename(src, dst, *args, **kwargs):
            if os.path.basename(str(src)).startswith('.partial-'):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rename(src, dst, *args, **kwargs)
        os.rename = rename
    mode = params.pop('mode')
    ops = Ops(params.pop('uri'), params.pop('backup_dir'))
    start = time.monotonic()
    try:
        result = getattr(ops, mode)(**params)
        out = {'ok': True, 'result': result}
    except MongoBackupError as exc:
        out = {'ok': False, 'error': exc.msg}
    out['elapsed_s'] = round(time.monotonic() - start, 3)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out['cpu_s'] = round(usage.ru_utime + usage.ru_stime, 3)
    out['vmhwm_kb'] = vmhwm_kb()
    print(json.dumps(out, default=str), flush=True)
    return 0 if out['ok'] else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
