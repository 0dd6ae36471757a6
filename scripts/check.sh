#!/usr/bin/env bash
# Lint, type-check and test: the README's test command runs this after scripts/setup.sh dev.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${VENV:-.venv}/bin/python
"$py" -m ruff check .
"$py" -m ruff format --check .
"$py" -m mypy
DERA_NUM_THREADS=${DERA_NUM_THREADS:-1} "$py" -m pytest "$@"
