#!/usr/bin/env bash
# The fidelity study of results/mnist/gap.md: train every run of seml_configs/mnist_gap.yaml on the full MNIST,
# MLP first (10, 30, 100 epochs), then LeNet-5 (3, 10, 30 and the authors' 50 epochs).
#
#   bash scripts/mnist_gap.sh [--data-dir DIR] [--store DIR] [--out DIR] [--workers N] [--threads N]
#
# Defaults: --data-dir ../shared/data, --store runs/mnist_gap, --out results/mnist/gap, --workers 2, --threads the
# CPU count / workers (--threads 1 beside other work on the machine). Resumable: a second call trains only what is
# missing (interrupted searches pick up their stored runs); on a new machine,
# `walking-noise import results/mnist/gap/runs.csv --store runs/mnist_gap` first. Many hours on a 2-core CPU (the
# measured times are in results/mnist/gap.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="../shared/data"
store="runs/mnist_gap"
out="results/mnist/gap"
workers=2
threads=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) data_dir="$2"; shift 2 ;;
    --store) store="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --threads) threads=(--threads "$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bash "$root/scripts/setup_venv.sh"
cd "$root"
study=seml_configs/mnist_gap.yaml
# One call per (model, epochs): the searches of one call advance in lockstep rounds, and a round waits for its
# slowest unit, so runs of very different lengths are not mixed in one call.
for block in "mlp 10" "mlp 30" "mlp 100" "lenet5 3" "lenet5 10" "lenet5 30" "lenet5 50"; do
  read -r model epochs <<< "$block"
  started=$(date +%s)
  # LeNet-5 one run per unit: a packed unit is stored when all its members finish, hours for 50-epoch runs, and
  # packing gains little on these global-noise cells (benchmarks/batched_throughput.py)
  members=()
  if [[ "$model" == lenet5 ]]; then members=(--members 1); fi
  .venv/bin/walking-noise run "$study" --set "data_dir=$data_dir" --store "$store" --workers "$workers" \
    "${threads[@]}" "${members[@]}" --filter "model=$model" --filter "training.epochs=$epochs"
  echo "$model, $epochs epochs: $(($(date +%s) - started)) s (this call)"
  # the per-run export grows with every block: commit it, and a later session resumes from it (walking-noise import).
  # Every run of the store, not only those the current searches choose: a run an earlier design chose is kept.
  .venv/bin/walking-noise export --store "$store" --out "$out/runs.csv"
done
.venv/bin/python analysis/mnist_gap.py --store "$store" --study "$study" --set "data_dir=$data_dir" --out "$out"
