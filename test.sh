#!/usr/bin/env bash
# Install into ./.venv (first time) and run the whole test suite.
# Backend: embedded default (SQLite + in-process Redis) unless HUIYUAN_DATABASE__URL / HUIYUAN_REDIS__URL
# name MariaDB/MySQL and Redis (see README). Extra arguments go to pytest.
source "$(dirname "$0")/scripts/venv.sh" requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
