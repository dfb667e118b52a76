#!/usr/bin/env bash
# Run every benchmark in turn and refresh benchmarks/results/*.json|md (the "Proof" tables).
#
#   scripts/bench.sh                 # all of them: hours on 2 shared cores (scale provisions 21 nodes)
#   scripts/bench.sh site_noop scale # only these (names: health_gate mongo_backup rolling_update
#                                    #   site_noop connection_settings scale podman_exec)
#
# Each benchmark brings up what it needs and removes it afterwards, also on failure:
# rolling_update runs on the molecule scenario `rolling` (converge before, destroy after);
# site_noop, connection_settings, scale and podman_exec start their own nodeops-bench-* containers
# (addresses 127.0.2.1-60). Environment knobs: BENCH_RUNS (repeats of site_noop and
# connection_settings, default 3), BENCH_ROLLING_RUNS (rollout pairs, default 1),
# BENCH_MONGO_SIZES (MB, default 100,1000: the published table), BENCH_SCALE_CELLS
# (space-separated N:serial cells, default the published table's six), BENCH_LOCK (a lock file: every
# step that starts containers runs under `flock $BENCH_LOCK`, for machines shared with
# other molecule runs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="$ROOT/lab/containers.conf" ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections" PATH="$ROOT/.venv/bin:$ROOT/.cache/node/bin:$PATH"
PY="$ROOT/.venv/bin/python"
RUNS="${BENCH_RUNS:-3}"
ALL=(health_gate mongo_backup rolling_update site_noop connection_settings scale podman_exec)
SELECTED=("${@:-${ALL[@]}}")

heavy() {  # a step that starts podman nodes
  if [ -n "${BENCH_LOCK:-}" ]; then flock "$BENCH_LOCK" "$@"; else "$@"; fi
}

rolling_destroy() { heavy molecule destroy -s rolling >/dev/null 2>&1 || true; }
# site_noop keeps its 3 nodes for connection_settings (which removes them); this removes them in any case.
site_down() { "$PY" benchmarks/site_noop.py --down >/dev/null 2>&1 || true; }
trap site_down EXIT

for name in "${SELECTED[@]}"; do
  echo "=== benchmark: $name ($(date -u +%H:%M:%SZ))"
  case "$name" in
    health_gate) "$PY" benchmarks/health_gate.py ;;
    mongo_backup) "$PY" benchmarks/mongo_backup.py --sizes "${BENCH_MONGO_SIZES:-100,1000}" ;;
    rolling_update)
      trap 'rolling_destroy; site_down' EXIT
      heavy molecule converge -s rolling
      heavy "$PY" benchmarks/rolling_update.py --runs "${BENCH_ROLLING_RUNS:-1}"
      rolling_destroy
      trap site_down EXIT ;;
    site_noop) heavy "$PY" benchmarks/site_noop.py --runs "$RUNS" --keep ;;
    connection_settings)
      # Reuses site_noop's converged nodes when it ran just before (and removes them).
      if [[ " ${SELECTED[*]} " == *" site_noop "* ]]; then skip=(--skip-converge); else skip=(); fi
      heavy "$PY" benchmarks/connection_settings.py --runs "$RUNS" "${skip[@]}" ;;
    scale)
      # The published table's cells (node count:serial ramp); 20 nodes at [1, 1] alone would take longer than all of these.
      cells=()
      for cell in ${BENCH_SCALE_CELLS:-5:1,100% 10:1,100% 20:1,100% 5:1,1 10:1,25% 20:1,25%}; do cells+=(--cell "$cell"); done
      heavy "$PY" benchmarks/scale.py "${cells[@]}" ;;
    podman_exec) heavy "$PY" benchmarks/podman_exec.py --rounds "$RUNS" ;;
    *) echo "unknown benchmark: $name (one of: ${ALL[*]})" >&2; exit 2 ;;
  esac
done
echo "=== results: benchmarks/results/*.md"
