#!/usr/bin/env bash
# Soak the crash tests (not part of CI): each kill -9 test, for both guarantees, N times (20 by
# default), against the running local services (`make up` first). Prints the pass count per test
# and keeps the logs of failed runs under .state/soak/.
#   scripts/soak.sh [N] [extra pytest args]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-20}"; shift || true
tests=(
  "tests/streams/test_worker.py::test_kill_9_of_one_of_two_workers_loses_no_change[exactly_once]"
  "tests/streams/test_worker.py::test_kill_9_of_one_of_two_workers_loses_no_change[at_least_once]"
  "tests/streams/test_worker_faults.py::test_kill_9_and_restart_of_a_single_worker_applies_every_event_once[exactly_once]"
  "tests/streams/test_worker_faults.py::test_kill_9_and_restart_of_a_single_worker_applies_every_event_once[at_least_once]"
)
out=.state/soak; mkdir -p "$out"
# the workers the tests start import `streams` from the venv's install, not from the test's
# directory: a .venv borrowed from another checkout would soak that checkout's code
here="$(pwd -P)"
imported="$(cd / && "$here/.venv/bin/python" -c \
  'import pathlib, streams; print(pathlib.Path(streams.__file__).resolve().parents[1])')"
if [ "$imported" != "$here" ]; then
  echo "soak: .venv/bin/python imports streams from $imported, not from $here;" \
       "create this checkout's own venv (make up) first" >&2
  exit 2
fi
# the workers run what `make test` runs: the compiled engine when it can be built
.venv/bin/python scripts/build_native.py
.venv/bin/python -c 'import streams.engine; from model.native import native_status; print("engine:", native_status())'
declare -A passed
for t in "${tests[@]}"; do passed[$t]=0; done
for i in $(seq 1 "$runs"); do
  for t in "${tests[@]}"; do
    name="$(echo "${t##*::}" | tr -c 'A-Za-z0-9_\n' '_')"
    if .venv/bin/pytest -q -p no:cacheprovider --basetemp="$out/run" "$t" "$@" >"$out/last.log" 2>&1; then
      passed[$t]=$((passed[$t] + 1)); status=pass
    else
      status=FAIL; cp "$out/last.log" "$out/$name.$i.log"
      cp -r "$out/run" "$out/$name.$i.tmp" 2>/dev/null || true
    fi
    printf 'run %d/%d %s %s\n' "$i" "$runs" "$status" "${t##*::}"
  done
done
echo "== pass counts over $runs runs"
for t in "${tests[@]}"; do printf '%3d/%d  %s\n' "${passed[$t]}" "$runs" "${t##*::}"; done
