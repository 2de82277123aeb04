#!/usr/bin/env bash
# ruff, mypy, lint-imports (the package layers in pyproject.toml), the engine's tests as plain
# Python, then the whole pytest suite (last, so its summary line closes the output). Runs all
# of them and exits non-zero if any failed. Expects the services to be up (see scripts/test.sh).
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
# The engine's tests once more as plain Python: the rest of the suite runs the compiled build
# of the engine when there is one (model/native.py), and both must give the same answers.
echo "==> pytest: the engine as plain Python (SEGMENTER_NATIVE=0)" >&2
SEGMENTER_NATIVE=0 pytest -q tests/rules tests/model tests/streams/test_engine.py \
  tests/streams/test_engine_batch.py tests/streams/test_engine_drift.py \
  tests/streams/test_engine_properties.py tests/streams/test_annotated.py || failed+=(pytest-plain)
echo "==> pytest" >&2
pytest "$@"
status=$?
if ((${#failed[@]})) && ((status == 0)); then
  status=1
fi
exit "$status"
