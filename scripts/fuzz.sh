#!/usr/bin/env bash
# Schema-driven fuzzing of a running Huiyuan (default http://127.0.0.1:8000) with schemathesis:
# no operation may answer 5xx, and every answer must match the OpenAPI. Installs schemathesis into
# ./.venv-fuzz (kept apart from the app's dependencies). Usage: scripts/fuzz.sh [BASE_URL] [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-http://127.0.0.1:8000}"
examples="${2:-100}"
[ -x .venv-fuzz/bin/schemathesis ] || { python3 -m venv .venv-fuzz && .venv-fuzz/bin/pip install -q schemathesis; }
token=$(curl -sf "$base/api/auth/login" -d '{"username":"admin","password":"huiyuan-demo"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
exec .venv-fuzz/bin/schemathesis run "$base/docs/openapi.json" -H "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance --max-examples "$examples" --exclude-path-regex '/logout'
