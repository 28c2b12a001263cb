#!/usr/bin/env bash
# Regenerate results/mnist/ from scratch: train every run of seml_configs/mnist_reproduction.yaml on the full
# MNIST with the local runner (batched engine, train once / evaluate many, adaptive noise grids), then write the
# report of exactly this study's runs (Table I, Table I beside the paper, Fig. 1-7, Table II, the per-run export
# runs.csv) into results/mnist/report/.
#
#   bash scripts/reproduce_mnist.sh [--data-dir DIR] [--store DIR] [--out DIR] [--workers N] [walking-noise run args]
#
# Defaults: --data-dir ../shared/data (holding MNIST/raw/*-ubyte[.gz]), --store runs/mnist_reproduction,
# --out results/mnist/report, --workers 2. Resumable: a second call trains only what is missing (an interrupted
# adaptive search picks up its stored runs) and re-makes the report. Extra arguments go to `walking-noise run`
# (e.g. --filter model=mlp). About 1.5-2 h on a 2-core CPU; see results/mnist/README.md for the measured times.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="../shared/data"
store="runs/mnist_reproduction"
out="results/mnist/report"
workers=2
extra=()
selection=()  # --filter/--set: the same for the run and for the report's selection of the study's runs
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) data_dir="$2"; shift 2 ;;
    --store) store="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --filter|--set) selection+=("$1" "$2"); shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
bash "$root/scripts/setup_venv.sh"
cd "$root"
if ! ls "$data_dir"/MNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "error: no MNIST in $data_dir/MNIST/raw (need train/t10k images and labels, IDX, optionally .gz);" \
       "pass --data-dir DIR" >&2
  exit 2
fi
mkdir -p "$out"
started=$(date +%s)
.venv/bin/walking-noise run seml_configs/mnist_reproduction.yaml --set "data_dir=$data_dir" --store "$store" \
  --workers "$workers" "${selection[@]}" "${extra[@]}" 2>&1 | tee "$out/run.log"
trained=$(date +%s)
.venv/bin/walking-noise report --store "$store" --study seml_configs/mnist_reproduction.yaml "${selection[@]}" \
  --out "$out" | tee -a "$out/run.log"
echo "training $((trained - started)) s, report $(($(date +%s) - trained)) s (this call)" | tee -a "$out/run.log"
echo "comparison with the paper: $out/table1_vs_paper.md   (all outputs: $out/index.md)"
