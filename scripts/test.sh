#!/usr/bin/env bash
# Set up .venv/ if needed, then run the whole test suite (times in the README); extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the quick loop.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
