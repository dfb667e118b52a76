#!/usr/bin/env bash
# Print the newest usable Python >= 3.12 (ansible-core 2.20+ needs it on the
# controller); fall back to 3.11 (then the toolchain uses ansible-core 2.19).
# pyenv shims for versions that are not activated fail when run, so every
# candidate is executed, not just looked up.
set -u
candidates=()
for v in 3.14 3.13 3.12; do
  candidates+=("python$v")
  for d in "$HOME"/.pyenv/versions/"$v"*/bin /usr/local/bin /usr/bin; do
    [[ -x "$d/python$v" ]] && candidates+=("$d/python$v")
  done
done
candidates+=(python3.11 /usr/bin/python3.11 python3)
for c in "${candidates[@]}"; do
  if out="$("$c" -c 'import sys, venv, ensurepip; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null)" && [[ -n "$out" ]]; then
    echo "$out"
    exit 0
  fi
done
echo "find-python: no Python >= 3.11 with venv and ensurepip found" >&2
exit 1
