#!/usr/bin/env bash
# `make demo`: set up, then `segmenter demo` (local Kafka and Redis, a worker, the Redis view and
# the dashboard, demo purchases, segment changes as they arrive; each run is a fresh demo shop;
# Ctrl-C stops everything it started and deletes the run's topics and keys).
# SEGMENTER_DEMO_SECONDS=N stops it after N seconds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_venv
ensure_redis_server
exec "$VENV/bin/segmenter" demo "$@"
