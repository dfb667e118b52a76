#!/usr/bin/env bash
# Run molecule scenarios, up to MOLECULE_JOBS at a time (default 3), each with
# its output in .cache/molecule-logs/<scenario>.log, and print a table of their
# wall times. Scenarios never share containers or addresses (each has its own
# nodeops-mol-<scenario>-* names and 127.0.1.x range), so they can overlap.
# Scenarios are started longest first (by the last recorded time, else by
# molecule/durations.tsv, the times of a recent full run, so a clean clone
# also starts the slow one first). While the process MOLECULE_HOLD_PID runs
# (make test's static checks), one slot is left to it. A failed
# scenario's log is printed in full; the exit status is non-zero if any
# scenario failed.
#
#   scripts/molecule-parallel.sh lab node nginx_tls ...
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
JOBS="${MOLECULE_JOBS:-3}"
LOGS="$ROOT/.cache/molecule-logs"
TIMES="$ROOT/.cache/molecule-times.tsv"
KNOWN_TIMES="$ROOT/molecule/durations.tsv"
HOLD_PID="${MOLECULE_HOLD_PID:-}"
# Ansible reaches the scenarios' nodes through lab/bin/podman-runc (podman exec without podman's own cost).
export MOLECULE_PODMAN_EXECUTABLE="${MOLECULE_PODMAN_EXECUTABLE:-$ROOT/lab/bin/podman-runc}"
mkdir -p "$LOGS"
[[ $# -gt 0 ]] || { echo "usage: $0 SCENARIO..." >&2; exit 2; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "MOLECULE_JOBS must be a positive integer, got '$JOBS'" >&2; exit 2; }

# Longest first: this machine's last time of each scenario, else the committed one; unknown ones first of all.
ordered=$(for s in "$@"; do
  prev=$(awk -F'\t' -v s="$s" '$1 == s {t = $3} END {print t}' "$TIMES" 2>/dev/null)
  [[ -n "$prev" ]] || prev=$(awk -F'\t' -v s="$s" '$1 == s {t = $2} END {print (t == "" ? 999999 : t)}' "$KNOWN_TIMES" 2>/dev/null || echo 999999)
  printf '%s\t%s\n' "$prev" "$s"
done | sort -rn | cut -f2)

# Free slots now: JOBS, less one while the held process runs.
slots() {
  if [[ -n "$HOLD_PID" ]] && kill -0 "$HOLD_PID" 2>/dev/null && [[ $JOBS -gt 1 ]]; then
    echo $((JOBS - 1))
  else
    echo "$JOBS"
  fi
}

run_one() {
  local s="$1" start rc
  start=$(date +%s)
  "$ROOT/.venv/bin/molecule" test -s "$s" >"$LOGS/$s.log" 2>&1 </dev/null
  rc=$?
  printf '%s\t%s\t%s\n' "$s" "$rc" "$(( $(date +%s) - start ))" >"$LOGS/$s.result"
  echo "=== molecule:$s $([[ $rc -eq 0 ]] && echo passed || echo "FAILED (rc=$rc)") in $(( $(date +%s) - start ))s"
  return "$rc"
}

for s in $ordered; do
  rm -f "$LOGS/$s.result"
  while [[ $(jobs -rp | wc -l) -ge $(slots) ]]; do sleep 2; done
  echo "=== molecule:$s started"
  run_one "$s" &
done
wait

failed=0
: >"$TIMES.new"
echo "| scenario | result | seconds |"
echo "| --- | --- | ---: |"
for s in "$@"; do
  if [[ -f "$LOGS/$s.result" ]]; then
    IFS=$'\t' read -r name rc secs <"$LOGS/$s.result"
  else
    name="$s" rc=99 secs=0
  fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >>"$TIMES.new"
  echo "| $name | $([[ $rc -eq 0 ]] && echo passed || echo "FAILED (rc=$rc)") | $secs |"
  [[ $rc -eq 0 ]] || failed=1
done
# Keep the last time of scenarios not run this time, so the next ordering still knows them.
kept=$(awk -F'\t' 'NR == FNR {run[$1] = 1; next} !($1 in run)' "$TIMES.new" "$TIMES" 2>/dev/null || true)
[[ -z "$kept" ]] || printf '%s\n' "$kept" >>"$TIMES.new"
mv "$TIMES.new" "$TIMES"

for s in "$@"; do
  IFS=$'\t' read -r _ rc _ <"$LOGS/$s.result" 2>/dev/null || rc=99
  if [[ $rc -ne 0 ]]; then
    echo; echo "=================== molecule:$s log ($LOGS/$s.log)"
    cat "$LOGS/$s.log"
  fi
done
# CI keeps only the tail of the output: end with why each failed scenario failed.
for s in "$@"; do
  IFS=$'\t' read -r _ rc _ <"$LOGS/$s.result" 2>/dev/null || rc=99
  if [[ $rc -ne 0 ]]; then
    echo; echo "=================== molecule:$s failure summary"
    sed -E 's/\x1b\[[0-9;]*m//g; s/^ *│ ?//' "$LOGS/$s.log" \
      | grep -aE '^ *(FAILED|ERROR) |^ *E  +|fatal: \[|FAILED!|short test summary|[0-9]+ (passed|failed)' \
      | cut -c1-400 | tail -n 40
  fi
done
exit "$failed"
