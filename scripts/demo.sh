#!/usr/bin/env bash
# Run plainsail's demo on this machine; does its own set-up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/plainsail demo "$@"
