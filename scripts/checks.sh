#!/usr/bin/env bash
# ruff, mypy, lint-imports (the package layers in pyproject.toml), then pytest (last, so its
# summary line closes the output). Runs all four and
# exits non-zero if any failed. Expects the services to be up (see scripts/test.sh).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=()
echo "==> ruff check ." >&2
ruff check . || failed+=(ruff)
echo "==> mypy ." >&2
mypy . || failed+=(mypy)
echo "==> lint-imports (package layers)" >&2
lint-imports --no-cache || failed+=(lint-imports)
if ((${#failed[@]})); then
  echo "==> FAILED: ${failed[*]} (pytest runs anyway)" >&2
fi
echo "==> pytest" >&2
pytest "$@"
status=$?
if ((${#failed[@]})) && ((status == 0)); then
  status=1
fi
exit "$status"
