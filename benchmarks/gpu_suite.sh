#!/usr/bin/env bash
# The GPU suite: every check and measurement that needs a CUDA GPU, in one short script (under 8 minutes on an
# H200), for the first session that is lent one (the `device` tool). Writes one summary file.
#
#   bash benchmarks/gpu_suite.sh [--out DIR]      on the lent GPU, from the repository root
#   bash benchmarks/gpu_suite.sh --dry-run        here, on the CPU: the same steps with tiny sizes, to check the script
#   bash benchmarks/gpu_suite.sh --fetch-wheels   here: download what the GPU machine lacks (seml, sacred, pymongo,
#                                                 mlxtend and their needs) into .whl/ for the device tool to carry
#
# On the GPU machine (Python 3.12, torch, numpy, scipy, pandas, matplotlib, tqdm; no seml, sacred, pymongo,
# mlxtend): carry .whl (see /work/.library/device/README.md), then
#   run(command="bash benchmarks/gpu_suite.sh --out $OUT", carry=[".whl"], timeout_s=540)
# Steps: (1) the CUDA tests (tests/test_cuda.py: devices, GPU draws bit-identical to the CPU's, packed conv noise on
# the GPU, a packed GPU training against the CPU) and the generator's tests (the torch twin is the GPU's generator);
# (2) training throughput, batched_throughput.py --device cuda --members 1,8,32,128,512 for the MLP and LeNet-5;
# (3) a whole campaign on the GPU, the local runner against one process per config (campaign_walltime.py).
# Summary: $OUT/gpu_summary.txt (everything printed), with each step's wall time.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-out/gpu_suite}"
mode=gpu
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --dry-run) mode=dry; shift ;;
    --fetch-wheels) mode=fetch; shift ;;
    *) echo "gpu_suite: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ $mode == fetch ]]; then
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
  python3 -m pip download -q --no-deps "${plat[@]}" -d .whl seml==0.5.7 sacred==0.8.7 pymongo mlxtend \
    docopt-ng jsonpickle munch wrapt py-cpuinfo colorama gitpython gitdb smmap dnspython pyyaml scikit-learn \
    joblib threadpoolctl deepdiff orderly-set typer rich shellingham markdown-it-py mdurl pygments \
    typing-extensions click gitignore-parser importlib-resources omegaconf antlr4-python3-runtime
  ls .whl
  exit 0
fi

mkdir -p "$out"
summary="$out/gpu_summary.txt"
: > "$summary"
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
[[ -x .venv/bin/python && $mode == dry ]] && PY=.venv/bin/python

step() {  # step NAME TIMEOUT COMMAND...: run, time, and append everything to the summary
  local name="$1" limit="$2"; shift 2
  local started=$SECONDS
  echo "== $name" | tee -a "$summary"
  timeout "$limit" "$@" 2>&1 | tee -a "$summary"
  local rc=${PIPESTATUS[0]}
  echo "-- $name: exit $rc, $((SECONDS - started)) s" | tee -a "$summary"
}

{
  echo "walking-noise GPU suite, mode $mode, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
} 2>&1 | tee -a "$summary"

if [[ $mode == gpu ]]; then
  device=cuda; members_mlp=1,8,32,128,512; members_conv=1,8,32,128,512; configs=32; epochs=3; quick=()
else
  device=cpu; members_mlp=1,8; members_conv=1,2; configs=4; epochs=1; quick=(--quick)
fi
step "CUDA and generator tests" 180 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_gaussian.py \
  tests/test_streams.py -k "not final_accuracy_alone"
step "training throughput, MLP and LeNet-5 (batched_throughput.py)" 240 $PY benchmarks/batched_throughput.py \
  --device "$device" --members-mlp "$members_mlp" --members-conv "$members_conv" "${quick[@]}"
step "whole campaign, local runner vs one process per config (campaign_walltime.py)" 150 \
  $PY benchmarks/campaign_walltime.py --device "$device" --configs "$configs" --epochs "$epochs" --workers 1
echo "summary: $summary"
