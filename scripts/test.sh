#!/usr/bin/env bash
# make test: the whole suite, in three steps:
#   1. setup;
#   2. integration, alone: its tests measure real servers under load and time
#      their reactions, so they get the machine to themselves;
#   3. molecule (MOLECULE_JOBS scenarios at a time) beside the static checks
#      (yamllint, ansible-lint, changelog-lint, build, sanity, unit, app-test,
#      one after the other; output in .cache/test-logs/checks.log, each stage's
#      result line echoed here), which are CPU work that nothing times; molecule
#      leaves them one of its slots while they run.
# Every stage runs even after another failed. Prints the time of each stage and
# the wall time; the exit status is non-zero if any stage failed.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STAGES="$ROOT/scripts/stage.sh"
LOGS="$ROOT/.cache/test-logs"
CHECKS=(yamllint ansible-lint changelog-lint build sanity unit app-test)
MAKE_CMD=(make --no-print-directory -C "$ROOT")

mkdir -p "$LOGS"
rm -f "$ROOT/.cache/stage-times.tsv"
start=$(date +%s)

"$STAGES" setup "${MAKE_CMD[@]}" deps || { "$STAGES" --report --since "$start"; exit 1; }

"$STAGES" integration "${MAKE_CMD[@]}" integration
integration_rc=$?

run_checks() {
  local stage rc=0
  for stage in "${CHECKS[@]}"; do
    "$STAGES" "$stage" "${MAKE_CMD[@]}" "$stage" || rc=1
  done
  return $rc
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
[[ $integration_rc -eq 0 && $checks_rc -eq 0 && $molecule_rc -eq 0 ]]
