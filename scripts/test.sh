#!/usr/bin/env bash
# `make test`: set up, start local Kafka and Redis, run ruff, mypy and pytest, stop what it
# started. Extra arguments go to pytest (e.g. scripts/test.sh -k worker).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_venv
ensure_redis_server
ensure_test_packages
export PATH="$VENV/bin:$PATH"
# `local run` starts the services (loudly failing, with their log tail, if one cannot start),
# exports SEGMENTER_KAFKA_BOOTSTRAP / SEGMENTER_REDIS_URL for the checks, and afterwards stops
# the services it started, also on failure or Ctrl-C.
exec segmenter local run -- bash "$ROOT/scripts/checks.sh" "$@"
