#!/usr/bin/env bash
# Run the whole test suite against real services; does its own set-up first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy src
set +e
PLAINSAIL_FUZZ=${PLAINSAIL_FUZZ:-full} .venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" = 5 ]; then echo "no test ran: that is a failure" >&2; exit 1; fi
exit "$code"
