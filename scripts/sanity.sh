#!/usr/bin/env bash
# ansible-test sanity for this collection, offline-capable.
# ansible-test needs the collection at ansible_collections/<ns>/<name> inside a
# git checkout, so assemble one from the files git knows (tracked + untracked
# not ignored), and give ansible-test an offline get-pip stand-in.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
PY_VER="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
TREE="$ROOT/.cache/sanity/ansible_collections/nodeops/stack"

pip_ver="$("$VENV/bin/python" - <<'PY'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)"
mkdir -p "$HOME/.ansible/test/cache"
cp "$ROOT/scripts/offline/get_pip.py" "$HOME/.ansible/test/cache/get_pip_${pip_ver//./_}.py"

rm -rf "$TREE"
mkdir -p "$TREE"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$TREE")
cd "$TREE"
git init -q . && git add -A >/dev/null
export PATH="$VENV/bin:$PATH"
ansible-test sanity --venv --python "$PY_VER" --requirements --color no "$@"
