#!/usr/bin/env bash
# The README's second command: set up, then run every check and test (lint, types, the whole suite).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
echo "== ruff"
"$UV" run --frozen ruff check .
"$UV" run --frozen ruff format --check .
echo "== mypy"
"$UV" run --frozen mypy
echo "== pytest"
"$UV" run --frozen pytest "$@"
