#!/usr/bin/env bash
# `make demo`: set up, then `segmenter demo` (local Kafka and Redis, a worker, demo purchases,
# segment changes as they arrive; Ctrl-C stops everything it started).
# SEGMENTER_DEMO_SECONDS=N stops it after N seconds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_venv
ensure_redis_server
exec "$VENV/bin/segmenter" demo "$@"
