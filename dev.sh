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
  local stamp="$VENV/.engram-installed" want
  want="$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Engram and its models (first time: several minutes; llama.cpp compiles)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip wheel
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    echo "$want" > "$stamp"
  fi
}

case "$command" in
  run)
    setup
    exec "$VENV/bin/engram" "$@"
    ;;
  test)
    setup
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
