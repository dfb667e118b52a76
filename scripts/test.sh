#!/usr/bin/env bash
# make test: the whole suite. Setup first; then two streams at once, because
# the checks leave most of a core idle and molecule waits on its nodes:
#   - checks: yamllint, ansible-lint, changelog-lint, build, sanity, unit,
#     app-test, integration, one after the other (output in .cache/test-logs/checks.log,
#     each stage's result line echoed here);
#   - molecule: the scenarios, MOLECULE_JOBS at a time, one slot fewer while
#     the checks run.
# Prints the time of each stage and the wall time; the exit status is non-zero
# if any stage failed.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STAGES="$ROOT/scripts/stage.sh"
LOGS="$ROOT/.cache/test-logs"
CHECKS=(yamllint ansible-lint changelog-lint build sanity unit app-test integration)
MAKE_CMD=(make --no-print-directory -C "$ROOT")

mkdir -p "$LOGS"
rm -f "$ROOT/.cache/stage-times.tsv"
start=$(date +%s)

"$STAGES" setup "${MAKE_CMD[@]}" deps || { "$STAGES" --report --since "$start"; exit 1; }

run_checks() {
  local stage
  for stage in "${CHECKS[@]}"; do
    "$STAGES" "$stage" "${MAKE_CMD[@]}" "$stage" || return 1
  done
}
# The stage result lines also go to the console as they happen.
run_checks > >(tee "$LOGS/checks.log" | grep --line-buffered '^=== stage: .* in [0-9]*s$') 2>&1 &
checks_pid=$!

MOLECULE_HOLD_PID=$checks_pid "$STAGES" molecule "${MAKE_CMD[@]}" molecule
molecule_rc=$?
wait "$checks_pid"
checks_rc=$?
sleep 1  # let the console filter print the last result line

if [[ $checks_rc -ne 0 ]]; then
  echo
  echo "=================== checks failed: the end of $LOGS/checks.log"
  tail -n 150 "$LOGS/checks.log"
fi
"$STAGES" --report --since "$start"
[[ $checks_rc -eq 0 && $molecule_rc -eq 0 ]]
