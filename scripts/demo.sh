#!/usr/bin/env bash
# The README's first command: set up, then run the render pipeline on a real local Airflow and the emulator.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec "$UV" run --frozen python -m tools.render_demo "$@"
