#!/usr/bin/env bash
# One entry point for a fresh machine: sets everything up (idempotent, fast when already done),
# then runs Engram (`bash dev.sh run [ARGS]`) or its test suite (`bash dev.sh test [PYTEST ARGS]`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${ENGRAM_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
command="${1:-run}"
[ $# -gt 0 ] && shift

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;33m!!! %s\033[0m\n' "$*" >&2; }

check_python() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Engram needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)." >&2
    exit 1
  fi
}

setup() {
  check_python
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.engram-installed" want build=app/runtimes/llama_build.py
  want="$(cat pyproject.toml dev.sh "$build" | sha256sum | cut -c1-16)"
  # llama.cpp is compiled for this CPU's instruction set (never -march=native: its AMX path
  # crashes), tested in a child process, and rebuilt when the recorded CPU features differ.
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VENV/bin/python" "$build" check; then
    say "installing Engram and its models (first time: several minutes; llama.cpp compiles)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip wheel
    "$VENV/bin/python" "$build" install
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    "$VENV/bin/python" "$build" prove
    echo "$want" > "$stamp"
  fi
}

CHROMIUM=/usr/bin/chromium

# The browser tests drive Debian's chromium (never `playwright install`). Install it when missing;
# when that is impossible, say so loudly: those tests then skip, with the reason, and the rest run.
ensure_chromium() {
  [ -x "$CHROMIUM" ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      warn "chromium is missing and installing it needs root (apt-get install -y chromium):"
      warn "the browser tests (tests/test_ui.py) will be SKIPPED"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    warn "chromium is missing and there is no apt-get here: the browser tests will be SKIPPED"
    return 0
  fi
  say "installing chromium for the browser tests (apt-get, about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  ${sudo[@]+"${sudo[@]}"} apt-get install -y -q chromium >/dev/null 2>&1 \
    || { ${sudo[@]+"${sudo[@]}"} apt-get update -q >/dev/null 2>&1 \
         && ${sudo[@]+"${sudo[@]}"} apt-get install -y -q chromium >/dev/null 2>&1; } || true
  if [ ! -x "$CHROMIUM" ]; then
    warn "could not install chromium: the browser tests (tests/test_ui.py) will be SKIPPED"
  fi
}

case "$command" in
  run)
    setup
    exec "$VENV/bin/engram" "$@"
    ;;
  test)
    setup
    ensure_chromium
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: bash dev.sh [run [ENGRAM ARGS] | test [PYTEST ARGS] | setup]" >&2
    exit 2
    ;;
esac
