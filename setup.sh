#!/usr/bin/env bash
# One command sets everything up: a virtual environment in .venv with the course, its
# dependencies and the dev tools (nbdev, pytest, Jupyter), plus nbdev's git hooks.
# TORCH_SPEC picks the torch build (default: torch==2.13.0, a CPU build where one is on disk;
# on a CUDA machine set TORCH_SPEC=torch to take pip's default build).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -m ipykernel install --user --name ft-course --display-name "ft-course" >/dev/null
if [ -d .git ]; then .venv/bin/nbdev-install-hooks >/dev/null 2>&1 || true; fi
echo "ft-course is set up: run 'bash test.sh', or open the notebooks with '.venv/bin/jupyter lab nbs/'"
