#!/usr/bin/env bash
# Shared set-up for the README's commands: find or install uv, then create .venv from uv.lock.
# Needs only python3 (3.10+), git and access to the package registry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PYTHON_DOWNLOADS=never   # use the machine's Python; never fetch a toolchain
if command -v uv >/dev/null 2>&1; then
  UV=$(command -v uv)
elif [ -x .tools/bin/uv ]; then
  UV=$PWD/.tools/bin/uv
else
  echo "== installing uv into .tools/ (one time)"
  python3 -m venv .tools
  .tools/bin/python -m pip install --quiet --disable-pip-version-check uv
  UV=$PWD/.tools/bin/uv
fi
export UV
echo "== creating .venv from uv.lock"
"$UV" sync --frozen --quiet
