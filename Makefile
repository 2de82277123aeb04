# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv (machine's python3.11), install the project, and start local Kafka and Redis.

.DEFAULT_GOAL := help
.PHONY: help demo test native up down status clean

help:
	@echo "make demo    run the main job: local Kafka + Redis, a worker, the Redis view, the dashboard, demo events, live segment changes"
	@echo "make test    run the whole test suite: same set-up, then ruff, mypy and pytest"
	@echo "make native  compile the engine's hot modules with mypyc (demo and test do it too)"
	@echo "make up | down | status    manage the local Kafka and Redis (segmenter local ...)"
	@echo "make clean   stop the local services and delete .state/"

demo:
	@bash scripts/demo.sh

test:
	@bash scripts/test.sh

native:
	@bash -c 'source scripts/lib.sh && ensure_venv'

up:
	@bash -c 'source scripts/lib.sh && ensure_venv && ensure_redis_server && exec .venv/bin/segmenter local up'

down status:
	@.venv/bin/segmenter local $@

clean:
	@if [ -x .venv/bin/segmenter ]; then .venv/bin/segmenter local down; fi
	rm -rf .state
