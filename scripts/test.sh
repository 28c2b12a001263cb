#!/usr/bin/env bash
# Set up .venv/ if needed, then run the whole test suite (about ten minutes at most on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
