#!/usr/bin/env bash
# Set up .venv/ if needed, then run the main job on the embedded default dataset (no internet, no MongoDB).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
exec .venv/bin/walking-noise demo "$@"
