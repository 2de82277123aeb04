# Shared by scripts/*.sh: the virtual environment and the Redis package. Source, do not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The machine's Python 3.11 (or newer): $SEGMENTER_PYTHON, python3.11, or python3.
find_python() {
  local candidate
  for candidate in "${SEGMENTER_PYTHON:-}" python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  die "Python 3.11 or newer not found (set SEGMENTER_PYTHON to its path)"
}

# .venv with the project installed (editable, with the dev, rocksdb, models and outcome
# extras). Reinstalls when pyproject.toml changed since the last install.
ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    local python
    python="$(find_python)"
    log "creating .venv with $python"
    "$python" -m venv "$VENV"
  fi
  local stamp="$VENV/.segmenter-installed" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] || ! "$VENV/bin/python" -c 'import segmenter' 2>/dev/null; then
    log "installing segmenter with its dev, rocksdb, models and outcome extras into .venv (pip)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev,rocksdb,models,outcome]"
    echo "$want" >"$stamp"
  fi
  # the engine's hot modules compiled with mypyc (model/native.py); a no-op when up to date,
  # skipped (plain Python) without a C compiler
  "$VENV/bin/python" "$ROOT/scripts/build_native.py"
}

# Debian's redis-server, unless an external Redis is configured.
ensure_redis_server() {
  [[ -z "${SEGMENTER_REDIS_URL:-}" ]] || return 0
  command -v redis-server >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's redis-server package (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    command -v redis-server >/dev/null 2>&1 || die "apt-get installed redis-server but it is not on PATH"
  else
    die "redis-server is missing: install Debian's redis-server package (sudo apt-get install redis-server), or set SEGMENTER_REDIS_URL"
  fi
}

# Debian packages the test suite drives for real: prometheus (the server and promtool, for the
# scrape test and the config checks), chromium and chromium-driver (the dashboard's browser
# test). One apt-get update and install for whatever is missing.
ensure_test_packages() {
  local missing=() pkg cmd
  for pair in prometheus:prometheus prometheus:promtool chromium:chromium chromium-driver:chromedriver; do
    pkg="${pair%%:*}"; cmd="${pair##*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages for the tests: ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # the prometheus package may start its own server on :9090 under systemd; tests use other ports
  else
    die "missing Debian packages for the tests: ${missing[*]} (sudo apt-get install ${missing[*]})"
  fi
}
