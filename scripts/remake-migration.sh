#!/usr/bin/env bash
# Regenerate the newest, not yet released migration from the current models (only while it is unreleased).
# Usage: scripts/remake-migration.sh 0003_loyalty_payments
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?migration file stem, e.g. 0003_loyalty_payments}"
rm -f "migrations/${name}.py"
.venv/bin/tortoise -c server.tortoise_cli.TORTOISE_ORM makemigrations --name "${name#*_}"
