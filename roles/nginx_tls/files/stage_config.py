"""Stage and validate an nginx configuration (used by the nodeops.stack.nginx_tls role).

Usage: python3 -c "$(cat stage_config.py)" CONF_DIR WORK_DIR NGINX < candidate.json

candidate.json maps paths relative to CONF_DIR to their new content. The script
copies the live CONF_DIR into a fresh directory under WORK_DIR, writes the
candidate files into that copy, runs ``NGINX -t -c <copy>/nginx.conf`` on the
complete result, and lists the candidate files that differ from the live ones
(content, or anything but mode 0644 root:root). It prints one JSON object:
{"stage": path or null, "valid": bool, "error": str, "differs": [paths]}.

The live configuration is only ever read. The staging copy is kept only when
the candidate is valid and differs (the role then promotes the listed files
from it and removes it); otherwise it is removed here.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile


def same(candidate, live):
    try:
        st = os.lstat(live)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o644 or st.st_uid != 0 or st.st_gid != 0:
        return False
    with open(candidate, "rb") as a, open(live, "rb") as b:
        return a.read() == b.read()


def main():
    conf_dir, work_dir, nginx = sys.argv[1:4]
    files = json.load(sys.stdin)
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    stage = tempfile.mkdtemp(prefix="stage.", dir=work_dir)
    result = {"stage": stage, "valid": False, "error": "", "differs": []}
    try:
        shutil.copytree(conf_dir, stage, symlinks=True, dirs_exist_ok=True)
        for rel, content in sorted(files.items()):
            path = os.path.join(stage, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(content)
            os.chmod(path, 0o644)
        proc = subprocess.run([nginx, "-t", "-q", "-c", os.path.join(stage, "nginx.conf")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        result["valid"] = proc.returncode == 0
        result["error"] = proc.stdout.replace(stage, "<staged>").strip()
        result["differs"] = [rel for rel in sorted(files) if not same(os.path.join(stage, rel), os.path.join(conf_dir, rel))]
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        result["error"] = "staging failed: %s" % exc
        result["valid"] = False
    finally:
        if not (result["valid"] and result["differs"]):
            shutil.rmtree(stage, ignore_errors=True)
            result["stage"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
