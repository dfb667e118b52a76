#!/usr/bin/env bash
# Run one named stage of `make test` and record its wall time; with --report
# print every recorded stage as a table (also saved as .cache/stage-times.md),
# and with --since EPOCH the wall time since then (stages may overlap, so it
# can be less than their sum).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TIMES="$ROOT/.cache/stage-times.tsv"
mkdir -p "$ROOT/.cache"

if [[ "${1:-}" == "--report" ]]; then
  since="${3:-}"
  {
    echo "| stage | result | seconds |"
    echo "| --- | --- | ---: |"
    awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3; t += $3} END {printf "| sum of stages | | %d |\n", t}' "$TIMES"
    [[ "${2:-}" != "--since" || -z "$since" ]] || echo "| **wall time** | | $(( $(date +%s) - since )) |"
  } | tee "$ROOT/.cache/stage-times.md"
  exit 0
fi

name="$1"; shift
echo "=== stage: $name"
start=$(date +%s)
"$@"
rc=$?
end=$(date +%s)
result=passed; [[ $rc -eq 0 ]] || result="FAILED (rc=$rc)"
printf '%s\t%s\t%s\n' "$name" "$result" "$((end - start))" >> "$TIMES"
echo "=== stage: $name $result in $((end - start))s"
exit $rc
