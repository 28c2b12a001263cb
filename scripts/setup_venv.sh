#!/usr/bin/env bash
# Create or refresh .venv/ at the repository root. Idempotent: does nothing when the stamp matches.
# Torch comes pinned first so that pip never resolves an unpinned (multi-GB) build; torchaudio goes beside it
# with --no-deps because its wheel pins an exact torch build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
TORCHAUDIO_PIN=torchaudio==2.11.0
stamp_src="$(cat pyproject.toml scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)"
if [[ -x .venv/bin/walking-noise && -f .venv/.stamp && "$(cat .venv/.stamp)" == "$stamp_src" ]]; then
  exit 0
fi
echo "setting up .venv (first run takes a few minutes: torch is large)" >&2
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" "${TORCH_PINS[@]}"
"${pip[@]}" --no-deps "$TORCHAUDIO_PIN"
"${pip[@]}" -e ".[test]"
echo "$stamp_src" > .venv/.stamp
