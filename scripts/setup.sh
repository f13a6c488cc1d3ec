#!/usr/bin/env bash
# Create .venv and install nodegraph with its GUI and test extras. Idempotent.
#
#   NODEGRAPH_TORCH=skip   keep the torch already in .venv (e.g. a CUDA build you installed)
#   PYTHON=python3.12      interpreter to build the venv from
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if [ "${NODEGRAPH_TORCH:-}" = "skip" ]; then
  CONSTRAINTS=()
else
  # torch==2.13.0 is a CPU wheel here; pinning it first stops pip from pulling a CUDA build.
  "${PIP[@]}" install "torch==2.13.0"
  CONSTRAINTS=(-c requirements/constraints.txt)
fi
"${PIP[@]}" install "${CONSTRAINTS[@]}" -e ".[gui,test]"
# spandrel (upscaler architectures) lists torchvision as a dependency, but only two
# architectures use it, and PyPI's torchvision wheels break imports beside a CPU torch.
"${PIP[@]}" install "${CONSTRAINTS[@]}" --no-deps "spandrel>=0.4,<0.5"
# The editor's X11 platform needs system libraries pip cannot install: name any that are missing.
.venv/bin/python -c "from gui.platform_check import platform_problem as p; import os; m = p(dict(os.environ, QT_QPA_PLATFORM='xcb')); m and print('note: ' + m)" || true
