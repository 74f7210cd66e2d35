#!/usr/bin/env bash
# Run the five seed experiments one after another and compare them: a thin wrapper over
# `dialsum suite configs/suites/main5.yaml`, run from the repository root.
#   scripts/run_main_5_experiments.sh                 # full training
#   scripts/run_main_5_experiments.sh -1              # quick mode: one epoch each (= --one-epoch)
#   scripts/run_main_5_experiments.sh -1 --init tiny --out runs/suites/demo
#   scripts/run_main_5_experiments.sh --resume        # continue after a crash, a kill or Ctrl-C
# Every other argument goes to `dialsum suite` unchanged (see `dialsum suite --help`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -x "$root/.venv/bin/dialsum" ]]; then
  dialsum="$root/.venv/bin/dialsum"
else
  dialsum="dialsum"
fi

args=()
for arg in "$@"; do
  if [[ "$arg" == "-1" ]]; then
    args+=("--one-epoch")
  else
    args+=("$arg")
  fi
done

exec "$dialsum" suite configs/suites/main5.yaml ${args[@]+"${args[@]}"}
