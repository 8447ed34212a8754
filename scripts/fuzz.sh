#!/usr/bin/env bash
# Schema fuzzing: starts its own Huiyuan on MariaDB + Redis (a fresh database, migrated and seeded, dropped
# afterwards), then runs schemathesis over ALL operations of /docs/openapi.json with ALL checks (server
# errors, status codes, content types, response schemas and headers, negative data rejection, positive data
# acceptance, ignored auth, ...). Exits non-zero on any failure, or when MariaDB/Redis cannot be reached.
# Usage: scripts/fuzz.sh [MAX_EXAMPLES_PER_OPERATION (default 10)] [MAX_SECONDS (default 120)]
# The fuzz login is the seeded owner under a random username and password: the fuzzer cannot name it, so
# its login lockout cannot block it, and no route deletes or disables staff.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-10}"
max_time="${2:-120}"
SCHEMATHESIS_VERSION=4.32.5

if [ ! -x .venv-fuzz/bin/schemathesis ] || ! .venv-fuzz/bin/schemathesis --version | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv .venv-fuzz
  .venv-fuzz/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
[ -x .venv/bin/python ] || source scripts/venv.sh requirements.txt
py=.venv/bin/python

run="fuzz_$(date +%s)_$$"
db="$run"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
log=$(mktemp -t huiyuan-fuzz-XXXX.log)
user="fuzz-$("$py" -c 'import secrets; print(secrets.token_hex(6))')"
password=$("$py" -c 'import secrets; print(secrets.token_urlsafe(18))')

sql() { "$py" -c "import pymysql,sys; c=pymysql.connect(host='127.0.0.1', user='root', password='', connect_timeout=3); c.cursor().execute(sys.argv[1])" "$1"; }
sql "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" \
  || { echo "FAIL: MariaDB at 127.0.0.1:3306 cannot be reached" >&2; exit 1; }
"$py" -c 'import redis; redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()' \
  || { echo "FAIL: Redis at 127.0.0.1:6379 cannot be reached" >&2; sql "DROP DATABASE \`$db\`"; exit 1; }

server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -INT -- "-$server_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$server_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$server_pid" 2>/dev/null || true
  fi
  sql "DROP DATABASE IF EXISTS \`$db\`" || true
  "$py" -c "import redis; r=redis.Redis(host='127.0.0.1', port=6379); [r.delete(k) for k in r.scan_iter('hy$run:*')]" || true
}
trap cleanup EXIT

echo "== fuzz server on $base, database $db (log: $log)"
HUIYUAN_ENVIRONMENT=development \
HUIYUAN_DATABASE__URL="mysql://root:@127.0.0.1:3306/$db" \
HUIYUAN_REDIS__URL="redis://127.0.0.1:6379/0" \
HUIYUAN_REDIS__KEY_PREFIX="hy$run:" \
HUIYUAN_MERCHANT__ADMIN_USERNAME="$user" \
HUIYUAN_MERCHANT__ADMIN_PASSWORD="$password" \
  setsid "$py" -m server --port "$port" --workers 1 serve >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  curl -sf "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; echo "FAIL: the fuzz server exited" >&2; exit 1; }
  sleep 1
done
curl -sf "$base/healthz" >/dev/null || { cat "$log" >&2; echo "FAIL: the fuzz server did not start" >&2; exit 1; }

login() {
  curl -sf "$base/api/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"$user\",\"password\":\"$password\"}" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# Both tokens are issued before any fuzzing: the fuzzer may lock the login later (it sees the username in GET
# /api/staff), never a token already issued. Logout revokes the token it is called with: it runs last, alone.
token=$(login)
logout_token=$(login)
json() { "$py" -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1:]: v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$@"; }
# The member's and the till's operations are fuzzed with their own credentials too (a staff token only gets
# their 401/403): a mini-program member's token, and a POS API key of the demo store, both made before fuzzing.
mp_code=$("$py" -m wechat.emulator --server "$base" mp-code --openid fuzz-member --json | json code)
member_token=$(curl -sf "$base/api/mp/login" -H 'content-type: application/json' -d "{\"code\":\"$mp_code\"}" \
  | json access_token)
store_id=$(curl -sf "$base/api/stores" -H "Authorization: Bearer $token" | json items 0 id)
pos_key=$(curl -sf "$base/api/stores/$store_id/api-keys" -H "Authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"fuzz till"}' | json key)
fuzz() {
  local authorization=$1
  shift
  .venv-fuzz/bin/schemathesis --config-file scripts/schemathesis.toml run "$base/docs/openapi.json" \
    -H "Authorization: $authorization" --checks all \
    --max-examples "$examples" --seed 1 --workers 1 --suppress-health-check all --request-timeout 20 \
    --report junit --report-dir "$(dirname "$log")/$run-report" "$@"
}
status=0
# the member's and the till's passes first: the staff pass may revoke the till's key
fuzz "Bearer $member_token" --include-path-regex '^/api/mp/' --max-time 40 || status=1
fuzz "ApiKey $pos_key" --include-path-regex '^/api/pos/' --max-time 30 || status=1
fuzz "Bearer $token" --exclude-path /api/auth/logout --max-time "$max_time" || status=1
fuzz "Bearer $logout_token" --include-path /api/auth/logout --max-time 20 || status=1
if grep -q "Traceback" "$log"; then
  echo "FAIL: the fuzz server logged tracebacks:" >&2
  grep -B2 -A20 "Traceback" "$log" | head -80 >&2
  status=1
fi
[ "$status" = 0 ] && echo "FUZZ OK" || echo "FUZZ FAILED (server log: $log)" >&2
exit "$status"
