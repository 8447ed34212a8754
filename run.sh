#!/usr/bin/env bash
# Install into ./.venv (first time) and start Huiyuan on the embedded default:
# SQLite under ./data, in-process Redis, built-in WeChat emulator, seeded demo merchant.
# Extra arguments go to `python -m server` (e.g. ./run.sh --port 9000, ./run.sh check-ledgers).
source "$(dirname "$0")/scripts/venv.sh" requirements.txt
exec .venv/bin/python -m server "$@"
