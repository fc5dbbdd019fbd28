#!/usr/bin/env bash
# The two commands of the README.
#   ./run.sh demo [ARGS]   main job on the embedded default (bundled images, no downloads)
#   ./run.sh test [ARGS]   lint, format check, the documentation site (warnings are errors)
#                          and the test suite
#   ./run.sh docs          serve the documentation site on http://127.0.0.1:8000
# Each sets itself up on a fresh machine (virtual environment in .venv, editable install)
# and skips the install when pyproject.toml and this script have not changed since.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${TS_DEFENSE_VENV:-.venv}
DOCS_VENV=${TS_DEFENSE_DOCS_VENV:-.venv-docs}
TORCH_PIN=${TS_DEFENSE_TORCH:-"torch==2.14.1 torchvision==0.29.1"}

setup() {
  local stamp="$VENV/.ts-defense-stamp" want
  want=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up $VENV (first run: about two minutes)..." >&2
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -qq $TORCH_PIN
    # basicsr 1.4.2 is an sdist that lists torch in setup_requires: an isolated build would
    # download a second torch (minutes); building against the torch just installed takes seconds.
    "$VENV/bin/python" -m pip install -qq setuptools wheel
    "$VENV/bin/python" -m pip install -qq --no-build-isolation "basicsr==1.4.2"
    "$VENV/bin/python" -m pip install -qq -e ".[all]"
    echo "$want" >"$stamp"
  fi
}

# The site's tools need a newer `requests` than torchattacks allows: their own venv.
setup_docs() {
  local stamp="$DOCS_VENV/.ts-defense-stamp" want
  want=$(sha256sum docs/requirements.txt | cut -c1-16)
  [ -x "$DOCS_VENV/bin/python" ] || python3 -m venv "$DOCS_VENV"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$DOCS_VENV/bin/python" -m pip install -qq -r docs/requirements.txt
    echo "$want" >"$stamp"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    setup
    exec "$VENV/bin/ts-defense" demo "$@"
    ;;
  test)
    setup
    "$VENV/bin/ruff" check ts_defense adapters tests benchmarks docs/rst_roles.py setup.py _ts_defense_torchvision.py
    "$VENV/bin/ruff" format --check ts_defense adapters tests benchmarks docs/rst_roles.py setup.py _ts_defense_torchvision.py
    setup_docs
    site=$(mktemp -d)
    NO_MKDOCS_2_WARNING=1 "$DOCS_VENV/bin/mkdocs" build --strict --quiet --site-dir "$site"
    rm -rf "$site"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  docs)
    setup_docs
    NO_MKDOCS_2_WARNING=1 exec "$DOCS_VENV/bin/mkdocs" serve
    ;;
  *)
    echo "usage: ./run.sh demo|test|docs [ARGS]" >&2
    exit 2
    ;;
esac
