#!/usr/bin/env bash
# The main job: set up .venv/ if needed, run the smoke study on the embedded dataset with the local runner (no
# cluster, no MongoDB, no download), then fit and report: Table I's cell for it and Fig. 1 as PNG.
# Resumable: a second call finds the runs in the store and only re-makes the report.
# Extra arguments go to `walking-noise run` (e.g. --workers 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
store="${WALKING_NOISE_STORE:-runs/smoke}"
.venv/bin/walking-noise run seml_configs/smoke.yaml --store "$store" "$@"
.venv/bin/walking-noise report --store "$store" --study seml_configs/smoke.yaml --out "$store/report"
echo
cat "$store/report/table1_global_mu.md"
echo
echo "figure: $store/report/fig1_fit.png   (all outputs: $store/report/index.md)"
