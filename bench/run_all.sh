#!/usr/bin/env bash
# Run every engine benchmark and write bench/results/engine.md (see bench/README.md).
# Usage: bench/run_all.sh [--quick] [--no-profile] [--only NAME...] [--cpu N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=.venv/bin/python
[[ -x $python ]] || python=python3
exec "$python" -m bench "$@"
